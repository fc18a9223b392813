"""SSO across two domains with single logout (server.sso_origins; docs/multi-domain.md).

Two host names on one proxy deployment (``127.0.0.1``: the authenticating origin, ``localhost``:
an SSO origin; two cookie jars, as for app.example.com and wiki.example.org), two replicas on one
real ``redis-server``, the certified oidc-provider, driven by the scripted browser:

- signed in on the app, the wiki opens without a second provider login (and the other way round);
- the handoff's code works once, only in the browser that asked for it, only for its origin;
  replays and foreign codes get a 400 page; ``origin`` outside the configuration is a 400 with no
  redirect, and a sign-in on an unconfigured host is refused;
- sign-out on the wiki, and back-channel logout from the provider, end both domains on every
  replica: the server-side session ends, not only a cookie.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import aiohttp
import pytest

from authproxy.oidc.pkce import new_state
from tests.support.logout import COOKIE, status_with_cookie
from tests.support.logs import logged_line
from tests.support.multidomain import (
    APP_HOST,
    JSON,
    WIKI_HOST,
    SsoStack,
    browser,
    provider_hops,
    sign_in_on_app,
    sso_stack,
    upstream_seen,
)
from tests.support.scripted_browser import ScriptedBrowser, confirm_node_provider_logout, login_node_provider


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SsoStack]:
    with sso_stack(tmp_path_factory.mktemp("multidomain")) as started:
        yield started


async def alive(b: ScriptedBrowser, url: str) -> bool:
    page = await b.request("GET", url, headers=JSON, follow_redirects=False, navigation=False)
    assert page.status in (200, 401), page
    return page.status == 200


async def handoff_callback(b: ScriptedBrowser, stack: SsoStack, path: str = "/wiki?page=1") -> str:
    """Open the wiki and follow the redirects up to, not into, its ``/sso/callback``: that URL."""
    url = stack.wiki_url(0) + path
    for _ in range(4):
        page = await b.get(url, follow_redirects=False)
        assert page.status == 302 and page.location, page
        url = urljoin(url, page.location)
        if urlsplit(url).path == "/oauth2/sso/callback":
            return url
    raise AssertionError(f"no handoff: {b.history}")


# ---------------------------------------------------------------------------------------------- one sign-in


async def test_signed_in_on_the_app_the_wiki_opens_without_a_second_provider_login(stack: SsoStack) -> None:
    async with browser() as b:
        await sign_in_on_app(stack, b, "alice")
        page = await b.get(stack.wiki_url(0) + "/wiki?page=1")

        assert page.status == 200, page
        seen = upstream_seen(page)
        assert seen["x-forwarded-user"] == "alice" and seen["host"] == f"{WIKI_HOST}:{stack.ports[0]}"
        assert await alive(b, stack.wiki_url(1) + "/wiki")  # the other replica knows the wiki's session
        assert provider_hops(page, stack.op) == []
        paths = [urlsplit(url).path for _, url in page.history]
        assert paths == ["/wiki", "/oauth2/start", "/oauth2/sso/authorize", "/oauth2/sso/callback", "/wiki"]
        assert urlsplit(page.url).query == "page=1"
        # each domain holds a cookie of its own, and neither reaches the upstream
        app_cookie, wiki_cookie = b.cookies.get(COOKIE, APP_HOST), b.cookies.get(COOKIE, WIKI_HOST)
        assert app_cookie and wiki_cookie and app_cookie != wiki_cookie
        assert wiki_cookie not in json.dumps(page.json())


async def test_signing_in_on_the_wiki_first_signs_in_the_app_too(stack: SsoStack) -> None:
    async with browser() as b:
        page = await login_node_provider(b, stack.wiki_url(0) + "/wiki", "bob")
        assert page.status == 200 and upstream_seen(page)["x-forwarded-user"] == "bob", page
        assert urlsplit(page.url).hostname == WIKI_HOST and urlsplit(page.url).path == "/wiki"

        page = await b.get(stack.app_url(1) + "/app")
        assert page.status == 200 and upstream_seen(page)["x-forwarded-user"] == "bob"
        assert provider_hops(page, stack.op) == []


async def test_the_callback_answer_hides_its_url_and_goes_to_a_local_path(stack: SsoStack) -> None:
    async with browser() as b:
        await sign_in_on_app(stack, b, "alice")
        callback = await handoff_callback(b, stack, "/wiki?page=2")
        query = parse_qs(urlsplit(callback).query)
        assert set(query) == {"code", "state"}  # no token, no session id, no return URL
        assert len(query["code"][0]) >= 22 and "ey" not in query["code"][0][:2]

        page = await b.get(callback, follow_redirects=False)
        assert page.status == 303 and page.location == "/wiki?page=2"
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert "no-store" in page.headers["Cache-Control"]


async def test_switch_account_on_the_wiki_asks_the_provider_again_and_signs_in_the_other_user(
    stack: SsoStack,
) -> None:
    async with browser() as b:
        await sign_in_on_app(stack, b, "alice")
        assert upstream_seen(await b.get(stack.wiki_url(0) + "/wiki"))["x-forwarded-user"] == "alice"
        # the 403 page's "sign in with another account" link, followed on the wiki
        page = await b.get(stack.wiki_url(0) + "/oauth2/start?rd=/wiki&prompt=login")
        asked_to_log_in = False
        for _ in range(6):
            # oidc-provider: its login form, then it ends alice's provider session in a page that
            # submits itself, then it may ask for the login and consent again
            login = page.find_form(lambda form: form.field("prompt") == "login")
            ending = page.find_form(lambda form: form.action.endswith("/session/end/confirm"))
            consent = page.find_form(lambda form: form.field("prompt") == "consent")
            if login is not None:
                asked_to_log_in = True
                page = await b.submit(page, login, fields={"login": "bob", "password": "any-password"})
            elif ending is not None or consent is not None:
                page = await b.submit(page, ending or consent)
            else:
                break
        assert asked_to_log_in  # the provider asked, rather than reusing alice's session
        assert page.status == 200 and upstream_seen(page)["x-forwarded-user"] == "bob", page
        assert urlsplit(page.url).hostname == WIKI_HOST
        page = await b.get(stack.app_url(0) + "/app")
        assert upstream_seen(page)["x-forwarded-user"] == "bob"


# ---------------------------------------------------------------------------------------------- refusals


async def test_a_replayed_handoff_is_refused(stack: SsoStack) -> None:
    async with browser() as b, browser() as thief:
        await sign_in_on_app(stack, b, "alice")
        callback = await handoff_callback(b, stack)
        assert (await b.get(callback, follow_redirects=False)).status == 303

        again = await b.get(callback, follow_redirects=False)
        assert again.status == 400 and "no longer valid" in again.text and again.location is None
        elsewhere = await thief.get(callback, follow_redirects=False)
        assert elsewhere.status == 400
        assert not await alive(thief, stack.wiki_url(0) + "/wiki")
    await logged_line(stack, "sso handoff: code unknown, expired or already used")


async def test_a_code_is_bound_to_the_browser_that_asked_for_it(stack: SsoStack) -> None:
    async with browser() as victim, browser() as attacker:
        await sign_in_on_app(stack, victim, "alice")
        stolen = await handoff_callback(victim, stack)
        # the attacker has a handoff of their own under way (a binding cookie for their state)
        own = await handoff_callback_without_session(attacker, stack)
        attacker_state = parse_qs(urlsplit(own).query)["state"][0]
        code = parse_qs(urlsplit(stolen).query)["code"][0]
        forged = stack.wiki_url(0) + "/oauth2/sso/callback?" + urlencode({"code": code, "state": attacker_state})

        page = await attacker.get(forged, follow_redirects=False)
        assert page.status == 400
        assert not await alive(attacker, stack.wiki_url(0) + "/wiki")
        # and the code is spent: the victim's own use of it fails too (one-time, whoever tried)
        assert (await victim.get(stolen, follow_redirects=False)).status == 400
    await logged_line(stack, "sso handoff: code issued for another handoff")


async def handoff_callback_without_session(b: ScriptedBrowser, stack: SsoStack) -> str:
    """A handoff started on the wiki by a browser with no sign-in: the wiki callback URL it would
    reach, built from the state of its own binding (the authorize step would ask for a login)."""
    page = await b.get(stack.wiki_url(0) + "/wiki", follow_redirects=False)
    start = urljoin(stack.wiki_url(0), page.location or "")
    page = await b.get(start, follow_redirects=False)
    authorize = page.location or ""
    assert urlsplit(authorize).path == "/oauth2/sso/authorize", page
    state = parse_qs(urlsplit(authorize).query)["state"][0]
    return stack.wiki_url(0) + "/oauth2/sso/callback?" + urlencode({"code": "x", "state": state})


async def test_a_callback_without_the_browsers_binding_is_refused(stack: SsoStack) -> None:
    async with browser() as b:
        await sign_in_on_app(stack, b, "alice")
        callback = await handoff_callback(b, stack)
        state = parse_qs(urlsplit(callback).query)["state"][0]
        bindings = [c.name for c in b.cookies.all() if c.domain == WIKI_HOST and c.name.startswith(COOKIE + "_flow_")]
        assert bindings
        for name in bindings:
            b.cookies.receive(stack.wiki_url(0), [f"{name}=; Max-Age=0; Path=/"])
        page = await b.get(callback, follow_redirects=False)
        assert page.status == 400, page
        assert state  # the URL was complete: only the binding cookie was missing


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param("http://evil.example.com", id="unknown-origin"),
        pytest.param("http://localhost.evil.example.com", id="look-alike"),
        pytest.param(None, id="the-authenticating-origin-itself"),
        pytest.param("", id="empty"),
    ],
)
async def test_a_handoff_to_an_unconfigured_origin_is_refused_without_a_redirect(
    stack: SsoStack, origin: str | None
) -> None:
    async with browser() as b:
        await sign_in_on_app(stack, b, "alice")
        value = stack.central if origin is None else origin
        url = stack.central + "/oauth2/sso/authorize?" + urlencode({"origin": value, "state": new_state()})
        page = await b.get(url, follow_redirects=False)
        assert page.status == 400 and page.location is None, page
        assert "code=" not in page.text


async def test_each_handoff_endpoint_answers_only_on_its_own_side(stack: SsoStack) -> None:
    query = "?" + urlencode({"origin": stack.wiki, "state": new_state()})
    async with aiohttp.ClientSession() as http:
        async with http.get(stack.wiki_url(0) + "/oauth2/sso/authorize" + query, allow_redirects=False) as answer:
            assert answer.status == 404 and "Location" not in answer.headers
        callback = "/oauth2/sso/callback?" + urlencode({"code": "x", "state": new_state()})
        async with http.get(stack.app_url(0) + callback, allow_redirects=False) as answer:
            assert answer.status == 404 and "Location" not in answer.headers


@pytest.mark.parametrize("state", [None, "", "a b", "x" * 200], ids=["absent", "empty", "space", "too-long"])
async def test_an_authorize_request_with_a_malformed_state_is_refused_without_a_code(
    stack: SsoStack, state: str | None
) -> None:
    async with browser() as b:
        await sign_in_on_app(stack, b, "alice")
        params = {"origin": stack.wiki} | ({} if state is None else {"state": state})
        page = await b.get(stack.central + "/oauth2/sso/authorize?" + urlencode(params), follow_redirects=False)
        assert page.status == 400 and page.location is None, page


async def test_the_authorize_answer_carrying_the_code_is_neither_cached_nor_referred(stack: SsoStack) -> None:
    async with browser() as b:
        await sign_in_on_app(stack, b, "alice")
        url = stack.wiki_url(0) + "/wiki"
        for _ in range(3):
            page = await b.get(url, follow_redirects=False)
            if urlsplit(url).path == "/oauth2/sso/authorize":
                break
            url = urljoin(url, page.location or "")
        assert urlsplit(url).path == "/oauth2/sso/authorize" and "code=" in (page.location or ""), b.history
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert "no-store" in page.headers["Cache-Control"]


async def test_a_handoff_whose_sign_in_ended_before_its_callback_is_refused(stack: SsoStack) -> None:
    async with browser() as b:
        await sign_in_on_app(stack, b, "alice")
        callback = await handoff_callback(b, stack)
        signed_out = await b.get(stack.app_url(0) + "/oauth2/sign_out", follow_redirects=False)
        assert signed_out.status == 302

        page = await b.get(callback, follow_redirects=False)
        assert page.status == 400 and "no longer valid" in page.text
        assert not await alive(b, stack.wiki_url(0) + "/wiki")
    await logged_line(stack, "sso handoff: the sign-in ended meanwhile")


async def test_a_new_handoff_ends_the_link_the_browser_held_before(stack: SsoStack) -> None:
    async with browser() as b:
        await sign_in_on_app(stack, b, "alice")
        assert (await b.get(stack.wiki_url(0) + "/wiki")).status == 200
        before = b.cookies.get(COOKIE, WIKI_HOST)
        assert before
        page = await b.get(stack.wiki_url(0) + "/oauth2/start?rd=/wiki")  # a second handoff
        assert page.status == 200 and upstream_seen(page)["x-forwarded-user"] == "alice"
        after = b.cookies.get(COOKIE, WIKI_HOST)
        assert after and after != before
    assert await status_with_cookie(stack.wiki_url(0) + "/wiki", before) == 401
    assert await status_with_cookie(stack.wiki_url(0) + "/wiki", after) == 200


async def test_sign_in_on_a_host_that_is_not_configured_is_refused(stack: SsoStack) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            stack.app_url(0) + "/oauth2/start?rd=/x",
            headers={"Host": "evil.example.com", "Accept": "text/html"},
            allow_redirects=False,
        ) as answer,
    ):
        assert answer.status == 400 and "Location" not in answer.headers
        assert "server.sso_origins" in await answer.text()


async def signed_in_on_both(stack: SsoStack, b: ScriptedBrowser, user: str) -> tuple[str, str]:
    """Signed in as ``user`` on the app (replica 0), then on the wiki by the handoff: each domain's cookie."""
    await sign_in_on_app(stack, b, user, replica=0)
    assert (await b.get(stack.wiki_url(0) + "/wiki")).status == 200
    app_cookie, wiki_cookie = b.cookies.get(COOKIE, APP_HOST), b.cookies.get(COOKIE, WIKI_HOST)
    assert app_cookie and wiki_cookie
    return app_cookie, wiki_cookie


