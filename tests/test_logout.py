"""Sign-out (SPEC section 3, ``/oauth2/sign_out``): revoke, delete everywhere, expire, send to the provider.

Real proxy subprocesses (two replicas on one Redis) in front of the development provider on
127.0.0.2, driven by the scripted browser. The upstream echoes the ID and access tokens the proxy
holds, so the test knows the exact ``id_token_hint`` to expect and can ask the provider whether
the grant is still alive. The pure decisions (where the browser goes, which token is revoked,
how long a ``jti`` is remembered) have tables of their own.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from authproxy.config import parse_config
from authproxy.errors import ProviderUnavailable, TokenInvalid
from authproxy.metrics import Metrics
from authproxy.oidc.discovery import ProviderMetadata
from authproxy.oidc.logout import (
    MAX_LOGOUT_TOKEN_AGE,
    MAX_REPLAY_TTL,
    MIN_REPLAY_TTL,
    Logouts,
    flow_cookie_names,
    replay_key,
    replay_ttl,
    revocation_request,
    sign_out_location,
)
from authproxy.sessions.manager import LOCK_PREFIX, Session, SessionManager
from authproxy.sessions.memory import MemoryStore
from authproxy.sessions.record import SessionRecord
from authproxy.sessions.store import Lock
from tests.support.fault_provider import CLIENT_ID
from tests.support.logout import (
    COOKIE,
    SECRET,
    SIGNED_OUT_PATH,
    Stack,
    browser,
    fault_stack,
    log_in,
    session_cookie,
    status_with_cookie,
)
from tests.support.logs import logs_when

END_SESSION = "https://op.example.com/logout"
PUBLIC = "https://app.example.com"


# ---------------------------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("endpoint", "id_token", "configured", "rd", "expected"),
    [
        pytest.param(END_SESSION, "IDT", PUBLIC + "/bye", "/x",
                     END_SESSION + "?id_token_hint=IDT&client_id=c&post_logout_redirect_uri=https%3A%2F%2Fapp"
                     ".example.com%2Fbye", id="configured-uri-wins-over-rd"),
        pytest.param(END_SESSION, None, None, "/after?x=1",
                     END_SESSION + "?client_id=c&post_logout_redirect_uri=https%3A%2F%2Fapp.example.com%2Fafter"
                     "%3Fx%3D1", id="no-session-rd-becomes-post-logout-uri"),
        pytest.param(END_SESSION, "IDT", None, "//evil.example.com",
                     END_SESSION + "?id_token_hint=IDT&client_id=c&post_logout_redirect_uri=https%3A%2F%2Fapp"
                     ".example.com%2F", id="rd-sanitised-before-the-provider-sees-it"),
        pytest.param(END_SESSION, "IDT", None, None, END_SESSION + "?id_token_hint=IDT&client_id=c",
                     id="nothing-configured-provider-page"),
        pytest.param(END_SESSION + "?tenant=a", None, None, None, END_SESSION + "?tenant=a&client_id=c",
                     id="endpoint-query-kept"),
        pytest.param(None, "IDT", PUBLIC + "/bye", "/x", "/oauth2/signed_out?rd=/x", id="no-endpoint-rd"),
        pytest.param(None, "IDT", PUBLIC + "/bye", None, PUBLIC + "/bye", id="no-endpoint-configured-uri"),
        pytest.param(None, "IDT", None, None, "/oauth2/signed_out", id="no-endpoint-signed-out-page"),
        pytest.param(None, None, None, "https://evil.example.com/", "/oauth2/signed_out", id="no-endpoint-absolute-rd"),
        pytest.param(None, None, None, "/\\evil.example.com", "/oauth2/signed_out", id="no-endpoint-backslash-rd"),
    ],
)  # fmt: skip
def test_sign_out_location(
    endpoint: str | None, id_token: str | None, configured: str | None, rd: str | None, expected: str
) -> None:
    location = sign_out_location(
        end_session_endpoint=endpoint,
        client_id="c",
        id_token=id_token,
        configured_post_logout=configured,
        public_url=PUBLIC,
        rd=rd,
    )
    assert location == expected


def _record(**tokens: str | None) -> SessionRecord:
    return SessionRecord(sub="u", created_at=0.0, last_seen_at=0.0, absolute_expires_at=1.0, **tokens)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        pytest.param({"refresh_token": "RT", "access_token": "AT"}, ("RT", "refresh_token"), id="refresh-token"),
        pytest.param({"access_token": "AT"}, ("AT", "access_token"), id="access-token-without-refresh"),
        pytest.param({}, None, id="nothing-to-revoke"),
    ],
)
def test_revocation_request(tokens: dict[str, str], expected: tuple[str, str] | None) -> None:
    assert revocation_request(_record(**tokens)) == expected


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        pytest.param({"iat": NOW, "exp": NOW + 3600}, 3600 + 60, id="until-exp-plus-skew"),
        pytest.param({"iat": NOW, "exp": NOW + 10}, MIN_REPLAY_TTL, id="short-exp-gets-the-minimum"),
        pytest.param({"iat": NOW - 100}, MAX_LOGOUT_TOKEN_AGE + 60 - 100, id="no-exp-bounded-by-iat"),
        pytest.param({"iat": NOW, "exp": NOW + 10**12}, MAX_REPLAY_TTL, id="far-exp-gets-the-maximum"),
        pytest.param({"iat": NOW, "exp": 1e306}, MAX_REPLAY_TTL, id="exp-near-float-max-gets-the-maximum"),
    ],
)
def test_replay_ttl(claims: dict[str, Any], expected: float) -> None:
    assert replay_ttl(claims, NOW, 60.0) == pytest.approx(expected)


def test_replay_ttl_refuses_an_old_token_without_exp() -> None:
    with pytest.raises(TokenInvalid, match="too old"):
        replay_ttl({"iat": NOW - MAX_LOGOUT_TOKEN_AGE - 61}, NOW, 60.0)


@pytest.mark.parametrize("iat", [None, "1800000000", True], ids=["absent", "string", "boolean"])
def test_replay_ttl_refuses_a_token_with_neither_exp_nor_a_numeric_iat(iat: object) -> None:
    claims = {} if iat is None else {"iat": iat}
    with pytest.raises(TokenInvalid, match="iat missing"):
        replay_ttl(claims, NOW, 60.0)


def test_replay_key_hides_the_jti() -> None:
    key = replay_key("the-jti")
    assert key.startswith("jti:") and "the-jti" not in key and key == replay_key("the-jti")


def test_flow_cookie_names() -> None:
    names = ["authproxy_session", "authproxy_session_flow_ab12", "other", "x_authproxy_session_flow_1"]
    assert flow_cookie_names(names, "authproxy_session") == ["authproxy_session_flow_ab12"]


# ---------------------------------------------------------------------------------------------- stacks


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two replicas on one Redis; ``post_logout_redirect_uri`` configured."""
    with fault_stack(tmp_path_factory.mktemp("logout"), replicas=2, redis=True) as started:
        yield started


