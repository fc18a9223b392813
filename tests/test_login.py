"""The login (SPEC sections 3-5): /start, /callback, ID token checks, sessions, through a real proxy.

authproxy runs as a subprocess in front of a real upstream; the provider is the development
provider with one fault at a time (tests/support/fault_provider.py), on 127.0.0.2 so its cookies
never mix with the proxy's. Every refusal is checked for its status, for "no session cookie", and
where it matters for "no token request reached the provider".
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urlsplit

import aiohttp
import pytest

from authproxy.demo.provider import DemoClient
from authproxy.oidc.flow import flow_cookie_name
from tests.support.fault_provider import (
    CLIENT_ID,
    CLIENT_SECRET,
    PROVIDER_HOST,
    FaultProvider,
    serve_app,
)
from tests.support.logs import logs_with
from tests.support.net import free_port
from tests.support.proxy_process import ProxyProcess, start_proxy
from tests.support.scripted_browser import Page, ScriptedBrowser, cancel_demo_login, login_demo
from tests.support.upstream import Upstream

SECRET = "login-tests-session-secret-0123456789abcdef"
COOKIE = "authproxy_session"
FLOW_COOKIE_PREFIX = COOKIE + "_flow_"


@dataclass
class Stack:
    proxy: ProxyProcess
    provider: FaultProvider
    upstream_url: str

    @property
    def url(self) -> str:
        return self.proxy.url


def proxy_config(port: int, issuer: str, upstream_url: str, **provider: Any) -> dict[str, Any]:
    return {
        "server": {
            "listen": f"127.0.0.1:{port}",
            "public_url": f"http://127.0.0.1:{port}",
            "rate_limit": {"auth_per_minute": 100000},
        },
        "provider": {
            "issuer": issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "timeout": "5s",
            **provider,
        },
        "session": {"secrets": [SECRET], "cookie": {"secure": False}},
        "routes": [
            {"name": "public", "match": {"path_prefix": "/public"}, "upstream": upstream_url, "auth": "none"},
            {"name": "app", "upstream": upstream_url},
        ],
    }


@contextmanager
def start_stack(directory: Path, **provider_options: Any) -> Iterator[Stack]:
    provider_port = free_port(PROVIDER_HOST)
    issuer = f"http://{PROVIDER_HOST}:{provider_port}"
    provider = FaultProvider(issuer, [])
    port = free_port()
    provider.register_client(
        DemoClient(
            CLIENT_ID, CLIENT_SECRET, [f"http://127.0.0.1:{port}/oauth2/callback"], [f"http://127.0.0.1:{port}/"]
        )
    )
    upstream = Upstream()
    with serve_app(provider.create_app(), PROVIDER_HOST, provider_port), serve_app(upstream.app()) as upstream_url:
        proxy = start_proxy(proxy_config(port, issuer, upstream_url, **provider_options), directory)
        try:
            yield Stack(proxy, provider, upstream_url)
        finally:
            proxy.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("login")) as started:
        yield started


@pytest.fixture(autouse=True)
def no_fault(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "stack" in request.fixturenames:
        request.getfixturevalue("stack").provider.set_fault(None)


def browser() -> ScriptedBrowser:
    # a User-Agent of its own: the login-loop guard counts per client IP and User-Agent
    return ScriptedBrowser(user_agent=f"login-test-{uuid.uuid4()}")


def upstream_seen(page: Page) -> dict[str, str]:
    """Headers the upstream received (its echo), lower-cased names."""
    return {k.lower(): v for k, v in page.json()["headers"]}


def session_cookie(b: ScriptedBrowser) -> str | None:
    return b.cookies.get(COOKIE, "127.0.0.1")


# ---------------------------------------------------------------------------------------------- happy path


async def test_browser_is_sent_to_login_and_back_with_identity(stack: Stack) -> None:
    async with browser() as b:
        first = await b.get(stack.url + "/app/page?x=1&y=%2F", follow_redirects=False)
        assert first.status == 302
        assert parse_qs(urlsplit(first.location).query)["rd"] == ["/app/page?x=1&y=%2F"]
        page = await login_demo(b, stack.url + "/app/page?x=1&y=%2F", "alice")
        assert page.status == 200
        assert urlsplit(page.url).path == "/app/page" and urlsplit(page.url).query == "x=1&y=%2F"
        seen = upstream_seen(page)
        assert seen["x-forwarded-user"] == "alice"
        assert seen["x-forwarded-email"] == "alice@example.com"
        assert seen["x-forwarded-groups"] == "admins,developers"
        # the upstream never sees the session cookie
        assert COOKIE not in seen.get("cookie", "")
        assert session_cookie(b) is not None


async def test_session_cookie_attributes(stack: Stack) -> None:
    async with browser() as b:
        await login_demo(b, stack.url + "/", "bob")
        cookie = next(c for c in b.cookies.all() if c.name == COOKIE)
        assert cookie.http_only and cookie.path == "/" and cookie.same_site.lower() == "lax"
        assert not cookie.secure  # cookie.secure: false in this plain-http test


async def test_non_browser_requests_get_401_json_with_login_url(stack: Stack) -> None:
    async with browser() as b:
        for method, headers in [
            ("GET", {"Accept": "application/json"}),
            ("POST", {"Accept": "text/html"}),
            ("GET", {"Accept": "*/*", "X-Requested-With": "XMLHttpRequest"}),
        ]:
            page = await b.request(
                method, stack.url + "/api/items?q=1", headers=headers, follow_redirects=False, navigation=False
            )
            assert page.status == 401, (method, headers)
            body = page.json()
            assert body["error"] == "unauthenticated"
            assert body["login_url"].startswith("/oauth2/start?rd=/api/items")


async def test_a_websocket_handshake_without_a_session_gets_401_even_when_it_accepts_html(stack: Stack) -> None:
    # SPEC section 4: a WebSocket upgrade is never a browser navigation; a redirect would be lost on it
    handshake = {
        "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with (
        aiohttp.ClientSession() as client,
        client.get(stack.url + "/app/socket?x=1", headers=handshake, allow_redirects=False) as answer,
    ):
        assert answer.status == 401
        body = await answer.json()
    assert body["error"] == "unauthenticated"
    assert body["login_url"].startswith("/oauth2/start?rd=/app/socket")


# a GET is served by the fast path, a POST by aiohttp's: each decides on the route's auth itself
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_public_route_needs_no_login(stack: Stack, method: str) -> None:
    async with browser() as b:
        page = await b.request(method, stack.url + "/public/x")
        assert page.status == 200 and "x-forwarded-user" not in upstream_seen(page)


async def test_cookie_changes_at_login_and_old_session_ends(stack: Stack) -> None:
    async with browser() as b:
        await login_demo(b, stack.url + "/", "alice")
        before = session_cookie(b)
        page = await b.get(stack.url + "/oauth2/start?rd=/after")  # SSO-silent second login
        assert urlsplit(page.url).path == "/after"
        after = session_cookie(b)
        assert before and after and before != after
    async with browser() as thief:  # a copy of the old cookie is worthless now
        thief.cookies.receive(stack.url + "/", [f"{COOKIE}={before}; Path=/"])
        page = await thief.get(stack.url + "/app", follow_redirects=False)
        assert page.status == 302


async def test_two_tabs_logging_in_at_once_both_complete(stack: Stack) -> None:
    async with browser() as b:
        tab1 = await b.get(stack.url + "/oauth2/start?rd=/one", follow_redirects=False)
        tab2 = await b.get(stack.url + "/oauth2/start?rd=/two", follow_redirects=False)
        login1 = await b.get(tab1.location)
        login2 = await b.get(tab2.location)
        form = lambda page: page.find_form(lambda f: f.button(("username", "alice")) is not None)  # noqa: E731
        done2 = await b.submit(login2, form(login2), button=("username", "alice"))
        done1 = await b.submit(login1, form(login1), button=("username", "alice"))
        assert urlsplit(done2.url).path == "/two" and done2.status == 200
        assert urlsplit(done1.url).path == "/one" and done1.status == 200


# ---------------------------------------------------------------------------------------------- ID token faults

ID_TOKEN_FAULTS = [
    "bad_signature", "alg_none", "hs256_client_secret", "wrong_iss", "wrong_aud", "missing_aud",
    "extra_aud_no_azp", "expired", "missing_iat", "iat_future", "missing_sub", "missing_nonce", "wrong_nonce",
    "wrong_at_hash",
]  # fmt: skip


@pytest.mark.parametrize("fault", ID_TOKEN_FAULTS)
async def test_id_token_fault_refuses_the_login(stack: Stack, fault: str) -> None:
    stack.provider.set_fault(fault)
    async with browser() as b:
        page = await login_demo(b, stack.url + "/app", "alice")
        assert page.status in (400, 401), page
        assert "try again" in page.text.lower()
        assert session_cookie(b) is None
        again = await b.get(stack.url + "/app", headers={"Accept": "application/json"}, follow_redirects=False)
        assert again.status == 401


async def test_a_token_response_without_an_id_token_refuses_the_login(stack: Stack) -> None:
    # OpenID Connect Core 1.0 section 3.1.3.3: the answer to the code exchange carries the ID token
    stack.provider.set_fault("no_id_token")
    async with browser() as b:
        page = await login_demo(b, stack.url + "/app", "alice")
        assert page.status == 401, page
        assert session_cookie(b) is None
    await logs_with(stack.proxy, '"login_failed"', '"reason":"no id_token in the token response"')


async def test_userinfo_sub_mismatch_refuses_the_login(tmp_path: Path) -> None:
    with start_stack(tmp_path, userinfo=True) as stack:
        async with browser() as b:
            assert (await login_demo(b, stack.url + "/", "alice")).status == 200  # userinfo merged fine
        stack.provider.set_fault("userinfo_sub_mismatch")
        async with browser() as b:
            page = await login_demo(b, stack.url + "/", "alice")
            assert page.status == 401 and session_cookie(b) is None


async def test_a_sign_in_refused_at_the_userinfo_endpoint_logs_what_failed(tmp_path: Path) -> None:
    # the operator reads which request failed and why: not the token endpoint, not a bare
    # "provider unavailable" while discovery and the token endpoint answer fine
    with start_stack(tmp_path, userinfo=True) as stack:
        for fault, status, reason in [
            ("userinfo_refused", 401, '"reason":"userinfo endpoint: invalid_token"'),
            ("userinfo_not_json", 503, '"error":"userinfo failed: the answer is not JSON"'),
        ]:
            stack.provider.set_fault(fault)
            async with browser() as b:
                page = await login_demo(b, stack.url + "/app", "alice")
                assert page.status == status and "try again" in page.text.lower(), page
                assert session_cookie(b) is None
            await logs_with(stack.proxy, '"login_failed"', reason)


async def test_a_userinfo_claim_nested_deep_is_left_out_and_the_sign_in_completes(tmp_path: Path) -> None:
    # a provider's JSON may nest as deep as a parser goes: the session keeps simple values only
    # (a scalar or the scalars of a list), so the record can always be written
    with start_stack(tmp_path, userinfo=True) as stack:
        stack.provider.set_fault("userinfo_nested_claim")
        async with browser() as b:
            page = await login_demo(b, stack.url + "/app", "alice")
            assert page.status == 200, page
            assert upstream_seen(page)["x-forwarded-groups"] == "admins"
            info = (await b.get(stack.url + "/oauth2/userinfo")).json()
            assert info["sub"] == "alice" and info["groups"] == ["admins"]


@pytest.mark.parametrize("fault", ["stale_auth_time", "missing_auth_time"])
async def test_with_max_age_an_authentication_older_than_asked_refuses_the_login(tmp_path: Path, fault: str) -> None:
    # OpenID Connect Core 1.0 sections 3.1.2.1 and 3.1.3.7 item 13: with max_age the ID token carries
    # auth_time, and an authentication older than max_age (plus the clock skew) is not taken; the
    # parameter travels through the browser, which may drop it on its way to the provider
    with start_stack(tmp_path, extra_authorize_params={"max_age": "300"}) as stack:
        async with browser() as b:
            page = await login_demo(b, stack.url + "/app", "alice")
            assert page.status == 200, page  # a fresh authentication is taken
        stack.provider.set_fault(fault)
        async with browser() as b:
            page = await login_demo(b, stack.url + "/app", "alice")
            assert page.status == 401, page
            assert "try again" in page.text.lower()
            assert session_cookie(b) is None


async def test_no_kid_with_a_single_key_is_accepted(stack: Stack) -> None:
    stack.provider.set_fault("no_kid")
    async with browser() as b:
        page = await login_demo(b, stack.url + "/app", "carol")
        assert page.status == 200 and upstream_seen(page)["x-forwarded-user"] == "carol"


async def test_provider_key_rotation_is_picked_up_with_one_jwks_refetch(tmp_path: Path) -> None:
    with start_stack(tmp_path) as stack:
        async with browser() as b:
            assert (await login_demo(b, stack.url + "/", "alice")).status == 200
        fetches = stack.provider.stats.jwks_requests
        stack.provider.set_fault("rotate_keys")
        # JWKS refetches are rate-limited to one per 10 s (SPEC section 3), counted from the first fetch
        await asyncio.sleep(10.5)
        async with browser() as b:
            page = await login_demo(b, stack.url + "/", "bob")
            assert page.status == 200
        assert stack.provider.stats.jwks_requests == fetches + 1


# ---------------------------------------------------------------------------------------------- state


async def _callback_url(stack: Stack, b: ScriptedBrowser) -> str:
    """Start a login and let the provider answer, but stop before the callback is followed."""
    start = await b.get(stack.url + "/oauth2/start?rd=/x", follow_redirects=False)
    login = await b.get(start.location)
    form = login.find_form(lambda f: f.button(("username", "alice")) is not None)
    answer = await b.submit(login, form, button=("username", "alice"), follow_redirects=False)
    assert answer.status in (302, 303) and "/oauth2/callback" in answer.location
    return answer.location


def with_state(url: str, state: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    if state is None:
        query.pop("state")
    else:
        query["state"] = state
    return parts._replace(query=urlencode(query)).geturl()


@pytest.mark.parametrize(
    "case", ["missing", "wrong", "replayed", "other-browser", "no-flow-cookie", "flow-cookie-renamed-to-another-state"]
)
async def test_bad_state_is_400_without_a_token_request(stack: Stack, case: str) -> None:
    async with browser() as b:
        callback = await _callback_url(stack, b)
        if case == "replayed":
            assert (await b.get(callback)).status == 200
        tokens_before = stack.provider.stats.token_requests
        if case == "missing":
            page = await b.get(with_state(callback, None))
        elif case == "wrong":
            page = await b.get(with_state(callback, "forged-" + uuid.uuid4().hex))
        elif case == "flow-cookie-renamed-to-another-state":
            # the browser's own, valid flow cookie, offered under the name of a state it was not made for
            forged = "forged-" + uuid.uuid4().hex
            (flow,) = [cookie for cookie in b.cookies.all() if cookie.name.startswith(FLOW_COOKIE_PREFIX)]
            b.cookies.set(replace(flow, name=flow_cookie_name(COOKIE, forged)))
            page = await b.get(with_state(callback, forged))
        elif case == "replayed":
            page = await b.get(callback)
        elif case == "other-browser":
            async with browser() as other:
                await other.get(stack.url + "/oauth2/start?rd=/", follow_redirects=False)  # has a flow of its own
                page = await other.get(callback)
        else:
            for cookie in list(b.cookies.all()):
                if cookie.name.startswith(FLOW_COOKIE_PREFIX):
                    b.cookies.clear()
            page = await b.get(callback)
        assert page.status == 400, page
        assert "try again" in page.text.lower()
        assert stack.provider.stats.token_requests == tokens_before


async def test_a_state_is_single_use_even_for_the_browser_that_still_holds_its_flow_cookie(stack: Stack) -> None:
    # a callback URL replayed (back button, a copy from the history) with the very cookies the
    # browser had before it was first followed: the flow was spent by the first callback
    async with browser() as b:
        callback = await _callback_url(stack, b)
        cookies_before = [replace(cookie) for cookie in b.cookies.all()]
        assert any(cookie.name.startswith(FLOW_COOKIE_PREFIX) for cookie in cookies_before)
        assert (await b.get(callback)).status == 200
        tokens_after_first = stack.provider.stats.token_requests

        b.cookies.clear()
        for cookie in cookies_before:
            b.cookies.set(cookie)
        replayed = await b.get(callback, follow_redirects=False)

        assert replayed.status == 400, replayed
        assert "no longer valid" in replayed.text.lower()
        assert session_cookie(b) is None, "no second session"
        assert stack.provider.stats.token_requests == tokens_after_first, "the code was not exchanged again"


async def test_access_denied_gives_403_page_with_a_retry_link_not_a_loop(stack: Stack) -> None:
    async with browser() as b:
        page = await cancel_demo_login(b, stack.url + "/oauth2/start?rd=/app")
        assert page.status == 403
        assert "/oauth2/start?rd=/app" in page.text
        assert len(page.history) <= 4


async def test_a_provider_error_code_reaches_the_page_and_the_log_only_when_it_is_a_plain_code(stack: Stack) -> None:
    # anyone can send a browser to the callback with an error= of their choosing: text made to look
    # like a message from the site (or markup) is shown and logged as a generic "error"
    spoof = f"<script>spoof text {uuid.uuid4().hex}</script>"
    async with browser() as b:
        callback = await _callback_url(stack, b)  # a real flow of this browser: its state is valid
        state = parse_qs(urlsplit(callback).query)["state"][0]
        query = urlencode({"error": spoof, "state": state, "iss": stack.provider.issuer})
        error_url = urlsplit(callback)._replace(query=query).geturl()
        tokens_before = stack.provider.stats.token_requests
        page = await b.get(error_url)
        assert page.status == 400, page
        assert "/oauth2/start?rd=/x" in page.text  # the flow's own retry link: the flow was found
        assert "reported an error (error)" in page.text
        assert "spoof text" not in page.text
        assert stack.provider.stats.token_requests == tokens_before
    logs = await logs_with(stack.proxy, '"login_failed"', '"reason":"provider error: error"')
    assert "spoof text" not in logs


# ---------------------------------------------------------------------------------------------- iss (RFC 9207)


def with_iss(url: str, *issuers: str) -> str:
    """The callback URL with its ``iss`` parameters replaced by ``issuers`` (none: removed)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "iss"] + [("iss", issuer) for issuer in issuers]
    return parts._replace(query=urlencode(query)).geturl()


