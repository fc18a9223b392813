"""Protecting legacy apps, in real Chromium: the cross-origin guard, kept forms, the account pages.

Headless Debian ``chromium`` through Playwright (tests/support/browser.py). The proxy runs as
``authproxy run`` on ``http://127.0.0.1:<port>`` with the development provider on 127.0.0.2 and
the demo's echo app upstream (it lists the form fields it receives). The "other site" is a page
served on ``http://localhost:<port>``: another origin and another site for the browser, so the
headers it sends (``Sec-Fetch-Site: cross-site``, ``Origin: http://localhost:...``) are the real
ones, not ours. Screenshots go to ``test-artifacts/browser/<test>/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest
from aiohttp import web

from authproxy.demo.echo import create_echo_app
from authproxy.demo.provider import DemoClient, DemoProvider
from authproxy.sessions.ticket import new_ticket, seal_ticket
from tests.support.browser import Artifacts, run_demo
from tests.support.fault_provider import CLIENT_ID, CLIENT_SECRET, PROVIDER_HOST, serve_app
from tests.support.logs import logs_with
from tests.support.net import free_port
from tests.support.proxy_process import ProxyProcess, start_proxy

if TYPE_CHECKING:
    from playwright.async_api import Page

COOKIE: Final = "authproxy_session"
SECRET: Final = "browser-legacy-session-secret-0123456789abcdef"


@dataclass
class Stack:
    proxy: ProxyProcess
    other_site: str  # http://localhost:<port>, serving the cross-site form

    @property
    def url(self) -> str:
        return self.proxy.url


def other_site_app(target: str) -> web.Application:
    """A page on another site with a form that posts to ``target`` (what a CSRF attack looks like)."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text=(
                "<!doctype html><title>other site</title><h1>Win a prize</h1>"
                f'<form method="post" action="{target}"><input name="amount" value="1000">'
                '<button type="submit">Claim</button></form>'
            ),
            content_type="text/html",
        )

    app = web.Application()
    app.router.add_get("/", page)
    return app


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    provider_port, port = free_port(PROVIDER_HOST), free_port()
    issuer = f"http://{PROVIDER_HOST}:{provider_port}"
    proxy_url = f"http://127.0.0.1:{port}"
    client = DemoClient(
        CLIENT_ID,
        CLIENT_SECRET,
        [proxy_url + "/oauth2/callback"],
        post_logout_redirect_uris=[proxy_url + "/oauth2/signed_out"],
    )
    other_port = free_port()
    with (
        serve_app(DemoProvider(issuer, [client]).create_app(), PROVIDER_HOST, provider_port),
        serve_app(create_echo_app()) as echo,
        serve_app(other_site_app(proxy_url + "/transfer"), "127.0.0.1", other_port),
    ):
        config: dict[str, Any] = {
            "server": {"listen": f"127.0.0.1:{port}", "public_url": proxy_url},
            "provider": {
                "issuer": issuer,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "post_logout_redirect_uri": proxy_url + "/oauth2/signed_out",
            },
            "session": {"secrets": [SECRET], "cookie": {"secure": False}},
            "routes": [
                {"name": "app", "upstream": echo, "csrf_protection": True, "preserve_post": True},
                {
                    "name": "admin",
                    "match": {"path_prefix": "/admin"},
                    "upstream": echo,
                    "allow": {"groups": ["admins"]},
                },
            ],
        }
        proxy = start_proxy(config, tmp_path_factory.mktemp("browser-legacy"))
        try:
            yield Stack(proxy, f"http://localhost:{other_port}")
        finally:
            proxy.kill()


async def sign_in(page: Page, url: str, who: str = "Bob Builder") -> None:
    """Open ``url``, pick ``who`` on the development provider's page, and land back on ``url``."""
    from playwright.async_api import expect

    await page.goto(url)
    await page.get_by_role("button", name=re.compile("^" + who)).click()
    await expect(page).to_have_url(url)


