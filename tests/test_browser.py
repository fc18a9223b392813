"""A newcomer's first minutes, in a real browser (issue: newcomer experience).

Headless Debian ``chromium`` driven by Playwright (tests/support/browser.py) does what a person
does: opens the app, is sent to the provider's login page, signs in, sees the upstream page with
the identity authproxy vouched for, signs out (to authproxy's "signed out" page), and is asked to
log in again, since sign-out also ends the provider's single sign-on session (SPEC section 3,
``/oauth2/sign_out``). Once with ``authproxy demo`` (its development provider), once through the
real ``oidc-provider`` (npm) login form in front of the demo's echo app. The demo run ends on
authproxy's own error page (a forged callback), so that page is looked at too. Each step leaves a screenshot in
``test-artifacts/browser/<test>/``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from authproxy.demo.echo import create_echo_app
from tests.support.browser import Artifacts, run_demo, starts_with
from tests.support.fault_provider import serve_app
from tests.support.net import free_port
from tests.support.node_provider import NodeProvider
from tests.support.proxy_process import ProxyProcess

if TYPE_CHECKING:
    from playwright.async_api import Page

COOKIE: Final = "authproxy_session"
SECRET: Final = "browser-test-session-secret-0123456789abcdef"


async def session_cookies(page: Page, url: str) -> list[dict[str, Any]]:
    return [dict(cookie) for cookie in await page.context.cookies(url) if cookie["name"] == COOKIE]


async def expect_identity(page: Page, header: str, value: str) -> None:
    """The echo page's "Set by authproxy" table has ``header`` with exactly ``value``."""
    from playwright.async_api import expect

    row = page.locator("section.identity tr").filter(has=page.locator("th", has_text=re.compile(f"^{header}$", re.I)))
    await expect(row.locator("td")).to_have_text(value)


async def expect_signed_in_as(page: Page, proxy_url: str, user: str, email: str) -> None:
    """The upstream page shows the identity, and the session cookie is what SPEC section 5 says."""
    await expect_identity(page, "X-Forwarded-User", user)
    await expect_identity(page, "X-Forwarded-Email", email)
    cookies = await session_cookies(page, proxy_url)
    assert len(cookies) == 1, cookies
    assert cookies[0]["httpOnly"] is True
    assert cookies[0]["sameSite"] == "Lax"
    assert cookies[0]["path"] == "/"
    # the upstream sees neither the session cookie nor its value (and so cannot leak it)
    assert cookies[0]["value"] not in await page.content()


# ------------------------------------------------------------------------------------------ the demo


async def test_demo_login_identity_sign_out_and_login_again(page: Page, artifacts: Artifacts, tmp_path: Path) -> None:
    from playwright.async_api import expect

    with run_demo(tmp_path / "demo") as demo:
        # 1. a browser navigation without a session ends on the provider's login page
        await page.goto(demo.url + "/dashboard?tab=2")
        await expect(page).to_have_url(starts_with(demo.provider_url + "/"))
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await expect(page.get_by_text("Development provider: not for production")).to_be_visible()
        await artifacts.screenshot(page, "demo-provider-login-page")

        # 2. signing in lands on the page first asked for, with the identity headers shown
        await page.get_by_role("button", name=re.compile(r"^Bob Builder")).click()
        await expect(page).to_have_url(demo.url + "/dashboard?tab=2")
        await expect(page.get_by_role("heading", name="GET /dashboard")).to_be_visible()
        await expect_signed_in_as(page, demo.url, "bob", "bob@example.com")
        await expect_identity(page, "X-Forwarded-Groups", "developers")
        # the page explains what the session holds, read from /oauth2/userinfo (never a token)
        session = page.locator("#session")
        await expect(session).to_contain_text("session ends if unused at")
        await expect(session).to_contain_text("bob@example.com")
        await artifacts.screenshot(page, "demo-upstream-signed-in")

        # 3. signing out ends both sessions and lands on authproxy's "signed out" page (not on a
        #    protected path that would start a new login at once); signing in again asks for a login
        await page.get_by_role("link", name="Sign out").click()
        await expect(page).to_have_url(demo.url + "/oauth2/signed_out")
        await expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
        assert await session_cookies(page, demo.url) == []
        await artifacts.screenshot(page, "demo-after-sign-out")
        await page.get_by_role("link", name="Sign in again").click()
        await expect(page).to_have_url(starts_with(demo.provider_url + "/"))
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

        # 4. opening the app again asks for a login (no silent single sign-on as bob) ...
        await page.goto(demo.url + "/dashboard")
        await expect(page).to_have_url(starts_with(demo.provider_url + "/"))
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        # ... and whoever signs in next is who the upstream sees
        await page.get_by_role("button", name=re.compile(r"^Alice Admin")).click()
        await expect(page).to_have_url(demo.url + "/dashboard")
        await expect_signed_in_as(page, demo.url, "alice", "alice@example.com")
        await artifacts.screenshot(page, "demo-upstream-signed-in-again")

        # 5. a forged callback gets authproxy's own error page: a reason, a way on, no traceback
        response = await page.goto(demo.url + "/oauth2/callback?state=forged&code=forged")
        assert response is not None and response.status == 400
        await expect(page.get_by_role("heading", name="This sign-in link is no longer valid")).to_be_visible()
        await expect(page.get_by_text("Request ID")).to_be_visible()
        await artifacts.screenshot(page, "demo-forged-callback-error-page")