@pytest.mark.parametrize("case", ["another-issuer", "missing", "twice"])
async def test_an_authorization_response_not_from_the_configured_issuer_is_refused_without_a_token_request(
    stack: Stack, case: str
) -> None:
    # RFC 9207 section 2.4: the provider says it names itself in every authorization response; an
    # answer that names another issuer, or none, may have come from another server (a mix-up)
    async with browser() as b:
        callback = await _callback_url(stack, b)
        if case == "another-issuer":
            callback = with_iss(callback, "https://evil.example.com")
        elif case == "missing":
            callback = with_iss(callback)
        else:
            callback = with_iss(callback, stack.provider.issuer, "https://evil.example.com")
        tokens_before = stack.provider.stats.token_requests
        page = await b.get(callback, follow_redirects=False)
        assert page.status == 400, page
        assert "try again" in page.text.lower()
        assert session_cookie(b) is None
        assert stack.provider.stats.token_requests == tokens_before


async def test_a_provider_error_naming_another_issuer_is_not_taken_for_the_providers(stack: Stack) -> None:
    # RFC 9207 section 2.4: an error answer naming another issuer is not the configured provider's
    async with browser() as b:
        callback = await _callback_url(stack, b)
        state = parse_qs(urlsplit(callback).query)["state"][0]
        query = urlencode({"error": "access_denied", "state": state, "iss": "https://evil.example.com"})
        page = await b.get(urlsplit(callback)._replace(query=query).geturl())
        assert page.status == 400, page
        assert "denied at the identity provider" not in page.text


