"""The token lifecycle end to end (SPEC section 5 "Refresh", section 3 sign-out) through real proxies.

With the certified oidc-provider (access tokens live 5 s, every refresh rotates the refresh
token, and a reused one revokes the whole grant, so any double refresh logs the user out): two
proxy processes on one Redis keep a user signed in for half a minute with each refresh done
exactly once; 20 concurrent requests after expiry cause exactly one refresh grant; sign-out
revokes the grant and ends the provider session. With the development provider's faults: a
refused refresh ends the session (login redirect for browsers, 401 for APIs), and an unreachable
token endpoint is a 503 with ``Retry-After`` once the access token has expired, until it returns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.logout import (
    COOKIE,
    SIGNED_OUT_PATH,
    Stack,
    browser,
    fault_stack,
    log_in,
    node_stack,
    session_cookie,
    status_with_cookie,
    upstream_seen,
    xhr,
)
from tests.support.scripted_browser import Page, confirm_node_provider_logout

ACCESS_TOKEN_TTL = 5
REFRESH_BEFORE_EXPIRY = 2
KEEP_ALIVE_SECONDS = 30.0


@pytest.fixture(scope="module")
def op_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with node_stack(
        tmp_path_factory.mktemp("lifecycle-op"),
        replicas=2,
        access_token_ttl=ACCESS_TOKEN_TTL,
        session_options={"refresh_before_expiry": f"{REFRESH_BEFORE_EXPIRY}s"},
    ) as started:
        yield started


# ---------------------------------------------------------------------------------------------- oidc-provider


async def test_user_stays_signed_in_across_refreshes_each_done_once(op_stack: Stack) -> None:
    op = op_stack.op
    async with browser() as b:
        await log_in(op_stack, "alice", b)
        op.reset_counters()
        tokens: list[str] = []
        id_tokens: set[str] = set()
        requests = 0
        deadline = time.monotonic() + KEEP_ALIVE_SECONDS
        while time.monotonic() < deadline:
            proxy = op_stack.proxies[requests % 2]  # alternate replicas
            requests += 1
            page = await xhr(b, proxy.url + "/app")
            assert page.status == 200, (requests, page.status, page.text)
            seen = upstream_seen(page)
            assert seen["x-forwarded-user"] == "alice"
            if not tokens or tokens[-1] != seen["authorization"]:
                tokens.append(seen["authorization"])
            id_tokens.add(seen["x-forwarded-id-token"])
            await asyncio.sleep(0.2)
    counters = op.counters()
    # a refresh is due every ACCESS_TOKEN_TTL - REFRESH_BEFORE_EXPIRY seconds: about ten of them
    assert len(tokens) - 1 >= KEEP_ALIVE_SECONDS / ACCESS_TOKEN_TTL
    assert len(set(tokens)) == len(tokens)  # never back to an older token
    # every refresh grant produced the token the proxies then used: none twice, none wasted,
    # and no reuse of a rotated refresh token (which would have revoked the grant)
    assert counters["refresh_grants"] == len(tokens) - 1
    assert counters["grant_revocations"] == 0
    # each refresh's new ID token passed the checks of Core 1.0 section 12.2 and was kept
    assert len(id_tokens) == len(tokens)


async def test_concurrent_requests_after_expiry_on_two_replicas_refresh_once(op_stack: Stack) -> None:
    op = op_stack.op
    async with browser() as b:
        _, seen = await log_in(op_stack, "bob", b)
        await asyncio.sleep(ACCESS_TOKEN_TTL + 0.5)  # the access token has expired
        op.reset_counters()
        pages = await asyncio.gather(*(xhr(b, op_stack.proxies[i % 2].url + "/app") for i in range(20)))
        assert [page.status for page in pages] == [200] * 20
        refreshed = {upstream_seen(page)["authorization"] for page in pages}
        assert len(refreshed) == 1 and seen["authorization"] not in refreshed
        assert op.counters()["refresh_grants"] == 1
        # and the user remains signed in, on the refreshed tokens
        for proxy in op_stack.proxies:
            page = await xhr(b, proxy.url + "/app")
            assert page.status == 200 and upstream_seen(page)["authorization"] in refreshed
    counters = op.counters()
    assert (counters["refresh_grants"], counters["grant_revocations"]) == (1, 0)


async def test_sign_out_through_oidc_provider(op_stack: Stack) -> None:
    op = op_stack.op
    async with browser() as b:
        _, seen = await log_in(op_stack, "carol", b)
        cookie = session_cookie(b)
        assert cookie is not None
        op.reset_counters()
        answer = await b.get(op_stack.proxies[1].url + "/oauth2/sign_out", follow_redirects=False)
        assert answer.status == 302
        query = parse_qs(urlsplit(answer.location or "").query)
        assert query == {
            "id_token_hint": [seen["x-forwarded-id-token"]],
            "client_id": [op.client("basic")["client_id"]],
            "post_logout_redirect_uri": [op_stack.public_url + SIGNED_OUT_PATH],
        }
        assert op.counters()["revocations"] == 1  # RFC 7009, authenticated with client_secret_basic
        for proxy in op_stack.proxies:
            assert await status_with_cookie(proxy.url + "/app", cookie) == 401
        # oidc-provider accepts the hint, asks for confirmation, ends its session and sends the
        # browser to the registered post-logout URI, where a new visit needs a new login
        confirm = await b.get(answer.location or "")
        landed = await confirm_node_provider_logout(b, confirm)
        assert (302, op_stack.public_url + SIGNED_OUT_PATH) in landed.history
        assert landed.find_form(lambda form: form.field("prompt") == "login") is not None
    counters = op.counters()
    assert counters["end_sessions"] == 1
    # its back-channel call for the same session found it already ended, and was answered 200
    assert (counters["backchannel_logouts"], counters["backchannel_errors"]) == (1, 0)


# ---------------------------------------------------------------------------------------------- provider faults

FAULT_TTL = 3  # access tokens of the development provider
FAULT_BEFORE = 2  # refresh_before_expiry: due 1 s after issue, expired 3 s after


@pytest.fixture(scope="module")
def fault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fault_stack(
        tmp_path_factory.mktemp("lifecycle-fault"),
        access_token_ttl=FAULT_TTL,
        session_options={"refresh_before_expiry": f"{FAULT_BEFORE}s"},
    ) as started:
        yield started


async def test_invalid_grant_on_refresh_ends_the_session(fault: Stack) -> None:
    async with browser() as navigating, browser() as api:
        await log_in(fault, "bob", navigating)
        await log_in(fault, "bob", api)
        await asyncio.sleep(FAULT_TTL - FAULT_BEFORE + 0.2)  # a refresh is due
        fault.fault.set_fault("invalid_grant_on_refresh")
        try:
            page = await navigating.get(fault.url + "/app?x=1", follow_redirects=False)
            assert page.status == 302 and (page.location or "").startswith("/oauth2/start?rd=/app")
            page = await xhr(api, fault.url + "/app")
            assert page.status == 401 and page.json()["error"] == "unauthenticated"
        finally:
            fault.fault.set_fault(None)
        # deleted, not refused once: with the provider well again, both sessions stay ended
        assert (await xhr(navigating, fault.url + "/app")).status == 401
        assert (await xhr(api, fault.url + "/app")).status == 401


async def test_token_endpoint_down_is_503_once_the_access_token_expired_then_recovers(fault: Stack) -> None:
    async with browser() as b:
        _, seen = await log_in(fault, "alice", b)
        await asyncio.sleep(FAULT_TTL - FAULT_BEFORE + 0.2)  # due, still valid
        fault.fault.set_fault("token_endpoint_down")
        try:
            page = await xhr(b, fault.url + "/app")
            assert page.status == 200  # the refresh failed, but the access token still serves
            assert upstream_seen(page)["authorization"] == seen["authorization"]
            await asyncio.sleep(FAULT_BEFORE + 0.3)  # now expired
            page = await xhr(b, fault.url + "/app")
            assert page.status == 503 and int(page.headers["Retry-After"]) > 0
            navigation = await b.get(fault.url + "/app", follow_redirects=False)
            assert navigation.status == 503  # not a login redirect: the session is kept
        finally:
            fault.fault.set_fault(None)
        page = await xhr(b, fault.url + "/app")
        assert page.status == 200 and upstream_seen(page)["authorization"] != seen["authorization"]


# ---------------------------------------------------------------------------------------------- fresh connections
#
# A plain GET with a session cookie is the fast path's to serve (authproxy/fast_path.py), on the
# browser's own connection (its sign-in stays on the fast path too) as on a fresh one. These
# repeat the refresh outcomes for a browser that carries nothing but the session cookie.


async def _fresh_connection(url: str, cookie: str, requests: int = 1) -> list[Page]:
    """``requests`` API calls, one after the other, from a new browser carrying only ``cookie``."""
    async with browser() as other:
        other.cookies.receive(url, [f"{COOKIE}={cookie}; Path=/"])
        return [await xhr(other, url) for _ in range(requests)]


async def _cookie_with_a_refresh_due(fault: Stack, user: str) -> tuple[str, dict[str, str]]:
    """``user``'s session cookie, once a refresh of its access token is due, and what the upstream saw at sign-in."""
    async with browser() as b:
        _, seen = await log_in(fault, user, b)
        cookie = session_cookie(b)
        assert cookie is not None
    await asyncio.sleep(FAULT_TTL - FAULT_BEFORE + 0.2)
    return cookie, seen