async def post_form_from(page: Page, action: str, fields: list[tuple[str, str]]) -> None:
    """Build a form in the current (same-origin) page and submit it, as the app's own form would."""
    await page.evaluate(
        """([action, fields]) => {
            const form = document.createElement('form');
            form.method = 'post';
            form.action = action;
            for (const [name, value] of fields) {
                const input = document.createElement(name === 'body' ? 'textarea' : 'input');
                input.name = name;
                input.value = value;
                form.appendChild(input);
            }
            document.body.appendChild(form);
            // a field named submit shadows form.submit, as in the app's own page
            HTMLFormElement.prototype.submit.call(form);
        }""",
        [action, fields],
    )


async def form_fields_shown(page: Page) -> list[tuple[str, str]]:
    rows = page.locator("section.form tr")
    return [
        (await row.locator("th").inner_text(), await row.locator("td").text_content() or "") for row in await rows.all()
    ]


async def expect_tidy_echo_layout(page: Page) -> None:
    """The echo page's tables: names on one line, values wrapped inside their cell, nothing overflowing."""
    layout = await page.evaluate(
        """() => {
            const lines = (el) => { const r = document.createRange(); r.selectNodeContents(el);
                return new Set([...r.getClientRects()].map((rect) => Math.round(rect.top))).size; };
            const names = [...document.querySelectorAll('th')];
            const wrappedNames = names.filter((th) => lines(th) > 1).map((th) => th.textContent);
            const overflowing = [...document.querySelectorAll('td')]
                .filter((td) => td.scrollWidth > td.clientWidth + 1).map((td) => td.textContent.slice(0, 40));
            const pageOverflow = document.documentElement.scrollWidth > window.innerWidth;
            return {count: names.length, wrappedNames, overflowing, pageOverflow};
        }"""
    )
    assert layout["count"] > 5 and not layout["wrappedNames"] and not layout["overflowing"], layout
    assert not layout["pageOverflow"], layout


# ------------------------------------------------------------------------------------ cross-origin guard


async def test_cross_site_form_post_from_another_origin_is_refused(
    page: Page, stack: Stack, artifacts: Artifacts
) -> None:
    from playwright.async_api import expect

    await sign_in(page, stack.url + "/account")
    await page.goto(stack.other_site + "/")
    async with page.expect_response(stack.url + "/transfer") as answer:
        await page.get_by_role("button", name="Claim").click()
    response = await answer.value
    assert response.status == 403
    # the headers were Chromium's own: a cross-site request from the localhost origin
    sent = await response.request.all_headers()
    assert sent["sec-fetch-site"] == "cross-site" and sent["origin"] == stack.other_site
    await expect(page.get_by_role("heading", name="Request refused")).to_be_visible()
    await artifacts.screenshot(page, "cross-site-post-refused")
    logs = await logs_with(stack.proxy, '"cross_origin_refused"', '"path":"/transfer"')
    refused = [json.loads(line) for line in logs.splitlines() if '"cross_origin_refused"' in line]
    assert any(e["path"] == "/transfer" and e["reason"] == "Sec-Fetch-Site cross-site" for e in refused), refused

    # the same form sent from the app's own page passes, with the same session
    await page.goto(stack.url + "/account")
    await post_form_from(page, "/transfer", [("amount", "5")])
    await expect(page.get_by_role("heading", name="POST /transfer")).to_be_visible()
    assert await form_fields_shown(page) == [("amount", "5")]


# ------------------------------------------------------------------------------------------ kept forms


async def test_form_posted_after_the_session_ended_is_delivered_after_the_login(
    page: Page, stack: Stack, artifacts: Artifacts
) -> None:
    from playwright.async_api import expect

    await sign_in(page, stack.url + "/orders/new")
    # the session ends while the form is being filled in: the browser's cookie names no session
    ended = seal_ticket(new_ticket(), SECRET.encode())
    await page.context.add_cookies([{"name": COOKIE, "value": ended, "url": stack.url}])
    fields = [
        ("title", 'Order "42" <script>alert(document.domain)</script>'),
        ("body", "first line\nsecond line & more"),
        ("item", "apples"),
        ("item", "pears"),
    ]
    await post_form_from(page, "/orders?draft=1", fields)
    # kept, signed in again (the provider's session is still there), and sent again on its own
    await expect(page.get_by_role("heading", name="POST /orders")).to_be_visible()
    assert page.url == stack.url + "/orders?draft=1"
    # (the page's text shows a textarea's CRLF as LF; tests/test_legacy_forms.py checks the bytes)
    assert await form_fields_shown(page) == fields
    await expect(page.locator("section.identity")).to_contain_text("bob")
    await artifacts.screenshot(page, "kept-form-delivered")
    await expect_tidy_echo_layout(page)
    # /oauth2/userinfo as pretty-printed JSON with its keys marked up
    await expect(page.locator("#userinfo .key").first).to_have_text('"sub"')
    assert '\n  "email": "bob@example.com",\n' in (await page.locator("#userinfo").text_content() or "")
    # the kept form's cookie is gone once used
    assert not [c for c in await page.context.cookies(stack.url) if "_post_" in c["name"]]


