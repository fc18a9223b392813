"""A sign-out during a slow refresh revokes the refresh token the refresh stored (SPEC section 3).

A refresh holds the session's lock for up to two provider round trips: the token request, then
a JWKS refetch for a new ID token's unknown ``kid``, each bounded by ``provider.timeout``. A
sign-out on another replica waits that long for the lock: deleting the session without it would
revoke the refresh token the refresh has just spent, and leave the one the provider issued in
its place alive. A provider on 127.0.0.2 whose token and JWKS endpoints each take 1.8 s of a
2 s timeout; two session managers on one store stand for two replicas.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
import yaml
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from authproxy.config import parse_config
from authproxy.errors import SessionEnded
from authproxy.metrics import Metrics
from authproxy.oidc.client import ProviderClient
from authproxy.oidc.logout import Logouts
from authproxy.sessions.manager import SessionManager
from authproxy.sessions.memory import MemoryStore
from authproxy.sessions.record import SessionRecord
from authproxy.sessions.refresh import Refresher
from tests.support.net import free_port

HOST = "127.0.0.2"
CLIENT_ID = "c"
SECRET = "audit-signout-secret-0123456789abcdef0123"
TIMEOUT = 2.0  # provider.timeout
SLOW = 1.8  # each provider round trip stays within the timeout


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    value = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    value.update(kid=kid, alg="RS256", use="sig")
    return value


class Provider:
    def __init__(self) -> None:
        self.base = ""
        self.k1, self.k2 = new_key(), new_key()
        self.rotated = False  # after the first refresh, ID tokens are signed with k2
        self.current = "rt-0"
        self.revoked: list[str] = []
        self.offset = 0.0

    def id_token(self, key: rsa.RSAPrivateKey, kid: str) -> str:
        now = int(time.time() + self.offset)
        claims = {"iss": self.base, "aud": CLIENT_ID, "sub": "alice", "iat": now, "exp": now + 300, "auth_time": 1}
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

    async def discovery(self, request: web.Request) -> web.Response:
        b = self.base
        return web.json_response(
            {
                "issuer": b,
                "authorization_endpoint": b + "/authorize",
                "token_endpoint": b + "/token",
                "jwks_uri": b + "/jwks",
                "revocation_endpoint": b + "/revoke",
            }
        )

    async def jwks(self, request: web.Request) -> web.Response:
        keys = [jwk(self.k1, "k1")]
        if self.rotated:
            await asyncio.sleep(SLOW)  # a slow JWKS endpoint
            keys.append(jwk(self.k2, "k2"))
        return web.json_response({"keys": keys})

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        assert form.get("refresh_token") == self.current
        self.current = "rt-1"
        self.rotated = True
        await asyncio.sleep(SLOW)  # a slow token endpoint
        return web.json_response(
            {
                "access_token": "at-1",
                "token_type": "Bearer",
                "expires_in": 300,
                "refresh_token": "rt-1",
                "id_token": self.id_token(self.k2, "k2"),
            }
        )

    async def revoke(self, request: web.Request) -> web.Response:
        self.revoked.append(str((await request.post()).get("token")))
        return web.Response()


@pytest.fixture
async def op() -> AsyncIterator[Provider]:
    p = Provider()
    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", p.discovery)
    app.router.add_get("/jwks", p.jwks)
    app.router.add_post("/token", p.token)
    app.router.add_post("/revoke", p.revoke)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port(HOST)
    p.base = f"http://{HOST}:{port}"
    await web.TCPSite(runner, HOST, port).start()
    yield p
    await runner.cleanup()


async def test_sign_out_during_a_refresh_revokes_the_refresh_token_that_refresh_stored(
    op: Provider, aiohttp_client: Any
) -> None:
    client = ProviderClient(
        issuer=op.base,
        client_id=CLIENT_ID,
        client_secret="s" * 32,
        auth_method="client_secret_basic",
        private_key_pem=None,
        allowed_algorithms=["RS256"],
        clock_skew=60,
        timeout=TIMEOUT,
        ca_file=None,
        clock=lambda: time.time() + op.offset,
    )
    await client.start()
    await client.load_metadata()
    await client.load_keys()  # warm-up: k1 only
    op.offset = 11.0  # more than the JWKS refetch interval (10 s) later
    config = parse_config(
        yaml.safe_dump(
            {
                "server": {"public_url": "http://127.0.0.1"},
                "provider": {"issuer": op.base, "client_id": CLIENT_ID, "client_secret": "s" * 32, "timeout": "2s"},
                "session": {"secrets": [SECRET], "cookie": {"secure": False}},
                "routes": [{"name": "app", "upstream": "http://127.0.0.1:1"}],
            }
        )
    )
    store = MemoryStore()
    # two replicas sharing one store (as on Redis): one refreshes, the other signs out
    refreshing_replica = SessionManager(
        store, secrets=[SECRET], cookie=config.session.cookie, idle_timeout=3600, absolute_timeout=86400
    )
    signing_out_replica = SessionManager(
        store, secrets=[SECRET], cookie=config.session.cookie, idle_timeout=3600, absolute_timeout=86400
    )
    app = web.Application()
    Logouts(config, client, signing_out_replica, Metrics()).add_routes(app)
    http = await aiohttp_client(app)
    try:

        async def refresh_tokens(refresh_token: str, record: SessionRecord) -> Any:
            return await client.refresh(refresh_token, sub=record.sub, earlier_id_token=record.id_token)

        refresher = Refresher(refreshing_replica, refresh_tokens, refresh_before_expiry=60, clock=lambda: time.time())
        now = time.time()
        record = SessionRecord(
            sub="alice",
            access_token="at-0",
            refresh_token="rt-0",
            access_expires_at=now + 30,
            id_token=op.id_token(op.k1, "k1"),
            created_at=now,
            last_seen_at=now,
            absolute_expires_at=now + 86400,
        )
        session, cookie = await refreshing_replica.create(record)

        started = time.monotonic()
        refreshing = asyncio.create_task(refresher.ensure_fresh(session))
        await asyncio.sleep(0.2)  # the token request is out, the lock is held
        answer = await http.get(
            "/oauth2/sign_out", headers={"Cookie": f"authproxy_session={cookie}"}, allow_redirects=False
        )
        signed_out_at = time.monotonic() - started
        try:
            await refreshing
            result = "refreshed"
        except SessionEnded:
            result = "SessionEnded"
        assert answer.status == 302
        assert result == "refreshed" and signed_out_at > 2 * SLOW  # it waited for the refresh
        assert op.revoked == ["rt-1"], "sign-out revoked a spent refresh token; the live one (rt-1) survives"
    finally:
        await client.close()
