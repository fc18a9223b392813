"""Protecting legacy apps, over HTTP through a real proxy process: the cross-origin guard and kept forms.

The proxy runs as ``authproxy run`` with the development provider on 127.0.0.2 and the demo's
echo app upstream (it lists the form fields it receives). The requests carry the Fetch Metadata
and ``Origin`` headers browsers send; tests/test_browser_legacy.py does the same with Chromium.

Routes: ``/`` guarded and keeping forms (max 1024 bytes, one trusted origin); ``/plain`` neither
(the behaviour of a config without the keys); ``/keep-only`` keeps forms without the guard;
``/api`` guarded with bearer tokens; ``/ws`` a guarded public WebSocket route.
"""

from __future__ import annotations

import gzip
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from authproxy.demo.echo import create_echo_app
from authproxy.demo.provider import DemoClient, DemoProvider
from authproxy.sessions.ticket import new_ticket, seal_ticket
from tests.support.fault_provider import CLIENT_ID, CLIENT_SECRET, PROVIDER_HOST, serve_app
from tests.support.logs import logs_with
from tests.support.net import free_port
from tests.support.proxy_process import ProxyProcess, start_proxy
from tests.support.scripted_browser import Cookie, Page, ScriptedBrowser, login_demo
from tests.support.upstream import Upstream, raw_request

SECRET: Final = "legacy-forms-session-secret-0123456789abcdef"
HTML: Final = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
TRUSTED: Final = "https://trusted.example"
MAX_KEPT: Final = 1024
COOKIE: Final = "authproxy_session"  # session.cookie.name, not Secure: no __Host- prefix


