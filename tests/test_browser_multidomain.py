"""Two apps on two host names share one sign-in, in a real browser (docs/multi-domain.md).

Headless Debian ``chromium`` through Playwright against ``authproxy demo``, whose echo app is at
``http://127.0.0.1:PORT`` (the authenticating origin) and again, as a second app, at
``http://localhost:PORT`` (an SSO origin: another host name, so cookies of its own). A person
signs in once at the provider, opens the second app without seeing the provider again, and signs
out there, which signs them out of the first too. Screenshots go to
``test-artifacts/browser/<test>/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Final

from tests.support.browser import Artifacts, run_demo, starts_with

if TYPE_CHECKING:
    from playwright.async_api import Page

COOKIE: Final = "authproxy_session"


async def identity(page: Page, header: str) -> str:
    row = page.locator("section.identity tr").filter(has=page.locator("th", has_text=re.compile(f"^{header}$", re.I)))
    return (await row.locator("td").inner_text()).strip()


async def test_one_sign_in_for_two_host_names_and_one_sign_out_for_both(
    page: Page, artifacts: Artifacts, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    with run_demo(tmp_path / "demo") as demo:
        wiki = demo.url.replace("127.0.0.1", "localhost")

        # 1. the first app sends the visitor to the provider, who signs in once
        await page.goto(demo.url + "/reports")
        await expect(page).to_have_url(starts_with(demo.provider_url + "/"))
        await page.get_by_role("button", name=re.compile(r"^Carol")).click()
        await expect(page).to_have_url(demo.url + "/reports")
        assert await identity(page, "X-Forwarded-User") == "carol"
        await artifacts.screenshot(page, "first-app-signed-in")

        # 2. the second host name opens straight away: no provider page on the way
        visited: list[str] = []
        page.on("framenavigated", lambda frame: visited.append(frame.url) if frame == page.main_frame else None)
        await page.goto(wiki + "/notes?id=7")
        await expect(page).to_have_url(wiki + "/notes?id=7")
        await expect(page.get_by_role("heading", name="GET /notes")).to_be_visible()
        assert await identity(page, "X-Forwarded-User") == "carol"
        assert not [url for url in visited if url.startswith(demo.provider_url)], visited
        # each host name holds a session cookie of its own, HttpOnly, host-only
        first = [c for c in await page.context.cookies(demo.url) if c["name"] == COOKIE]
        second = [c for c in await page.context.cookies(wiki) if c["name"] == COOKIE]
        assert len(first) == len(second) == 1 and first[0]["value"] != second[0]["value"]
        assert second[0]["httpOnly"] is True and second[0]["domain"] == "localhost"
        await artifacts.screenshot(page, "second-app-signed-in-without-a-second-login")

        # 3. signing out on the second app ends the first app's session too
        await page.goto(wiki + "/oauth2/sign_out")
        await page.goto(demo.url + "/reports")
        await expect(page).to_have_url(starts_with(demo.provider_url + "/"))
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await artifacts.screenshot(page, "first-app-asks-for-a-login-again")