async def test_a_refresh_due_on_a_fresh_connection_is_done_once_and_its_tokens_kept(fault: Stack) -> None:
    cookie, seen = await _cookie_with_a_refresh_due(fault, "alice")
    pages = await _fresh_connection(fault.url + "/app", cookie, requests=3)
    assert [page.status for page in pages] == [200, 200, 200]
    tokens = {upstream_seen(page)["authorization"] for page in pages}
    assert len(tokens) == 1 and seen["authorization"] not in tokens  # refreshed once, then reused


async def test_a_refresh_refused_on_a_fresh_connection_ends_the_session(fault: Stack) -> None:
    cookie, _ = await _cookie_with_a_refresh_due(fault, "bob")
    fault.fault.set_fault("invalid_grant_on_refresh")
    try:
        (page,) = await _fresh_connection(fault.url + "/app", cookie)
        assert page.status == 401 and page.json()["error"] == "unauthenticated"
    finally:
        fault.fault.set_fault(None)
    assert await status_with_cookie(fault.url + "/app", cookie, navigation=True) == 302  # to the login


async def test_a_token_endpoint_outage_on_a_fresh_connection_is_503_once_the_token_expired(fault: Stack) -> None:
    cookie, seen = await _cookie_with_a_refresh_due(fault, "alice")
    fault.fault.set_fault("token_endpoint_down")
    try:
        (page,) = await _fresh_connection(fault.url + "/app", cookie)
        assert page.status == 200 and upstream_seen(page)["authorization"] == seen["authorization"]
        await asyncio.sleep(FAULT_BEFORE + 0.3)  # now expired
        (page,) = await _fresh_connection(fault.url + "/app", cookie)
        assert page.status == 503 and int(page.headers["Retry-After"]) > 0
    finally:
        fault.fault.set_fault(None)
    (page,) = await _fresh_connection(fault.url + "/app", cookie)
    assert page.status == 200 and upstream_seen(page)["authorization"] != seen["authorization"]