# -------------------------------------------------------------------------- the real oidc-provider


async def sign_in_at_oidc_provider(page: Page, login: str) -> None:
    """oidc-provider's devInteractions: the login form, then the consent form when it asks."""
    from playwright.async_api import expect

    await page.locator('input[name="login"]').fill(login)
    await page.locator('input[name="password"]').fill("any-password")
    await page.get_by_role("button", name="Sign-in").click()
    consent = page.get_by_role("button", name="Continue")
    # the consent page appears once per grant; after it, the browser leaves the provider
    await expect(consent.or_(page.locator("section.identity"))).to_be_visible()
    if await consent.is_visible():
        await consent.click()


async def test_oidc_provider_login_form_identity_sign_out_and_login_again(
    page: Page,
    artifacts: Artifacts,
    node_provider: Callable[..., NodeProvider],
    run_proxy: Callable[..., ProxyProcess],
) -> None:
    from playwright.async_api import expect

    port = free_port()
    proxy_url = f"http://127.0.0.1:{port}"
    op = node_provider(
        redirect_uris=[proxy_url + "/oauth2/callback"],
        post_logout_redirect_uris=[proxy_url + "/"],
    )
    client = op.client("basic")
    with serve_app(create_echo_app()) as echo_url:
        run_proxy(
            {
                "server": {"listen": f"127.0.0.1:{port}", "public_url": proxy_url},
                "provider": {
                    "issuer": op.issuer,
                    "client_id": client["client_id"],
                    "client_secret": client["client_secret"],
                    "post_logout_redirect_uri": proxy_url + "/",
                    # oidc-provider releases the groups claim for the groups scope only
                    "scopes": ["openid", "profile", "email", "groups"],
                },
                "session": {"secrets": [SECRET], "cookie": {"secure": False}},
                "routes": [{"name": "app", "upstream": echo_url}],
            }
        )

        # 1. to oidc-provider's own login form (on 127.0.0.2: cookies apart from the proxy's)
        await page.goto(proxy_url + "/reports?year=2025")
        await expect(page).to_have_url(starts_with(op.issuer + "/"))
        await expect(page.locator('input[name="login"]')).to_be_visible()
        await artifacts.screenshot(page, "oidc-provider-login-form")

        # 2. sign in (and consent): back on the page first asked for, as alice
        await sign_in_at_oidc_provider(page, "alice")
        await expect(page).to_have_url(proxy_url + "/reports?year=2025")
        await expect_signed_in_as(page, proxy_url, "alice", "alice@example.com")
        await expect_identity(page, "X-Forwarded-Groups", "admins,developers")
        await artifacts.screenshot(page, "oidc-provider-upstream-signed-in")

        # 3. sign out: oidc-provider asks to confirm its own sign-out (RP-Initiated Logout 1.0)
        await page.get_by_role("link", name="Sign out").click()
        await expect(page).to_have_url(starts_with(op.issuer + "/"))
        confirm = page.get_by_role("button", name="Yes, sign me out")
        await expect(confirm).to_be_visible()
        await artifacts.screenshot(page, "oidc-provider-sign-out-confirmation")
        await confirm.click()

        # 4. back through post_logout_redirect_uri to the app, which asks for a login again
        await expect(page).to_have_url(starts_with(op.issuer + "/"))
        await expect(page.locator('input[name="login"]')).to_be_visible()
        assert await session_cookies(page, proxy_url) == []
        await artifacts.screenshot(page, "oidc-provider-login-form-again")
        await page.goto(proxy_url + "/reports")
        await expect(page.locator('input[name="login"]')).to_be_visible()
    assert op.counters()["code_grants"] == 1
    assert op.counters()["end_sessions"] == 1