async def test_a_kept_form_with_a_field_named_submit_is_still_sent_by_itself(
    page: Page, stack: Stack, artifacts: Artifacts
) -> None:
    """Legacy forms often name their button ``submit``: that field must not stop the page sending the form."""
    from playwright.async_api import expect

    await sign_in(page, stack.url + "/orders/new")
    ended = seal_ticket(new_ticket(), SECRET.encode())
    await page.context.add_cookies([{"name": COOKIE, "value": ended, "url": stack.url}])
    fields = [("title", "Order 43"), ("submit", "Save"), ("id", "kept")]
    await post_form_from(page, "/orders", fields)
    await expect(page.get_by_role("heading", name="POST /orders")).to_be_visible()
    assert await form_fields_shown(page) == fields
    await artifacts.screenshot(page, "kept-form-with-submit-field-delivered")


# ------------------------------------------------------------------------------------------ account pages


async def test_forbidden_page_names_the_rule_and_signed_out_page_offers_sign_in(
    page: Page, stack: Stack, artifacts: Artifacts
) -> None:
    from playwright.async_api import expect

    await sign_in(page, stack.url + "/orders")
    response = await page.goto(stack.url + "/admin/settings")
    assert response is not None and response.status == 403
    await expect(page.get_by_text("requires group admins")).to_be_visible()
    await artifacts.screenshot(page, "forbidden-names-the-rule")

    # switch account: the provider asks again, and whoever signs in next is who the app sees
    await page.get_by_role("link", name="Sign in with another account").click()
    await page.get_by_role("button", name=re.compile("^Alice Admin")).click()
    await expect(page).to_have_url(stack.url + "/admin/settings")
    await expect(page.locator("section.identity")).to_contain_text("alice")

    # sign out ends on authproxy's page, not on a new login
    await page.get_by_role("link", name="Sign out").click()
    await expect(page).to_have_url(stack.url + "/oauth2/signed_out")
    await expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    assert not [c for c in await page.context.cookies(stack.url) if c["name"] == COOKIE]
    await artifacts.screenshot(page, "signed-out-page")
    await page.get_by_role("link", name="Sign in again").click()
    await expect(page.get_by_role("button", name=re.compile("^Alice Admin"))).to_be_visible()


async def test_kept_form_on_a_second_domain_arrives_after_the_single_sign_on_handoff(
    page: Page, artifacts: Artifacts, tmp_path: Path
) -> None:
    """``authproxy demo``'s wiki on ``localhost`` signs in through the central origin; a kept form survives it."""
    from playwright.async_api import expect

    with run_demo(tmp_path / "demo") as demo:
        wiki = demo.url.replace("127.0.0.1", "localhost")
        await page.goto(wiki + "/notes/new")
        await page.get_by_role("button", name=re.compile("^Carol")).click()
        await expect(page).to_have_url(wiki + "/notes/new")
        # the wiki's own session ends; the central one (on 127.0.0.1) lives on
        await page.context.clear_cookies(name=COOKIE, domain="localhost")
        await post_form_from(page, "/notes", [("text", "kept across domains")])
        # sent while no one was signed in on the wiki: Carol is asked whether it is hers
        await expect(page.get_by_role("heading", name="Send this form?")).to_be_visible()
        await expect(page.locator("main")).to_contain_text("carol")
        await artifacts.screenshot(page, "kept-form-confirm")
        await page.get_by_role("button", name="Send the form").click()
        await expect(page.get_by_role("heading", name="POST /notes")).to_be_visible()
        assert page.url == wiki + "/notes"
        assert await form_fields_shown(page) == [("text", "kept across domains")]
        await artifacts.screenshot(page, "kept-form-on-second-domain")
