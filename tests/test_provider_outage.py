"""Provider outages (SPEC sections 3 and 5): sessions survive, sign-ins fail clearly, recovery is automatic.

The development provider runs on 127.0.0.2 behind a listener the tests stop and start again on
the same port; authproxy runs as a subprocess. While the provider is unreachable:

- sessions whose access token is still valid keep working, refreshes that are due are retried
  later (the request proceeds on the valid token, else 503 with Retry-After, session kept);
- a sign-in that needs the provider gets a short 503 page, never a traceback or a redirect loop;
- /readyz tells which part is missing.

A proxy started while the provider is down serves (healthz), reports not ready, and becomes
ready and able to sign people in once the provider appears, without a restart.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.logs import logged_line
from tests.support.ops import JSON, OpsStack, json_records, login, readiness, start_ops_stack, upstream_seen
from tests.support.scripted_browser import Page, login_demo

HTML = {"Accept": "text/html"}


def assert_clear_503(page: Page, *, html: bool, retry_after: bool = True) -> None:
    assert page.status == 503, page
    if retry_after:
        assert page.headers.get("Retry-After"), page.headers
    assert "Traceback" not in page.text
    if html:
        assert page.headers["Content-Type"].startswith("text/html")
        assert "identity provider" in page.text.lower() or "try again" in page.text.lower()
    else:
        assert page.json()["error"] in ("provider_unavailable", "provider_error"), page.text


def assert_proxy_healthy(stack: OpsStack) -> None:
    assert stack.proxy.process.poll() is None
    records = json_records(stack.proxy.logs())
    assert not [r for r in records if r["level"] in ("error", "critical") or "Traceback" in r.get("error", "")]


async def wait_ready(stack: OpsStack, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await readiness(stack.admin_url)
        if status == 200 or time.monotonic() > deadline:
            assert status == 200, body
            return dict(body["checks"])
        await asyncio.sleep(0.1)


async def test_sessions_keep_working_and_sign_ins_fail_clearly_while_the_provider_is_down(tmp_path: Path) -> None:
    with start_ops_stack(tmp_path) as stack:
        async with stack.browser() as signed_in, stack.browser() as midway:
            assert upstream_seen(await login(signed_in, stack, "/app/x"))["x-forwarded-user"] == "alice"
            # another browser is at the provider's login page when the provider goes away
            start = await midway.get(f"{stack.url}/oauth2/start?rd=/app/y", follow_redirects=False)
            login_page = await midway.get(start.location or "")
            form = login_page.find_form(lambda f: f.button(("username", "bob")) is not None)
            answer = await midway.submit(login_page, form, button=("username", "bob"), follow_redirects=False)
            callback = answer.location or ""
            assert "/oauth2/callback?" in callback

            stack.provider_server.stop()
            for i in range(3):
                page = await signed_in.get(f"{stack.url}/app/during{i}", headers=JSON)
                assert page.status == 200 and upstream_seen(page)["x-forwarded-user"] == "alice"
            status, body = await readiness(stack.admin_url)
            # provider metadata stays loaded: taking every replica out of service would also
            # cut off the sessions that still work
            assert status == 200 and body["checks"] == {"provider": "ok", "session_store": "ok"}

            # the code cannot be exchanged: a clear 503 with a link to start again (the flow state
            # is spent, so this URL itself is not worth retrying: no Retry-After needed), no session
            page = await midway.get(callback, headers=HTML)
            assert_clear_503(page, html=True, retry_after=False)
            assert "/oauth2/start" in page.text
            assert midway.cookies.get("authproxy_session", "127.0.0.1") is None

            stack.provider_server.start()
            page = await login_demo(midway, f"{stack.url}/oauth2/start?rd=/app/after", "bob")
            assert page.status == 200 and upstream_seen(page)["x-forwarded-user"] == "bob"
        assert_proxy_healthy(stack)


async def test_due_refresh_waits_for_the_provider_and_keeps_the_session(tmp_path: Path) -> None:
    ttl = 2  # the provider's access tokens; always due for refresh (refresh_before_expiry 60 s)
    config = {"session": {"refresh_before_expiry": "60s"}}
    with start_ops_stack(tmp_path, config=config, access_token_ttl=ttl) as stack:
        async with stack.browser() as b:
            page = await login(b, stack, "/app/x")
            refreshed_at = time.monotonic()  # the redirect to /app/x refreshed the tokens
            assert page.status == 200
            stack.provider_server.stop()
            # refresh fails, but the access token is still valid: the request proceeds
            page = await b.get(f"{stack.url}/app/valid", headers=JSON)
            assert time.monotonic() - refreshed_at < ttl - 0.5, "too slow to test the valid-token case"
            assert page.status == 200 and upstream_seen(page)["x-forwarded-user"] == "alice"
            await asyncio.sleep(max(0.0, refreshed_at + ttl + 1.1 - time.monotonic()))
            # expired and not refreshable: 503 with Retry-After, for browsers and APIs alike
            assert_clear_503(await b.get(f"{stack.url}/app/expired", headers=JSON), html=False)
            assert_clear_503(await b.get(f"{stack.url}/app/expired", headers=HTML), html=True)
            # the session was kept: once the provider is back, the same cookie works again
            stack.provider_server.start()
            page = await b.get(f"{stack.url}/app/back", headers=JSON)
            assert page.status == 200 and upstream_seen(page)["x-forwarded-user"] == "alice"
        await logged_line(stack.proxy, '"event":"refresh"', '"result":"unavailable"')
        assert_proxy_healthy(stack)


async def test_proxy_started_while_the_provider_is_down_becomes_ready_without_a_restart(tmp_path: Path) -> None:
    with start_ops_stack(tmp_path, provider_up=False) as stack:
        status, body = await readiness(stack.admin_url)
        assert status == 503 and body["ready"] is False
        assert body["checks"]["provider"] != "ok" and body["checks"]["session_store"] == "ok"

        async with stack.browser() as b:
            assert_clear_503(await b.get(f"{stack.url}/oauth2/start?rd=/app/x", headers=HTML), html=True)
            assert_clear_503(await b.get(f"{stack.url}/oauth2/start?rd=/app/x", headers=JSON), html=False)
            # a browser sent to sign in lands on that page, not in a loop or at a dead address
            page = await b.get(f"{stack.url}/app/x")
            assert_clear_503(page, html=True)
            assert len(page.history) == 2 and urlsplit(page.url).path == "/oauth2/start"
            assert (await b.get(f"{stack.url}/app/x", headers=JSON)).status == 401
            assert (await b.get(f"{stack.url}/public/x")).status == 200

        stack.provider_server.start()
        checks = await wait_ready(stack, timeout=10)
        assert checks == {"provider": "ok", "session_store": "ok"}
        async with stack.browser() as b:
            page = await login(b, stack, "/app/x")
            assert page.status == 200 and upstream_seen(page)["x-forwarded-user"] == "alice"
        records = json_records(stack.proxy.logs())
        assert [r for r in records if r["msg"].startswith("provider discovery failed")]
        assert_proxy_healthy(stack)