async def test_a_cookie_of_one_domain_opens_nothing_on_the_other(stack: SsoStack) -> None:
    async with browser() as b:
        app_cookie, wiki_cookie = await signed_in_on_both(stack, b, "alice")
        assert await status_with_cookie(stack.app_url(0) + "/app", wiki_cookie) == 401
        assert await status_with_cookie(stack.wiki_url(0) + "/wiki", app_cookie) == 401
        assert await status_with_cookie(stack.wiki_url(1) + "/wiki", wiki_cookie) == 200


async def _forward_auth(stack: SsoStack, cookie: str, forwarded_host: str | None) -> tuple[int, str | None]:
    """``/oauth2/auth`` asked as Traefik's forwardAuth asks: the proxy's own address as Host."""
    headers = {"Cookie": f"{COOKIE}={cookie}", "X-Forwarded-Method": "GET"}
    if forwarded_host is not None:
        headers["X-Forwarded-Host"] = forwarded_host
    async with aiohttp.ClientSession() as http, http.get(stack.app_url(0) + "/oauth2/auth", headers=headers) as answer:
        return answer.status, answer.headers.get("X-Auth-Request-User")


async def test_forward_auth_judges_the_origin_a_trusted_proxy_names_in_x_forwarded_host(stack: SsoStack) -> None:
    async with browser() as b:
        app_cookie, wiki_cookie = await signed_in_on_both(stack, b, "alice")
    wiki = f"{WIKI_HOST}:{stack.ports[0]}"
    assert await _forward_auth(stack, wiki_cookie, wiki) == (202, "alice")
    # each cookie only for its own origin, whichever host the check itself was sent to
    assert (await _forward_auth(stack, wiki_cookie, None))[0] == 401
    assert (await _forward_auth(stack, app_cookie, wiki))[0] == 401
    assert await _forward_auth(stack, app_cookie, f"{APP_HOST}:{stack.ports[0]}") == (202, "alice")


