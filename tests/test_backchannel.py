"""Back-channel logout (SPEC section 3, OpenID Connect Back-Channel Logout 1.0) through real proxies.

First with the certified oidc-provider: the user signs out at the provider, which POSTs a logout
token to the proxy, and the session ends on both replicas sharing one Redis while the same
user's other provider session survives. Then with the development provider's own signing key,
every kind of bad logout token gets a 400 and ends nothing, a replayed one included; good ones
end sessions by ``sid`` or, without one, by ``sub``; a store outage is a 503, never a 200.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from authproxy.config import parse_config
from authproxy.demo.provider import BACKCHANNEL_EVENT
from authproxy.errors import StoreUnavailable
from authproxy.metrics import Metrics
from authproxy.oidc.client import ProviderClient
from authproxy.oidc.logout import Logouts
from authproxy.sessions.manager import SessionManager
from authproxy.sessions.memory import MemoryStore
from authproxy.sessions.record import SessionRecord
from tests.support.fault_provider import CLIENT_ID, CLIENT_SECRET, FaultProviderServer
from tests.support.logout import (
    SECRET,
    Stack,
    browser,
    fault_stack,
    id_token_claims,
    log_in,
    logout_claims,
    node_stack,
    rogue_key,
    session_cookie,
    sign_logout_token,
    status_with_cookie,
    xhr,
)
from tests.support.logs import logged_line
from tests.support.scripted_browser import ScriptedBrowser, confirm_node_provider_logout


def _discovery(issuer: str) -> dict[str, Any]:
    with urllib.request.urlopen(issuer + "/.well-known/openid-configuration", timeout=5) as answer:
        metadata: dict[str, Any] = json.load(answer)
    return metadata


async def _alive_everywhere(stack: Stack, b: ScriptedBrowser, user: str) -> bool:
    """Whether ``b``'s session still passes on every replica (as ``user``)."""
    for proxy in stack.proxies:
        page = await xhr(b, proxy.url + "/app")
        if page.status != 200:
            return False
        assert {k.lower(): v for k, v in page.json()["headers"]}["x-forwarded-user"] == user
    return True


# ---------------------------------------------------------------------------------------------- oidc-provider


@pytest.fixture(scope="module")
def op_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with node_stack(tmp_path_factory.mktemp("backchannel-op"), replicas=2, access_token_ttl=300) as started:
        yield started


async def test_logout_at_oidc_provider_ends_the_session_on_every_replica(op_stack: Stack) -> None:
    op = op_stack.op
    async with browser() as b, browser() as elsewhere:
        _, seen = await log_in(op_stack, "alice", b)
        await log_in(op_stack, "alice", elsewhere)  # the same user, another provider session
        assert id_token_claims(seen)["sid"]  # oidc-provider names its session in the ID token
        cookie = session_cookie(b)
        assert cookie is not None and await _alive_everywhere(op_stack, b, "alice")
        op.reset_counters()

        # the user signs out at the provider itself, not through the proxy
        end_session = _discovery(op.issuer)["end_session_endpoint"]
        confirm = await b.get(end_session + "?client_id=" + op.client("basic")["client_id"])
        await confirm_node_provider_logout(b, confirm)

        counters = op.counters()
        assert (counters["backchannel_logouts"], counters["backchannel_errors"]) == (1, 0), op.logs()
        assert not await _alive_everywhere(op_stack, b, "alice")
        for proxy in op_stack.proxies:
            assert await status_with_cookie(proxy.url + "/app", cookie) == 401
        # the other provider session (another sid) was not part of this logout
        assert await _alive_everywhere(op_stack, elsewhere, "alice")
    await logged_line(op_stack.proxies[0], '"event":"backchannel_logout"', '"sessions_ended":1')


# ---------------------------------------------------------------------------------------------- development provider


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fault_stack(tmp_path_factory.mktemp("backchannel"), replicas=2, redis=True) as started:
        yield started


async def _post_token(
    url: str, token: str | None, *, body: Any = None, content_type: str | None = None
) -> tuple[int, dict[str, str], Any]:
    data = body if body is not None else ({"logout_token": token} if token is not None else {})
    headers = {"Content-Type": content_type} if content_type is not None else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/oauth2/backchannel_logout", data=data, headers=headers) as answer,
    ):
        text = await answer.text()
        return answer.status, dict(answer.headers), json.loads(text) if text else None