@pytest.fixture(scope="module")
def bare_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A provider without end_session_endpoint, no post_logout_redirect_uri configured."""
    with fault_stack(tmp_path_factory.mktemp("bare"), end_session=False, post_logout_redirect_uri=False) as started:
        yield started


async def _sign_out(url: str, b: Any, method: str = "GET", query: str = "") -> Any:
    return await b.request(method, url + "/oauth2/sign_out" + query, follow_redirects=False)


def _query(location: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(location).query)


async def _userinfo_status(stack: Stack, access_token: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(stack.fault.endpoint("userinfo"), headers={"Authorization": access_token}) as answer,
    ):
        return answer.status


# ---------------------------------------------------------------------------------------------- sign-out


async def test_sign_out_revokes_ends_the_session_and_goes_to_end_session(stack: Stack) -> None:
    provider = stack.fault
    async with browser() as b:
        _, seen = await log_in(stack, "alice", b)
        cookie = session_cookie(b)
        assert cookie is not None
        id_token, bearer = seen["x-forwarded-id-token"], seen["authorization"]
        assert await _userinfo_status(stack, bearer) == 200
        revocations = provider.stats.revocations

        answer = await _sign_out(stack.url, b, query="?rd=/ignored-when-configured")

        assert answer.status == 302
        location = answer.location
        assert location is not None and location.startswith(provider.endpoint("end_session") + "?")
        assert _query(location) == {
            "id_token_hint": [id_token],
            "client_id": [CLIENT_ID],
            "post_logout_redirect_uri": [stack.public_url + SIGNED_OUT_PATH],
        }
        assert answer.headers["Cache-Control"] == "no-store"
        assert session_cookie(b) is None  # the cookie was expired
        # RFC 7009: one revocation, of the refresh token, which revoked the whole grant
        assert provider.stats.revocations == revocations + 1
        assert await _userinfo_status(stack, bearer) == 401
        # the old cookie is worthless on every replica, for APIs and browsers alike
        for proxy in stack.proxies:
            assert await status_with_cookie(proxy.url + "/app", cookie) == 401
            assert await status_with_cookie(proxy.url + "/app", cookie, navigation=True) == 302
        # following the redirect ends the provider's session too: back at the post-logout page,
        # the proxy asks for a login and the provider shows its login form instead of SSO
        landed = await b.get(location)
        assert (302, stack.public_url + SIGNED_OUT_PATH) in landed.history
        assert landed.find_form(lambda f: f.button(("username", "alice")) is not None) is not None


async def test_sign_out_on_another_replica_ends_the_session_everywhere(stack: Stack) -> None:
    async with browser() as b:
        _, seen = await log_in(stack, "bob", b)
        cookie = session_cookie(b)
        assert cookie is not None
        revocations = stack.fault.stats.revocations
        answer = await _sign_out(stack.proxies[1].url, b, method="POST")  # replica B, as a form POST
        assert answer.status == 302
        assert _query(answer.location or "")["id_token_hint"] == [seen["x-forwarded-id-token"]]
        assert stack.fault.stats.revocations == revocations + 1
    for proxy in stack.proxies:
        assert await status_with_cookie(proxy.url + "/app", cookie) == 401


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        pytest.param("multipart/form-data", b"rd=/bye", id="multipart-without-boundary"),
        pytest.param("application/x-www-form-urlencoded; charset=x-unknown", b"rd=/bye", id="unknown-charset"),
        # aiohttp refuses to read a body beyond its client_max_size (1 MiB): only rd is lost
        pytest.param(
            "application/x-www-form-urlencoded", b"rd=/bye&pad=" + b"a" * (2 << 20), id="beyond-the-size-limit"
        ),
    ],
)
async def test_a_sign_out_whose_body_is_not_a_readable_form_still_signs_out(
    stack: Stack, content_type: str, body: bytes
) -> None:
    async with browser() as b:
        await log_in(stack, "alice", b)
        cookie = session_cookie(b)
        assert cookie is not None
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            stack.url + "/oauth2/sign_out",
            data=io.BytesIO(body),
            headers={"Content-Type": content_type, "Cookie": f"{COOKIE}={cookie}"},
            allow_redirects=False,
        ) as answer,
    ):
        assert answer.status == 302
        expired = [c for c in answer.headers.getall("Set-Cookie") if c.startswith(f"{COOKIE}=")]
        assert expired and "Max-Age=0" in expired[0]
    for proxy in stack.proxies:
        assert await status_with_cookie(proxy.url + "/app", cookie) == 401


async def test_sign_out_without_a_session_expires_cookies_and_redirects(stack: Stack) -> None:
    async with browser() as b:
        # a login started and abandoned leaves a flow cookie; a stale session cookie is sent too
        started = await b.get(stack.url + "/oauth2/start?rd=/x", follow_redirects=False)
        assert started.status == 302
        flows = [c.name for c in b.cookies.all() if c.name.startswith(COOKIE + "_flow_")]
        assert len(flows) == 1
        b.cookies.receive(stack.url + "/", [f"{COOKIE}=not-a-real-ticket; Path=/"])
        revocations = stack.fault.stats.revocations

        answer = await _sign_out(stack.url, b)

        assert answer.status == 302
        assert _query(answer.location or "") == {
            "client_id": [CLIENT_ID],
            "post_logout_redirect_uri": [stack.public_url + SIGNED_OUT_PATH],
        }
        expired = {header.split("=", 1)[0] for header in answer.headers.getall("Set-Cookie")}
        assert expired == {COOKIE, flows[0]}
        assert session_cookie(b) is None and not [c for c in b.cookies.all() if c.name.startswith(COOKIE)]
        assert stack.fault.stats.revocations == revocations


@pytest.mark.parametrize(
    ("rd", "location"),
    [
        pytest.param("/reports?week=3", "/reports?week=3", id="local-path"),
        pytest.param("//evil.example.com/x", "/", id="network-path"),
        pytest.param("https://evil.example.com/", "/", id="absolute-url"),
        pytest.param("/\\evil.example.com", "/", id="backslash"),
        pytest.param("/%2F%2Fevil.example.com", "/", id="encoded-slashes"),
        pytest.param("javascript:alert(1)", "/", id="scheme"),
        pytest.param("/\t/evil.example.com", "/", id="control-character"),
        pytest.param(None, "/", id="absent"),
    ],
)
async def test_sign_out_rd_is_sanitised_without_end_session(bare_stack: Stack, rd: str | None, location: str) -> None:
    async with browser() as b:
        params = {} if rd is None else {"rd": rd}
        answer = await b.session.get(bare_stack.url + "/oauth2/sign_out", params=params, allow_redirects=False)
        assert answer.status == 302
        # the proxy's signed-out page, whose "Sign in again" link returns to the sanitised rd
        signed_out = answer.headers["Location"]
        assert signed_out.startswith("/oauth2/signed_out")
        page = await b.session.get(bare_stack.url + signed_out, headers={"Accept": "application/json"})
        assert page.status == 200
        assert (await page.json())["login_url"] == "/oauth2/start?rd=" + quote(location, safe="/")


async def test_sign_out_without_end_session_revokes_and_returns_to_rd(bare_stack: Stack) -> None:
    async with browser() as b:
        await log_in(bare_stack, "carol", b)
        cookie = session_cookie(b)
        assert cookie is not None
        revocations = bare_stack.fault.stats.revocations
        answer = await _sign_out(bare_stack.url, b, query="?rd=/goodbye")
        assert (answer.status, answer.location) == (302, "/oauth2/signed_out?rd=/goodbye")
        assert bare_stack.fault.stats.revocations == revocations + 1
    assert await status_with_cookie(bare_stack.url + "/app", cookie) == 401


async def test_sign_out_rd_becomes_the_post_logout_uri_when_none_is_configured(tmp_path: Path) -> None:
    with fault_stack(tmp_path, post_logout_redirect_uri=False) as stack:
        async with browser() as b:
            await log_in(stack, "alice", b)
            answer = await _sign_out(stack.url, b, query="?rd=/bye")
            query = _query(answer.location or "")
            assert query["post_logout_redirect_uri"] == [stack.public_url + "/bye"]
            # the provider accepts it (registered) and sends the browser there
            landed = await b.get(answer.location or "", follow_redirects=False)
            assert landed.location == stack.public_url + "/bye"
            attack = await _sign_out(stack.url, b, query="?rd=//evil.example.com")
            assert _query(attack.location or "")["post_logout_redirect_uri"] == [stack.public_url + "/"]


# ---------------------------------------------------------------------------------------------- provider trouble


async def test_local_logout_succeeds_when_revocation_is_slow_or_the_provider_is_gone(tmp_path: Path) -> None:
    with fault_stack(tmp_path, provider_options={"timeout": "1s"}) as stack:
        slow, _ = await log_in(stack, "alice")
        gone, _ = await log_in(stack, "bob")
        slow_cookie, gone_cookie = session_cookie(slow), session_cookie(gone)
        assert slow_cookie is not None and gone_cookie is not None

        # a revocation slower than provider.timeout: the logout waits at most that long
        stack.fault.revocation_delay = 3.0
        started = time.monotonic()
        answer = await _sign_out(stack.url, slow)
        assert answer.status == 302 and time.monotonic() - started < 2.5
        assert session_cookie(slow) is None
        assert await status_with_cookie(stack.url + "/app", slow_cookie) == 401

        # the provider stopped altogether (connections refused)
        assert stack.provider_server is not None
        stack.provider_server.stop()
        answer = await _sign_out(stack.url, gone, query="?rd=/x")
        assert answer.status == 302
        assert (answer.location or "").startswith(stack.fault.endpoint("end_session"))
        assert session_cookie(gone) is None
        assert await status_with_cookie(stack.url + "/app", gone_cookie) == 401
        await slow.close()
        await gone.close()
        logs = await logs_when(stack.proxies[0], lambda logs: logs.count('"event":"logout"') == 2)
        assert logs.count('"event":"logout_revocation_failed"') == 2
        # nothing credential-shaped in the logs
        assert slow_cookie not in logs and gone_cookie not in logs and "eyJ" not in logs


async def test_revocation_refused_by_the_provider_does_not_fail_the_logout(stack: Stack) -> None:
    stack.fault.revocation_down = True
    try:
        async with browser() as b:
            await log_in(stack, "carol", b)
            cookie = session_cookie(b)
            assert cookie is not None
            answer = await _sign_out(stack.url, b)
            assert answer.status == 302
        assert await status_with_cookie(stack.proxies[1].url + "/app", cookie) == 401
    finally:
        stack.fault.revocation_down = False


async def test_session_store_outage_during_sign_out_is_503_and_the_cookie_is_expired(tmp_path: Path) -> None:
    with fault_stack(tmp_path, redis=True) as stack:
        async with browser() as b:
            await log_in(stack, "alice", b)
            assert stack.redis is not None
            stack.redis.stop()
            answer = await b.request(
                "GET", stack.url + "/oauth2/sign_out", headers={"Accept": "application/json"}, follow_redirects=False
            )
            assert answer.status == 503 and answer.headers["Retry-After"]
            assert answer.json()["error"] == "session_store_unavailable"
            assert session_cookie(b) is None
            # no cookie now: the browser is signed out even though the store is away
            page = await b.get(stack.url + "/app", follow_redirects=False)
            assert page.status == 302


@pytest.mark.parametrize("method", ["HEAD", "PUT", "DELETE"])
async def test_sign_out_answers_only_get_and_post(stack: Stack, method: str) -> None:
    async with browser() as b:
        await log_in(stack, "bob", b)
        answer = await b.request(method, stack.url + "/oauth2/sign_out", follow_redirects=False)
        # a link prefetcher's HEAD signs nobody out, and the reserved path never reaches the upstream
        assert answer.status == 405
        assert (await b.request("GET", stack.url + "/app", headers={"Accept": "application/json"})).status == 200


# ---------------------------------------------------------------------------------------------- in process


class LockWatchingStore(MemoryStore):
    """The memory store, telling when someone asked for a lock another holder still has."""

    def __init__(self) -> None:
        super().__init__()
        self.lock_busy = asyncio.Event()

    async def acquire_lock(self, name: str, lease: float, *, read: str | None = None) -> Lock | None:
        lock = await super().acquire_lock(name, lease, read=read)
        if lock is None:
            self.lock_busy.set()
        return lock


class RevocationRecorder:
    """Stands in for the provider client: its metadata, and the revocations it was asked for."""

    def __init__(self, *, revocation_endpoint: bool = True, revocation_fails: bool = False) -> None:
        issuer = "https://op.example.com"
        self.metadata = ProviderMetadata(
            issuer=issuer,
            authorization_endpoint=issuer + "/authorize",
            token_endpoint=issuer + "/token",
            jwks_uri=issuer + "/jwks",
            end_session_endpoint=END_SESSION,
            revocation_endpoint=issuer + "/revoke" if revocation_endpoint else None,
        )
        self.revoked: list[tuple[str, str | None]] = []
        self.revocation_fails = revocation_fails

    async def revoke(self, token: str, token_type_hint: str | None = None) -> None:
        self.revoked.append((token, token_type_hint))
        if self.revocation_fails:
            raise ProviderUnavailable("token revocation failed: the provider answered HTTP 503")


async def logouts_client(
    aiohttp_client: AiohttpClient, provider: RevocationRecorder, store: MemoryStore
) -> tuple[TestClient[web.Request, web.Application], SessionManager]:
    """The logout endpoints alone, with ``provider`` for the provider client, and their sessions."""
    config = parse_config(
        yaml.safe_dump(
            {
                "server": {"public_url": PUBLIC},
                "provider": {"issuer": "https://op.example.com", "client_id": CLIENT_ID, "client_secret": "s"},
                "session": {"secrets": [SECRET], "cookie": {"secure": False}},
                "routes": [{"name": "app", "upstream": "http://127.0.0.1:1"}],
            }
        )
    )
    sessions = SessionManager(
        store, secrets=[SECRET], cookie=config.session.cookie, idle_timeout=600, absolute_timeout=3600
    )
    app = web.Application()
    Logouts(config, provider, sessions, Metrics()).add_routes(app)  # type: ignore[arg-type]
    return await aiohttp_client(app), sessions


def signed_in_record() -> SessionRecord:
    """Alice's session, with the refresh token rt-0 and the access token at-0."""
    now = time.time()
    return SessionRecord(
        sub="alice",
        refresh_token="rt-0",
        access_token="at-0",
        created_at=now,
        last_seen_at=now,
        absolute_expires_at=now + 3600,
    )


