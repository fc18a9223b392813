"""An open WebSocket ends with its session (SPEC section 5: a session that ended is no session).

A sign-out, a back-channel logout or the session's expiry refuses the session's next request;
a WebSocket opened with it is looked up again while it stays open and closed with code 1008
once the session is gone. In process: the app with the memory store, the fault provider on
127.0.0.2 (discovery only), the test upstream's ``/ws`` echo, and a session made directly.
"""

from __future__ import annotations

import asyncio
import logging
import time

import jwt
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from authproxy import proxy
from authproxy.app import SERVICES, Services
from authproxy.config import parse_config
from tests.support.fault_provider import CLIENT_ID, CLIENT_SECRET, FaultProviderServer
from tests.support.in_process import started_app
from tests.support.records import alice_signed_in_now
from tests.support.upstream import Upstream, upstream_fixture  # noqa: F401

SECRET = "w" * 32
COOKIE = "authproxy_session"


async def _client(
    fault_provider: FaultProviderServer, aiohttp_client: AiohttpClient, upstream: Upstream
) -> TestClient[web.Request, web.Application]:
    config = parse_config(
        f"""
server: {{public_url: "http://127.0.0.1:4180"}}
provider: {{issuer: "{fault_provider.issuer}", client_id: {CLIENT_ID}, client_secret: {CLIENT_SECRET}}}
session: {{secrets: ["{SECRET}"], cookie: {{secure: false}}}}
routes:
  - {{name: app, upstream: "{upstream.url}"}}
  - name: api
    match: {{path_prefix: /api}}
    upstream: "{upstream.url}"
    bearer_tokens: true
    strip_path_prefix: true
""",
        {},
    )
    return await started_app(config, aiohttp_client)


async def _signed_in(services: Services) -> str:
    _, cookie = await services.sessions.create(alice_signed_in_now(time.time()))
    return cookie


@pytest.fixture(autouse=True)
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy, "WS_SESSION_CHECK_INTERVAL", 0.2)


async def test_a_websocket_closes_once_its_session_has_ended(
    fault_provider: FaultProviderServer,
    aiohttp_client: AiohttpClient,
    upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="authproxy")
    client = await _client(fault_provider, aiohttp_client, upstream)
    services = client.app[SERVICES]
    cookie = await _signed_in(services)
    async with client.ws_connect("/ws", headers={"Cookie": f"{COOKIE}={cookie}"}) as ws:
        assert (await ws.receive(timeout=5)).data == "hello -"
        await asyncio.sleep(0.5)  # looked up again meanwhile: still signed in
        await ws.send_str("still here")
        assert (await ws.receive(timeout=5)).data == "echo:still here"
        # what sign-out and back-channel logout do to the session
        assert await services.sessions.end_sessions(sub="alice") == 1
        closing = await ws.receive(timeout=5)
        assert closing.type is WSMsgType.CLOSE and closing.data == WSCloseCode.POLICY_VIOLATION
        assert closing.extra == "session ended"
    for _ in range(50):
        if "WebSocket closed: its session ended" in caplog.text:
            break
        await asyncio.sleep(0.1)
    assert "WebSocket closed: its session ended" in caplog.text


async def test_a_websocket_opened_with_a_bearer_token_closes_when_the_token_expires(
    fault_provider: FaultProviderServer, aiohttp_client: AiohttpClient, upstream: Upstream
) -> None:
    client = await _client(fault_provider, aiohttp_client, upstream)
    key = fault_provider.provider.signing_key
    now = int(time.time())
    claims = {"iss": fault_provider.issuer, "aud": CLIENT_ID, "sub": "svc-1", "iat": now, "exp": now + 1}
    token = jwt.encode(claims, key.private_key, algorithm=key.alg, headers={"kid": key.kid, "typ": "at+jwt"})
    async with client.ws_connect("/api/ws", headers={"Authorization": f"Bearer {token}"}) as ws:
        assert (await ws.receive(timeout=5)).data == "hello -"
        closing = await ws.receive(timeout=5)  # a second later the token has expired
        assert closing.type is WSMsgType.CLOSE and closing.data == WSCloseCode.POLICY_VIOLATION