async def _backchannel_logouts(admin_url: str) -> float:
    """``authproxy_logouts_total{kind="backchannel"}`` of one proxy process."""
    async with aiohttp.ClientSession() as http, http.get(admin_url + "/metrics") as answer:
        text = await answer.text()
    for line in text.splitlines():
        if line.startswith('authproxy_logouts_total{kind="backchannel"'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _forged(stack: Stack, claims: dict[str, Any]) -> str:
    return sign_logout_token(stack.fault, claims, rogue_key())


def _edit(**changes: Any) -> Callable[[Stack, dict[str, Any]], str]:
    def build(stack: Stack, claims: dict[str, Any]) -> str:
        for name, value in changes.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return sign_logout_token(stack.fault, claims)

    return build


NOW = int(time.time())
BAD_TOKENS = [
    pytest.param(_forged, "bad signature", id="forged"),
    pytest.param(_edit(iat=NOW - 7200, exp=NOW - 3600), "token expired", id="expired"),
    pytest.param(_edit(nonce="n-0S6_WzA2Mj"), "nonce", id="nonce"),
    pytest.param(_edit(events=None), "event missing", id="missing-event"),
    pytest.param(_edit(events={"http://schemas.openid.net/event/other": {}}), "event missing", id="other-event"),
    pytest.param(_edit(aud="some-other-client"), "aud mismatch", id="wrong-aud"),
    pytest.param(_edit(iss="https://evil.example.com"), "iss mismatch", id="wrong-iss"),
    pytest.param(_edit(sid=None, sub=None), "sid and sub missing", id="no-sid-no-sub"),
    pytest.param(_edit(jti=None), "jti missing", id="no-jti"),
    pytest.param(_edit(iat=None), "iat missing", id="no-iat"),
]


@pytest.mark.parametrize(("build", "reason"), BAD_TOKENS)
async def test_bad_logout_token_is_400_and_ends_nothing(
    stack: Stack, build: Callable[[Stack, dict[str, Any]], str], reason: str
) -> None:
    async with browser() as b:
        _, seen = await log_in(stack, "alice", b)
        identity = id_token_claims(seen)
        token = build(stack, logout_claims(stack.fault, sub=identity["sub"], sid=identity["sid"]))
        status, headers, body = await _post_token(stack.proxies[1].url, token)
        assert status == 400
        assert body["error"] == "invalid_request" and reason in body["error_description"]
        assert headers["Cache-Control"] == "no-store"
        assert await _alive_everywhere(stack, b, "alice")


async def test_replayed_logout_token_is_400_and_ends_nothing(stack: Stack) -> None:
    async with browser() as b:
        _, seen = await log_in(stack, "bob", b)
        identity = id_token_claims(seen)
        token = sign_logout_token(stack.fault, logout_claims(stack.fault, sub=identity["sub"], sid=identity["sid"]))
        status, headers, _ = await _post_token(stack.proxies[1].url, token)
        assert status == 200 and headers["Cache-Control"] == "no-store"
        assert not await _alive_everywhere(stack, b, "bob")
        # signed in again in the same provider session (same sid): the old token must not end it,
        # on either replica (the jti cache lives in the shared store)
        _, again = await log_in(stack, "bob", b)
        assert id_token_claims(again)["sid"] == identity["sid"]
        for proxy in stack.proxies:
            status, _, body = await _post_token(proxy.url, token)
            assert status == 400 and "replayed" in body["error_description"]
        assert await _alive_everywhere(stack, b, "bob")


async def test_a_logout_token_that_claims_to_live_for_ages_still_ends_the_session_once(stack: Stack) -> None:
    # its jti cannot be kept until an exp far beyond what a store can expire (this one used to
    # end in a 500: its lifetime in milliseconds overflows a float); it is kept for a year
    async with browser() as b:
        _, seen = await log_in(stack, "carol", b)
        identity = id_token_claims(seen)
        claims = logout_claims(stack.fault, sub=identity["sub"], sid=identity["sid"])
        token = sign_logout_token(stack.fault, {**claims, "exp": 1e306})
        status, _, _ = await _post_token(stack.proxies[0].url, token)
        assert status == 200
        assert not await _alive_everywhere(stack, b, "carol")
        status, _, body = await _post_token(stack.proxies[1].url, token)
        assert status == 400 and "replayed" in body["error_description"]


async def test_sid_ends_one_provider_session_and_sub_alone_ends_all_of_the_user(stack: Stack) -> None:
    before = [await _backchannel_logouts(proxy.admin_url) for proxy in stack.proxies]
    async with browser() as first, browser() as second, browser() as other_user:
        _, seen = await log_in(stack, "carol", first)
        await log_in(stack, "carol", second)  # a second provider session: another sid
        await log_in(stack, "alice", other_user)
        identity = id_token_claims(seen)

        by_sid = logout_claims(stack.fault, sub=identity["sub"], sid=identity["sid"])
        assert (await _post_token(stack.proxies[1].url, sign_logout_token(stack.fault, by_sid)))[0] == 200
        assert not await _alive_everywhere(stack, first, "carol")
        assert await _alive_everywhere(stack, second, "carol")

        by_sub = logout_claims(stack.fault, sub="carol", sid=None)
        assert (await _post_token(stack.url, sign_logout_token(stack.fault, by_sub)))[0] == 200
        assert not await _alive_everywhere(stack, second, "carol")
        assert await _alive_everywhere(stack, other_user, "alice")

        # a valid token for a session that is already gone is still a success
        gone = logout_claims(stack.fault, sub="carol", sid="no-such-sid")
        assert (await _post_token(stack.url, sign_logout_token(stack.fault, gone)))[0] == 200
    # one session ended by each of the two replicas, counted where it happened
    assert [await _backchannel_logouts(proxy.admin_url) for proxy in stack.proxies] == [
        before[0] + 1,
        before[1] + 1,
    ]


async def test_a_refresh_naming_another_provider_session_leaves_no_session_its_logout_cannot_end(
    tmp_path: Path,
) -> None:
    # the refreshed ID token names another provider session; a logout token naming that
    # session (Back-Channel Logout 1.0 section 2.7) must not leave this session signed in
    with fault_stack(tmp_path, access_token_ttl=61) as stack:
        provider = stack.fault
        async with browser() as b:
            await log_in(stack, "carol", b)
            original = provider.id_token_claims

            def another_sid(grant: Any, *, access_token: str, now: float) -> dict[str, Any]:
                return {**original(grant, access_token=access_token, now=now), "sid": "another-provider-session"}

            provider.id_token_claims = another_sid  # type: ignore[method-assign]
            await asyncio.sleep(1.5)  # the access token is now within refresh_before_expiry (60 s)
            await xhr(b, stack.url + "/app")
            by_sid = logout_claims(provider, sub="carol", sid="another-provider-session")
            assert (await _post_token(stack.url, sign_logout_token(provider, by_sid)))[0] == 200
            assert (await xhr(b, stack.url + "/app")).status == 401


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param({}, "logout_token missing", id="no-token"),
        pytest.param({"logout_token": ""}, "logout_token missing", id="empty-token"),
        pytest.param({"logout_token": "not.a.jwt"}, "malformed", id="garbage"),
        pytest.param(json.dumps({"logout_token": "x"}), "logout_token missing", id="json-body"),
    ],
)
async def test_malformed_back_channel_requests_are_400(stack: Stack, body: Any, reason: str) -> None:
    status, _, answer = await _post_token(stack.url, None, body=body)
    assert status == 400 and reason in answer["error_description"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        pytest.param("multipart/form-data", b"logout_token=x", id="multipart-without-boundary"),
        pytest.param("multipart/form-data; boundary=zz", b"--zz\r\nbad", id="broken-multipart"),
        pytest.param("application/x-www-form-urlencoded; charset=x-unknown", b"logout_token=x", id="unknown-charset"),
    ],
)
async def test_a_body_that_is_not_a_readable_form_is_400_not_500(stack: Stack, content_type: str, body: bytes) -> None:
    status, _, answer = await _post_token(stack.url, None, body=body, content_type=content_type)
    assert status == 400 and answer["error_description"] == "logout_token missing"