@pytest.mark.parametrize(
    ("endpoint", "fails", "revoked"),
    [
        pytest.param(True, False, True, id="revocation-endpoint"),
        pytest.param(False, False, False, id="no-revocation-endpoint"),
        pytest.param(True, True, False, id="revocation-failed"),
    ],
)
async def test_the_logout_event_says_whether_the_grant_was_revoked(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture, endpoint: bool, fails: bool, revoked: bool
) -> None:
    provider = RevocationRecorder(revocation_endpoint=endpoint, revocation_fails=fails)
    client, sessions = await logouts_client(aiohttp_client, provider, MemoryStore())
    _, cookie = await sessions.create(signed_in_record())
    with caplog.at_level(logging.INFO, logger="authproxy.auth"):
        answer = await client.get("/oauth2/sign_out", headers={"Cookie": f"{COOKIE}={cookie}"}, allow_redirects=False)
    assert answer.status == 302
    # a provider that cannot revoke is not asked to, and the event does not claim it was done
    assert provider.revoked == ([("rt-0", "refresh_token")] if endpoint else [])
    (event,) = [record for record in caplog.records if record.getMessage() == "logout"]
    assert event.fields["revoked"] is revoked  # type: ignore[attr-defined]


async def test_sign_out_revokes_the_refresh_token_a_refresh_elsewhere_stored_meanwhile(
    aiohttp_client: AiohttpClient,
) -> None:
    store = LockWatchingStore()
    provider = RevocationRecorder()
    client, sessions = await logouts_client(aiohttp_client, provider, store)
    session, cookie = await sessions.create(signed_in_record())
    # a refresh on another worker holds the session's lock while the provider rotates rt-0
    refresh_lock = await store.acquire_lock(LOCK_PREFIX + session.store_key, 10.0)
    assert refresh_lock is not None

    signing_out = asyncio.create_task(
        client.get("/oauth2/sign_out", headers={"Cookie": f"{COOKIE}={cookie}"}, allow_redirects=False)
    )
    await asyncio.wait_for(store.lock_busy.wait(), 5)  # the sign-out has loaded rt-0 and waits for the lock
    rotated = replace(session.record, refresh_token="rt-1", access_token="at-1", version=session.record.version + 1)
    assert await sessions.save(
        Session(session.ticket, rotated, session.cookie), only_if_present=True, release=refresh_lock
    )
    answer = await signing_out

    assert answer.status == 302
    assert provider.revoked == [("rt-1", "refresh_token")]
    assert await store.get(session.store_key) is None