@dataclass
class Stack:
    proxy: ProxyProcess
    provider: DemoProvider

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def origin(self) -> str:
        return self.proxy.url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    provider_port, port = free_port(PROVIDER_HOST), free_port()
    issuer = f"http://{PROVIDER_HOST}:{provider_port}"
    provider = DemoProvider(
        issuer, [DemoClient(CLIENT_ID, CLIENT_SECRET, [f"http://127.0.0.1:{port}/oauth2/callback"])]
    )
    with (
        serve_app(provider.create_app(), PROVIDER_HOST, provider_port),
        serve_app(create_echo_app()) as echo,
        serve_app(Upstream().app()) as ws_upstream,
    ):
        config: dict[str, Any] = {
            "server": {
                "listen": f"127.0.0.1:{port}",
                "public_url": f"http://127.0.0.1:{port}",
                "rate_limit": {"auth_per_minute": 100000},
            },
            "provider": {"issuer": issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            "session": {"secrets": [SECRET], "cookie": {"secure": False}},
            "routes": [
                {
                    "name": "app",
                    "upstream": echo,
                    "csrf_protection": True,
                    "csrf_trusted_origins": [TRUSTED],
                    "preserve_post": True,
                    "preserve_post_max_bytes": MAX_KEPT,
                },
                {"name": "plain", "match": {"path_prefix": "/plain"}, "upstream": echo},
                {"name": "keep-only", "match": {"path_prefix": "/keep-only"}, "upstream": echo, "preserve_post": True},
                {
                    "name": "api",
                    "match": {"path_prefix": "/api"},
                    "upstream": echo,
                    "bearer_tokens": True,
                    "csrf_protection": True,
                },
                {
                    "name": "tokens",
                    "match": {"path_prefix": "/tokens"},
                    "upstream": ws_upstream,
                    "pass_access_token": True,
                },
                {
                    "name": "ws",
                    "match": {"path_prefix": "/ws"},
                    "upstream": ws_upstream,
                    "auth": "none",
                    "csrf_protection": True,
                },
            ],
        }
        proxy = start_proxy(config, tmp_path_factory.mktemp("legacy-forms"))
        try:
            yield Stack(proxy, provider)
        finally:
            proxy.kill()


def browser() -> ScriptedBrowser:
    return ScriptedBrowser(user_agent=f"legacy-forms-{uuid.uuid4()}")


def same_origin(stack: Stack) -> dict[str, str]:
    return {"Accept": HTML, "Origin": stack.origin, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"}


CROSS_SITE: Final = {"Accept": HTML, "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}


async def signed_in(stack: Stack, user: str = "alice") -> ScriptedBrowser:
    b = browser()
    page = await login_demo(b, stack.url + "/oauth2/start?rd=/landing", user)
    assert page.status == 200, page
    return b


def form_of(page: Page) -> list[list[str]]:
    """The form fields the echo upstream received."""
    assert page.status == 200, (page, page.text[:500])
    form = page.json()["form"]
    assert form is not None, page.json()
    return list(form)


async def log_events(stack: Stack, event: str, *marks: str) -> list[dict[str, Any]]:
    """The proxy's ``event`` lines, once one holding every one of ``marks`` is written."""
    logs = await logs_with(stack.proxy, f'"{event}"', *marks)
    return [json.loads(line) for line in logs.splitlines() if f'"{event}"' in line]


# ------------------------------------------------------------------------------------ cross-origin guard


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_cross_site_unsafe_request_is_refused_with_a_logged_reason(stack: Stack, method: str) -> None:
    b = await signed_in(stack)
    async with b:
        page = await b.request(method, stack.url + f"/transfer-{method}", data=[("amount", "100")], headers=CROSS_SITE)
        assert page.status == 403 and page.headers["Content-Type"].startswith("text/html")
        assert "came from another site" in page.text
        api = await b.request(
            method, stack.url + "/transfer", data=[("a", "1")], headers={**CROSS_SITE, "Accept": "application/json"}
        )
        assert api.status == 403 and api.json()["error"] == "cross_origin_request"
    events = await log_events(stack, "cross_origin_refused", f'"path":"/transfer-{method}"')
    refused = [e for e in events if e.get("path") == f"/transfer-{method}"]
    assert refused and refused[0]["reason"] == "Sec-Fetch-Site cross-site" and refused[0]["route"] == "app"


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_a_cross_site_unsafe_request_with_no_body_at_all_is_refused_too(stack: Stack, method: str) -> None:
    # the head alone, without Content-Length or Transfer-Encoding, as any client can send it: a
    # request that announces no body is otherwise the kind the proxy answers on its quickest path
    b = await signed_in(stack)
    async with b:
        cookie = b.cookies.header_for(stack.url + "/transfer")
    assert cookie
    fields = {"Host": stack.url.removeprefix("http://"), "Cookie": cookie, **CROSS_SITE, "Accept": "application/json"}
    head = "\n".join([f"{method} /transfer-bodyless HTTP/1.1", *(f"{name}: {value}" for name, value in fields.items())])
    status, _, body = await raw_request(stack.url, head)
    assert status == 403, body


async def test_same_origin_and_trusted_origin_posts_pass(stack: Stack) -> None:
    b = await signed_in(stack)
    async with b:
        page = await b.post(
            stack.url + "/save", [("note", "hello")], headers={**same_origin(stack), "Accept": "application/json"}
        )
        assert form_of(page) == [["note", "hello"]]
        trusted = {"Origin": TRUSTED, "Sec-Fetch-Site": "cross-site", "Accept": "application/json"}
        assert (await b.post(stack.url + "/save", [("n", "1")], headers=trusted)).status == 200
        # an old browser without Sec-Fetch-Site: Origin against Host
        old_ok = {"Origin": stack.origin, "Accept": "application/json"}
        assert (await b.post(stack.url + "/save", [("n", "1")], headers=old_ok)).status == 200
        old_bad = {"Origin": "http://localhost:1", "Accept": "application/json"}
        assert (await b.post(stack.url + "/save", [("n", "1")], headers=old_bad)).status == 403


async def test_route_without_the_key_keeps_todays_behaviour(stack: Stack) -> None:
    b = await signed_in(stack)
    async with b:
        page = await b.post(
            stack.url + "/plain/save", [("n", "1")], headers={**CROSS_SITE, "Accept": "application/json"}
        )
        assert form_of(page) == [["n", "1"]]


async def test_bearer_token_requests_are_exempt(stack: Stack) -> None:
    b = await signed_in(stack)
    async with b:
        echoed = (await b.get(stack.url + "/tokens/x", headers={"Accept": "application/json"})).json()
        token = dict((k.lower(), v) for k, v in echoed["headers"])["authorization"].removeprefix("Bearer ")
        # a cookie-authenticated request to the bearer route is not exempt
        page = await b.post(stack.url + "/api/x", [("n", "1")], headers={**CROSS_SITE, "Accept": "application/json"})
        assert page.status == 403
    headers = {"Authorization": f"Bearer {token}", "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    async with (
        aiohttp.ClientSession() as client,
        client.post(stack.url + "/api/x", data={"n": "1"}, headers={**headers, "Accept": "application/json"}) as r,
    ):
        assert r.status == 200


@pytest.mark.parametrize("extra", ["", "\nContent-Length: 0"], ids=["fast-path", "aiohttp"])
async def test_a_cross_site_get_that_opens_no_socket_passes_the_guard_on_either_path(stack: Stack, extra: str) -> None:
    # Sec-Fetch-Mode: websocket without Upgrade opens no socket here: a GET like any other (it
    # tells a handshake apart only for forward-auth, whose check request has lost Upgrade)
    head = (
        "GET /plain-page HTTP/1.1\nHost: 127.0.0.1\nAccept: application/json\n"
        f"Origin: http://evil.example\nSec-Fetch-Site: cross-site\nSec-Fetch-Mode: websocket{extra}"
    )
    status, _, _ = await raw_request(stack.url, head)
    assert status == 401  # the ordinary answer without a session, not the guard's 403


async def test_cross_site_websocket_upgrade_is_refused(stack: Stack) -> None:
    ws_url = stack.url.replace("http://", "ws://") + "/ws"
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(ws_url, headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
        assert refused.value.status == 403
        async with client.ws_connect(ws_url, headers={"Origin": stack.origin, "Sec-Fetch-Site": "same-origin"}) as ws:
            assert (await ws.receive()).data == "hello -"
            await ws.send_str("ping")
            assert (await ws.receive()).data == "echo:ping"


# ------------------------------------------------------------------------------------------ kept forms


FIELDS: Final = [
    ("title", 'Quarterly "report" <script>alert(1)</script>'),
    ("body", "line one\r\nline two & 'three'"),
    ("tag", "a"),
    ("tag", "b"),
    ("empty", ""),
    ("unicode", "caf\u00e9 \u2603"),
]


def hold_an_ended_session(b: ScriptedBrowser, stack: Stack) -> None:
    """Give ``b`` a session cookie of this proxy's whose session is gone (ended by idle or absolute
    timeout, or by a sign-out elsewhere): what a browser holds when its sign-in ended meanwhile."""
    host = urlsplit(stack.url).hostname or ""
    value = seal_ticket(new_ticket(), SECRET.encode())
    b.cookies.set(Cookie(COOKIE, value, host, True, "/", None, False, True, "lax"))


async def test_form_posted_after_the_session_ended_is_delivered_after_login(stack: Stack) -> None:
    async with browser() as b:
        hold_an_ended_session(b, stack)
        # (format=json: the echo app answers in JSON what a browser would see as HTML)
        kept = await b.post(
            stack.url + "/orders/new?draft=1&format=json", FIELDS, headers=same_origin(stack), follow_redirects=False
        )
        assert kept.status == 303
        start = urlsplit(kept.location or "")
        assert start.path == "/oauth2/start"
        rd = parse_qs(start.query)["rd"][0]
        assert re.fullmatch(r"/oauth2/resubmit\?p=[0-9a-f]{16}", rd), rd
        # after the login the browser lands on the page that posts the form back
        page = await login_demo(b, stack.url + (kept.location or ""), "alice")
        assert page.status == 200 and urlsplit(page.url).path == "/oauth2/resubmit"
        csp = page.headers["Content-Security-Policy"]
        nonce = re.search(r"'nonce-([^']+)'", csp)
        assert nonce is not None and "form-action 'self'" in csp and "unsafe-inline" not in csp.split("style-src")[0]
        scripts = re.findall(r"<script([^>]*)>", page.text)
        assert scripts == [f' nonce="{nonce.group(1)}"']  # the one script is the nonce'd one
        assert "<script>alert(1)" not in page.text  # field values are escaped, not markup
        form = page.forms[0]
        assert (form.method, urlsplit(form.action).path, urlsplit(form.action).query) == (
            "POST",
            "/orders/new",
            "draft=1&format=json",
        )
        delivered = await b.submit(page, form)
        assert delivered.json()["method"] == "POST" and delivered.json()["path"] == "/orders/new"
        assert form_of(delivered) == [list(pair) for pair in FIELDS]
        assert seen_user(delivered) == "alice"
        # the kept form is sent once: the page cannot be replayed
        again = await b.get(stack.url + rd)
        assert again.status == 410
    assert await log_events(stack, "post_kept") and await log_events(stack, "post_resubmitted")


async def test_a_form_sent_while_no_one_was_signed_in_waits_for_the_next_user_to_say_it_is_theirs(
    stack: Stack,
) -> None:
    # no session cookie at all (signed out, say): whoever signs in next may not be who sent it
    async with browser() as b:
        kept = await b.post(
            stack.url + "/orders/new?format=json", FIELDS, headers=same_origin(stack), follow_redirects=False
        )
        assert kept.status == 303
        page = await login_demo(b, stack.url + (kept.location or ""), "bob")
        assert page.status == 200 and urlsplit(page.url).path == "/oauth2/resubmit"
        assert "<script" not in page.text and "script-src 'none'" in page.headers["Content-Security-Policy"]
        assert "Send this form?" in page.text and "bob@example.com" in page.text
        assert "Discard it" in page.text
        delivered = await b.submit(page, page.forms[0])
        assert form_of(delivered) == [list(pair) for pair in FIELDS] and seen_user(delivered) == "bob"
    assert any(event.get("confirm") is True for event in await log_events(stack, "post_resubmitted"))


async def test_a_sign_out_leaves_no_kept_form_to_be_sent_as_whoever_signs_in_next(stack: Stack) -> None:
    # kept after the session ended, but the login it started was left at the provider's page;
    # the user signs in again in another tab, then signs out: the next user must not send it as theirs
    async with browser() as b:
        hold_an_ended_session(b, stack)
        kept = await b.post(stack.url + "/orders/new", FIELDS, headers=same_origin(stack), follow_redirects=False)
        assert kept.status == 303
        assert (await login_demo(b, stack.url + "/oauth2/start?rd=/landing", "alice")).status == 200
        signed_out = await b.get(stack.url + "/oauth2/sign_out", follow_redirects=False)
        assert signed_out.status in (302, 303)
        # someone else picks up the tab left on the login page
        page = await login_demo(b, stack.url + (kept.location or ""), "bob")
        assert "<script" not in page.text, "sent by itself as bob"
        assert page.status == 410 or "Send this form?" in page.text, (page.status, page.text[:300])


def seen_user(page: Page) -> str:
    return dict(page.json()["identity_headers"])["X-Forwarded-User"]


async def test_cross_site_post_is_never_kept_even_without_the_guard(stack: Stack) -> None:
    async with browser() as b:
        for path in ("/orders/new", "/keep-only/orders"):
            page = await b.post(stack.url + path, FIELDS, headers=CROSS_SITE, follow_redirects=False)
            # /: the guard's 403; /keep-only: the ordinary 401, and nothing was kept to replay
            assert page.status in (401, 403) and page.location is None, page
            assert not [c for c in b.cookies.all() if "_post_" in c.name]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        pytest.param(b"x=" + b"a" * MAX_KEPT, "application/x-www-form-urlencoded", 413, "larger than", id="too-large"),
        pytest.param(b'{"x": 1}', "application/json", 415, "only simple forms", id="json-body"),
        pytest.param(b"--b\r\n\r\n--b--", "multipart/form-data; boundary=b", 415, "only simple forms", id="multipart"),
        pytest.param(b"name=%FF%FE", "application/x-www-form-urlencoded", 415, "UTF-8", id="not-utf-8"),
        # 1001 (empty) fields in 1000 bytes: under the size limit
        pytest.param(b"&" * 1000, "application/x-www-form-urlencoded", 413, "1000 fields", id="1001-fields"),
    ],
)
async def test_forms_that_cannot_be_kept_get_a_clear_page(
    stack: Stack, body: bytes, content_type: str, status: int, reason: str
) -> None:
    async with browser() as b:
        page = await b.post(
            stack.url + "/orders/new",
            body,
            headers={**same_origin(stack), "Content-Type": content_type},
            follow_redirects=False,
        )
        assert page.status == status and page.location is None
        assert "Your form could not be kept" in page.text and "/oauth2/start?rd=/orders/new" in page.text
        assert reason in page.text


async def test_a_compressed_form_is_not_kept(stack: Stack) -> None:
    # bodies go upstream as they came (never decoded), and a kept form is posted back as text
    async with browser() as b:
        page = await b.post(
            stack.url + "/orders/new",
            gzip.compress(b"item=1"),
            headers={
                **same_origin(stack),
                "Content-Type": "application/x-www-form-urlencoded",
                "Content-Encoding": "gzip",
            },
            follow_redirects=False,
        )
        assert page.status == 415 and page.location is None
        assert "not compressed" in page.text and not [c for c in b.cookies.all() if "_post_" in c.name]


async def test_a_chunked_form_over_the_limit_is_refused(stack: Stack) -> None:
    # no Content-Length to judge by: the body is read until it passes the limit, then refused
    async def body() -> AsyncIterator[bytes]:
        yield b"x="
        for _ in range(4):
            yield b"a" * MAX_KEPT

    async with aiohttp.ClientSession() as http:
        headers = {**same_origin(stack), "Content-Type": "application/x-www-form-urlencoded"}
        async with http.post(stack.url + "/orders/new", data=body(), headers=headers, allow_redirects=False) as page:
            assert page.request_info.headers.get("Transfer-Encoding") == "chunked"
            assert page.status == 413 and "Location" not in page.headers
            assert "Your form could not be kept" in await page.text()


async def test_resubmit_needs_the_login_and_the_browser_that_kept_the_form(stack: Stack) -> None:
    async with browser() as b:
        kept = await b.post(stack.url + "/orders/new", FIELDS, headers=same_origin(stack), follow_redirects=False)
        rd = parse_qs(urlsplit(kept.location or "").query)["rd"][0]
        # before the login: back to the login, the form still kept
        early = await b.get(stack.url + rd, follow_redirects=False)
        assert early.status == 302 and urlsplit(early.location or "").path == "/oauth2/start"
        # another browser, signed in, cannot take it: it has not got the form's cookie
        other = await signed_in(stack, "bob")
        async with other:
            assert (await other.get(stack.url + rd)).status == 410
        page = await login_demo(b, stack.url + (kept.location or ""), "alice")
        assert page.status == 200 and page.forms


async def test_a_kept_form_is_posted_back_only_on_the_host_that_kept_it(stack: Stack) -> None:
    # the same proxy under another name (localhost for 127.0.0.1): the form was kept for one host,
    # and its page must not post it to another, even to a browser that presents its cookie there
    async with browser() as b:
        kept = await b.post(stack.url + "/orders/new", FIELDS, headers=same_origin(stack), follow_redirects=False)
        assert kept.status == 303
        rd = parse_qs(urlsplit(kept.location or "").query)["rd"][0]
        assert (await login_demo(b, stack.url + "/oauth2/start?rd=/landing", "alice")).status == 200
        other_host = f"localhost:{stack.proxy.port}"
        page = await b.get(stack.url + rd, headers={"Host": other_host}, follow_redirects=False)
        assert page.status == 410 and "This form is no longer kept" in page.text
        assert not page.forms
        assert not [c for c in b.cookies.all() if "_post_" in c.name]  # the form's cookie is cleared
    await log_events(stack, "post_not_resubmitted", '"reason":"the kept form belongs to another host or expired"')


async def test_api_post_without_session_still_gets_401_json(stack: Stack) -> None:
    async with browser() as b:
        page = await b.post(
            stack.url + "/orders/new", [("a", "1")], headers={"Accept": "application/json"}, follow_redirects=False
        )
        assert page.status == 401 and page.json()["error"] == "unauthenticated"


async def test_forward_auth_csrf_check_believes_the_forwarded_method_only_from_trusted_proxies(stack: Stack) -> None:
    b = await signed_in(stack)
    async with b:
        plain = await b.get(stack.url + "/oauth2/auth", headers={"Accept": "application/json"})
        assert plain.status == 202
        # no trusted_proxies here: a client's own X-Forwarded-Method cannot vouch for the request
        asked = await b.get(
            stack.url + "/oauth2/auth?csrf=1", headers={"Accept": "application/json", "X-Forwarded-Method": "GET"}
        )
        assert asked.status == 403 and asked.json()["error"] == "cross_origin_request"