async def test_a_body_beyond_the_size_limit_is_400_not_413(stack: Stack) -> None:
    # section 2.8: a request the proxy cannot act on is a 400 with an error body, never cached
    body = io.BytesIO(b"logout_token=" + b"a" * (2 << 20))
    status, headers, answer = await _post_token(
        stack.url, None, body=body, content_type="application/x-www-form-urlencoded"
    )
    assert status == 400 and answer["error_description"] == "logout_token missing"
    assert headers["Cache-Control"] == "no-store"


async def test_back_channel_logout_only_accepts_post(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http, http.get(stack.url + "/oauth2/backchannel_logout") as answer:
        assert answer.status == 405


async def test_logout_token_of_the_event_type_with_extra_members_is_accepted(stack: Stack) -> None:
    async with browser() as b:
        _, seen = await log_in(stack, "alice", b)
        claims = logout_claims(stack.fault, sub="alice", sid=id_token_claims(seen)["sid"])
        claims["events"] = {BACKCHANNEL_EVENT: {}, "https://example.com/other-event": {"x": 1}}
        claims["typ_note"] = "extra claims are ignored"
        assert (await _post_token(stack.url, sign_logout_token(stack.fault, claims)))[0] == 200
        assert not await _alive_everywhere(stack, b, "alice")


async def test_store_outage_is_503_and_the_retry_is_not_a_replay(tmp_path: Path) -> None:
    with fault_stack(tmp_path, redis=True) as stack:
        assert stack.redis is not None
        async with browser() as b:
            _, seen = await log_in(stack, "alice", b)
            identity = id_token_claims(seen)
            token = sign_logout_token(stack.fault, logout_claims(stack.fault, sub="alice", sid=identity["sid"]))
            stack.redis.stop()
            status, headers, body = await _post_token(stack.url, token)
            assert status == 503 and headers["Retry-After"] and body["error"] == "temporarily_unavailable"
            stack.redis.start()  # back, empty: the sessions are gone anyway, the jti was never stored
            status, _, _ = await _post_token(stack.url, token)
            assert status == 200
            status, _, body = await _post_token(stack.url, token)
            assert status == 400 and "replayed" in body["error_description"]
        assert token not in stack.proxies[0].logs()


class IndexOutage(MemoryStore):
    """A memory store whose index reads fail while ``down``: a store lost between two commands."""

    down = False

    async def index_members(self, index: str) -> set[str]:
        if self.down:
            raise StoreUnavailable("index read failed (test)")
        return await super().index_members(index)


async def test_store_lost_after_the_jti_was_recorded_withdraws_it(
    fault_provider: FaultProviderServer, aiohttp_client: AiohttpClient
) -> None:
    config = parse_config(
        yaml.safe_dump(
            {
                "server": {"public_url": "http://127.0.0.1:1"},
                "provider": {"issuer": fault_provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
                "session": {"secrets": [SECRET], "cookie": {"secure": False}},
                "routes": [{"name": "app", "upstream": "http://127.0.0.1:1"}],
            }
        )
    )
    store = IndexOutage()
    sessions = SessionManager(store, secrets=[SECRET], cookie=config.session.cookie, idle_timeout=600,
                              absolute_timeout=3600)  # fmt: skip
    provider = ProviderClient(issuer=fault_provider.issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                              auth_method="client_secret_basic", private_key_pem=None, allowed_algorithms=["RS256"],
                              clock_skew=60, timeout=5, ca_file=None)  # fmt: skip
    await provider.start()
    try:
        await provider.load_metadata()
        app = web.Application()
        Logouts(config, provider, sessions, Metrics()).add_routes(app)
        client = await aiohttp_client(app)
        now = time.time()
        session, _ = await sessions.create(
            SessionRecord(sub="alice", sid="sid-1", created_at=now, last_seen_at=now, absolute_expires_at=now + 3600)
        )
        claims = logout_claims(fault_provider.provider, sub="alice", sid="sid-1")
        token = sign_logout_token(fault_provider.provider, claims)

        store.down = True
        answer = await client.post("/oauth2/backchannel_logout", data={"logout_token": token})
        assert answer.status == 503
        assert await store.get(session.store_key) is not None

        store.down = False  # the provider retries the same token: not a replay
        answer = await client.post("/oauth2/backchannel_logout", data={"logout_token": token})
        assert answer.status == 200
        assert await store.get(session.store_key) is None
    finally:
        await provider.close()