# ---------------------------------------------------------------------------------------------- rd


@pytest.mark.parametrize(
    "rd",
    [
        "https://evil.example.com/",
        "//evil.example.com",
        "/\\evil.example.com",
        "javascript:alert(1)",
        "/%2F%2Fevil.example.com",
        "/\tevil",
        "http:/evil.example.com",
    ],
)
async def test_rd_attacks_stay_local(stack: Stack, rd: str) -> None:
    async with browser() as b:
        page = await login_demo(b, stack.url + "/oauth2/start?rd=" + quote(rd, safe=""), "bob")
        final = urlsplit(page.url)
        assert final.netloc == urlsplit(stack.url).netloc, page.history


# ---------------------------------------------------------------------------------------------- loop guard


async def test_login_loop_guard_explains_instead_of_redirecting(stack: Stack) -> None:
    async with browser() as b:
        for _ in range(10):
            assert (await b.get(stack.url + "/oauth2/start?rd=/", follow_redirects=False)).status == 302
        page = await b.get(stack.url + "/oauth2/start?rd=/", follow_redirects=False)
        assert page.status == 400
        assert "cookie" in page.text.lower() and "secure" in page.text.lower()


async def test_verifier_never_reaches_the_browser(stack: Stack) -> None:
    async with browser() as b:
        start = await b.get(stack.url + "/oauth2/start?rd=/", follow_redirects=False)
        query = parse_qs(urlsplit(start.location).query)
        assert query["code_challenge_method"] == ["S256"]
        assert "code_verifier" not in start.location
        assert len(query["state"][0]) >= 22 and query["nonce"]
        flow_cookie = next(c for c in b.cookies.all() if c.name.startswith(FLOW_COOKIE_PREFIX))
        assert flow_cookie.http_only
        logs = stack.proxy.logs()
    assert "code_verifier" not in logs.lower() or "[redacted]" in logs
    for line in logs.splitlines():
        if line.startswith("{"):
            json.loads(line)