# ---------------------------------------------------------------------------------------------- single logout


async def test_sign_out_on_the_wiki_ends_the_app_on_every_replica(stack: SsoStack) -> None:
    async with browser() as b:
        app_cookie, wiki_cookie = await signed_in_on_both(stack, b, "alice")

        page = await b.get(stack.wiki_url(1) + "/oauth2/sign_out", follow_redirects=False)
        assert page.status == 302 and (page.location or "").startswith(stack.op.issuer)

        for replica in (0, 1):
            # the server-side session ended: not even the old cookies, replayed, open anything
            assert await status_with_cookie(stack.app_url(replica) + "/app", app_cookie) == 401
            assert await status_with_cookie(stack.wiki_url(replica) + "/wiki", wiki_cookie) == 401
            assert not await alive(b, stack.app_url(replica) + "/app")
    await logged_line(stack, '"event":"logout"')


def _discovery(issuer: str) -> dict[str, Any]:
    with urllib.request.urlopen(issuer + "/.well-known/openid-configuration", timeout=5) as answer:
        metadata: dict[str, Any] = json.load(answer)
    return metadata


async def test_back_channel_logout_from_the_provider_ends_both_domains_on_every_replica(stack: SsoStack) -> None:
    op = stack.op
    async with browser() as b, browser() as other:
        await sign_in_on_app(stack, b, "carol")
        assert (await b.get(stack.wiki_url(0) + "/wiki")).status == 200
        await sign_in_on_app(stack, other, "carol")  # another provider session of the same user
        assert (await other.get(stack.wiki_url(0) + "/wiki")).status == 200
        op.reset_counters()

        # the user signs out at the provider itself, not through the proxy
        end_session = _discovery(op.issuer)["end_session_endpoint"]
        confirm = await b.get(end_session + "?client_id=" + op.client("basic")["client_id"])
        await confirm_node_provider_logout(b, confirm)

        counters = op.counters()
        assert (counters["backchannel_logouts"], counters["backchannel_errors"]) == (1, 0), op.logs()
        for replica in (0, 1):
            assert not await alive(b, stack.app_url(replica) + "/app")
            assert not await alive(b, stack.wiki_url(replica) + "/wiki")
            # the other provider session (another sid) was not part of this logout
            assert await alive(other, stack.app_url(replica) + "/app")
            assert await alive(other, stack.wiki_url(replica) + "/wiki")


async def test_the_handoff_endpoints_count_in_the_sign_in_rate_limit(tmp_path: Path) -> None:
    with sso_stack(tmp_path, replicas=1, auth_per_minute=3) as limited:
        authorize = limited.central + "/oauth2/sso/authorize?" + urlencode({"origin": limited.wiki, "state": "s"})
        callback = limited.wiki + "/oauth2/sso/callback?code=x&state=y"
        async with aiohttp.ClientSession() as http:
            statuses = []
            for url in (authorize, callback, authorize, callback):
                async with http.get(url, allow_redirects=False) as answer:
                    statuses.append(answer.status)
        assert statuses == [302, 400, 302, 429]