async def test_dot_segments_cannot_slip_past_the_gate_via_a_public_route(stack: Stack) -> None:
    import aiohttp
    from yarl import URL

    async with aiohttp.ClientSession() as client:
        url = URL(stack.url + "/public/%2e%2e/app/secret", encoded=True)
        async with client.get(url, allow_redirects=False) as answer:
            assert answer.status == 400
            assert "x-forwarded-user" not in (await answer.text()).lower()


async def test_unknown_paths_under_the_auth_prefix_are_never_forwarded(stack: Stack) -> None:
    async with browser() as b:
        page = await b.get(stack.url + "/oauth2/unknown", headers={"Accept": "application/json"})
        assert page.status == 404
        assert "headers" not in page.json()  # not the upstream's echo


async def test_start_takes_the_redirect_from_x_auth_request_redirect_like_oauth2_proxy(stack: Stack) -> None:
    async with browser() as b:
        start = await b.get(
            stack.url + "/oauth2/start",
            headers={"X-Auth-Request-Redirect": "/from/nginx?a=1&b=2"},
            follow_redirects=False,
        )
        login = await b.get(start.location)
        form = login.find_form(lambda f: f.button(("username", "bob")) is not None)
        page = await b.submit(login, form, button=("username", "bob"))
        assert page.url.endswith("/from/nginx?a=1&b=2")
        evil = await b.get(
            stack.url + "/oauth2/start",
            headers={"X-Auth-Request-Redirect": "https://evil.example/"},
            follow_redirects=False,
        )
        assert evil.status == 302  # sanitised like rd: the flow's target is "/"
