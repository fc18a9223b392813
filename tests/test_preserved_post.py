"""The pure parts of kept forms (authproxy.preserved_post) and of the account pages, and the
keeper itself in process (a memory store, a clock the test moves).

The page that posts a kept form back is where mod_auth_openidc had its XSS (CVE-2021-32792):
each hostile value below must come out as inert text, parsed back by an HTML parser to exactly
the value that went in.
"""

from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser
from typing import Final
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from pytest_aiohttp import AiohttpClient

from authproxy.account_pages import authorize_prompt, signed_out_location, start_url
from authproxy.config import CookieConfig, RouteConfig
from authproxy.preserved_post import (
    FORM_TYPE,
    KEEP_TTL,
    KeptForm,
    PostKeeper,
    is_valid_tag,
    parse_form,
    render_resubmit_page,
    resubmit_headers,
    user_label,
    wants_preservation,
)
from authproxy.sessions.manager import SessionManager
from authproxy.sessions.memory import MemoryStore
from authproxy.sessions.record import SessionRecord

HOSTILE: Final = [
    ("a", '"><script>alert(1)</script>'),
    ("b\"'><img src=x onerror=alert(1)>", "name is hostile too"),
    ("c", "</form><form action=https://evil.example>"),
    ("d", "line\r\nbreaks\rand\nmore"),
    ("e", "&amp; stays &amp;"),
    ("f", "caf\u00e9 \u2603 \U0001f600"),
    ("f", ""),
]


class PageParts(HTMLParser):
    """The tags of a page as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict[str, str | None]] = []
        self.inputs: list[dict[str, str | None]] = []
        self.scripts: list[dict[str, str | None]] = []
        self.other_tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self.forms.append(values)
        elif tag == "input":
            self.inputs.append(values)
        elif tag == "script":
            self.scripts.append(values)
        else:
            self.other_tags.append(tag)


def parts_of(page: str) -> PageParts:
    parser = PageParts()
    parser.feed(page)
    parser.close()
    return parser


def test_hostile_fields_come_back_as_exactly_the_values_sent() -> None:
    page = render_resubmit_page("/orders?draft=1&x=<y>", HOSTILE, "n0nce")
    parts = parts_of(page)
    assert [(i["name"], i["value"]) for i in parts.inputs] == HOSTILE
    assert all(i["type"] == "hidden" for i in parts.inputs)
    assert [f["action"] for f in parts.forms] == ["/orders?draft=1&x=<y>"]
    assert parts.forms[0]["method"] == "post"
    # one script, the nonce'd one; no tag a value could have smuggled in
    assert parts.scripts == [{"nonce": "n0nce"}]
    assert "img" not in parts.other_tags and len(parts.forms) == 1


def test_the_page_csp_allows_only_the_nonced_script_and_same_origin_form_targets() -> None:
    csp = resubmit_headers("n0nce")["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'nonce-n0nce'"
    assert directives["form-action"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert resubmit_headers("n")["Cache-Control"] == "no-store"


def test_the_page_cannot_be_framed_sniffed_or_send_a_foreign_referer() -> None:
    # docs/legacy-apps.md step 4: no other site may frame the page that posts the form (and click
    # it), no content sniffing, and the resubmitted POST carries a Referer of this origin only
    headers = resubmit_headers("n0nce")
    directives = dict(d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";"))
    assert directives["frame-ancestors"] == "'none'"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"


def test_line_breaks_in_fields_are_written_as_character_references() -> None:
    # a browser's HTML parser turns a raw CR LF (or a lone CR) inside an attribute into LF, so the
    # form would come back changed; &#13; and &#10; survive it (Python's HTMLParser does not
    # normalise, so this reads the page as written)
    page = render_resubmit_page("/orders", [("body", "one\r\ntwo\rthree\nfour"), ("a\r\nb", "x")], "n0nce")
    assert re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page) == [
        ("body", "one&#13;&#10;two&#13;three&#10;four"),
        ("a&#13;&#10;b", "x"),
    ]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        pytest.param(b"a=1&b=2", (("a", "1"), ("b", "2")), id="simple"),
        pytest.param(b"t=a&t=b", (("t", "a"), ("t", "b")), id="repeated-name-kept-in-order"),
        pytest.param(b"empty=&flag", (("empty", ""), ("flag", "")), id="blank-values-kept"),
        pytest.param(b"q=caf%C3%A9+au+lait", (("q", "caf\u00e9 au lait"),), id="utf-8-and-plus"),
        pytest.param(b"x=%0D%0A", (("x", "\r\n"),), id="crlf"),
        pytest.param(b"", (), id="empty-body"),
    ],
)
def test_parse_form(body: bytes, fields: tuple[tuple[str, str], ...]) -> None:
    assert parse_form(body) == fields


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"name=%FF", id="not-utf-8"),
        pytest.param("name=caf\u00e9".encode(), id="raw-non-ascii"),
        pytest.param(b"&".join(b"k=v" for _ in range(1001)), id="too-many-fields"),
    ],
)
def test_parse_form_refuses(body: bytes) -> None:
    assert parse_form(body) is None


@pytest.mark.parametrize("from_ended_session", [True, False])
def test_kept_form_round_trips(from_ended_session: bool) -> None:
    form = KeptForm("app.example.com", "/a?b=c", tuple(HOSTILE), 12.5, from_ended_session)
    assert KeptForm.from_bytes(form.to_bytes()) == form


def test_a_form_kept_before_the_sender_was_recorded_asks_before_it_is_sent() -> None:
    kept = b'{"host": "a.example", "target": "/x", "fields": [], "kept_at": 1.0}'
    assert KeptForm.from_bytes(kept).from_ended_session is False


def test_the_confirmation_names_the_user_runs_no_script_and_keeps_every_value_inert() -> None:
    page = render_resubmit_page("/orders?x=<y>", HOSTILE, None, confirm_as="<b>bob</b>@example.com")
    parts = parts_of(page)
    assert parts.scripts == [] and [(i["name"], i["value"]) for i in parts.inputs] == HOSTILE
    assert "&lt;b&gt;bob&lt;/b&gt;@example.com" in page and "<b>bob" not in page
    assert "/orders?x=&lt;y&gt;" in page
    directives = dict(d.strip().split(" ", 1) for d in resubmit_headers(None)["Content-Security-Policy"].split(";"))
    assert directives["script-src"] == "'none'" and directives["form-action"] == "'self'"


@pytest.mark.parametrize(
    ("claims", "label"),
    [
        ({"email": "bob@example.com", "preferred_username": "bob"}, "bob@example.com"),
        ({"preferred_username": "bob"}, "bob"),
        ({"email": ""}, "sub-1"),
        ({"email": ["not", "a", "string"]}, "sub-1"),
    ],
)
def test_the_confirmation_names_the_user_by_email_then_username_then_sub(claims: dict[str, object], label: str) -> None:
    assert user_label(claims, "sub-1") == label


@pytest.mark.parametrize(
    ("tag", "valid"),
    [("0123456789abcdef", True), ("0123456789ABCDEF", False), ("short", False), ("../../etc/passwd", False)],
)
def test_tag_shape(tag: str, valid: bool) -> None:
    assert is_valid_tag(tag) is valid


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        pytest.param("login", {"acr_values": "x", "prompt": "login"}, id="login"),
        pytest.param("select_account", {"acr_values": "x", "prompt": "select_account"}, id="select-account"),
        pytest.param("none", {"acr_values": "x"}, id="none-is-not-passed-on"),
        pytest.param("consent login", {"acr_values": "x"}, id="only-single-known-values"),
        pytest.param(None, {"acr_values": "x"}, id="absent"),
    ],
)
def test_authorize_prompt(asked: str | None, expected: dict[str, str]) -> None:
    assert authorize_prompt({"acr_values": "x"}, asked) == expected


def test_start_and_signed_out_urls_carry_only_sanitised_local_targets() -> None:
    assert start_url("/oauth2", "/a b?c=d", prompt="login") == "/oauth2/start?rd=/a%2520b%3Fc%3Dd&prompt=login"
    assert start_url("/oauth2", "https://evil.example/") == "/oauth2/start?rd=/"
    assert signed_out_location("/oauth2", None) == "/oauth2/signed_out"
    assert signed_out_location("/oauth2", "//evil.example") == "/oauth2/signed_out"
    assert signed_out_location("/oauth2", "/reports?w=1") == "/oauth2/signed_out?rd=/reports%3Fw%3D1"


# ------------------------------------------------------------------------------ keeping and resubmitting

HTML: Final = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def keeping_route(**options: object) -> RouteConfig:
    return RouteConfig.model_validate(
        {"name": "forms", "upstream": "http://127.0.0.1:1", "preserve_post": True, **options}
    )


@pytest.mark.parametrize(("on_unauthenticated", "kept"), [("auto", True), ("redirect", True), ("deny", False)])
def test_a_route_that_denies_instead_of_redirecting_never_keeps_forms(on_unauthenticated: str, kept: bool) -> None:
    # docs/legacy-apps.md step 2: on_unauthenticated: deny answers 401 and sends nobody to sign in,
    # so there is no login for a kept form to wait for
    route = keeping_route(on_unauthenticated=on_unauthenticated)
    request = make_mocked_request("POST", "/orders", headers={"Accept": HTML, "Content-Type": FORM_TYPE})
    assert wants_preservation(route, request) is kept


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def never_limited(request: web.Request) -> web.Response | None:
    return None


async def test_a_kept_form_older_than_a_login_flow_is_not_posted_back(aiohttp_client: AiohttpClient) -> None:
    clock = Clock()
    # the store's own expiry runs on its own clock and has not struck: the keeper's age check decides
    sessions = SessionManager(
        MemoryStore(),
        secrets=["s" * 40],
        cookie=CookieConfig(secure=False),
        idle_timeout=4 * KEEP_TTL,
        absolute_timeout=8 * KEEP_TTL,
        clock=clock,
    )
    keeper = PostKeeper(sessions, "/oauth2", never_limited, clock=clock)
    route = keeping_route()

    async def gate(request: web.Request) -> web.StreamResponse:
        return await keeper.keep(request, route) or web.Response(status=401)

    app = web.Application()
    app.router.add_post("/orders", gate)
    keeper.add_routes(app)
    client = await aiohttp_client(app)
    _, session = await sessions.create(
        SessionRecord(
            sub="alice", created_at=clock.now, last_seen_at=clock.now, absolute_expires_at=clock.now + 8 * KEEP_TTL
        )
    )

    async def keep_a_form() -> tuple[str, str]:
        """The resubmit URL and the Cookie header that takes the kept form back, signed in."""
        origin = str(client.make_url("")).rstrip("/")
        headers = {"Accept": HTML, "Origin": origin, "Sec-Fetch-Site": "same-origin"}
        async with client.post("/orders", data={"note": "hello"}, headers=headers, allow_redirects=False) as kept:
            assert kept.status == 303
            rd = parse_qs(urlsplit(kept.headers["Location"]).query)["rd"][0]
            form_cookie = next(c for c in kept.cookies.values() if "_post_" in c.key)
        return rd, f"{sessions.cookie_name}={session}; {form_cookie.key}={form_cookie.value}"

    # within KEEP_TTL the form comes back
    rd, cookies = await keep_a_form()
    clock.now += KEEP_TTL - 1
    async with client.get(rd, headers={"Accept": HTML, "Cookie": cookies}, allow_redirects=False) as page:
        assert page.status == 200 and 'value="hello"' in await page.text()

    # past it, it is gone
    rd, cookies = await keep_a_form()
    clock.now += KEEP_TTL + 1
    async with client.get(rd, headers={"Accept": HTML, "Cookie": cookies}, allow_redirects=False) as page:
        assert page.status == 410 and 'value="hello"' not in await page.text()


async def test_a_form_whose_body_stops_coming_is_refused_after_the_route_timeout(aiohttp_client: AiohttpClient) -> None:
    sessions = SessionManager(
        MemoryStore(), secrets=["s" * 40], cookie=CookieConfig(secure=False), idle_timeout=60, absolute_timeout=600
    )
    keeper = PostKeeper(sessions, "/oauth2", never_limited)
    route = keeping_route(timeout="1s")

    async def gate(request: web.Request) -> web.StreamResponse:
        return await keeper.keep(request, route) or web.Response(status=401)

    app = web.Application()
    app.router.add_post("/orders", gate)
    client = await aiohttp_client(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(
            b"POST /orders HTTP/1.1\r\nHost: app.example.com\r\nAccept: text/html\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nitem=1"
        )
        async with asyncio.timeout(5):
            status_line = await reader.readline()
        assert status_line.split()[1] == b"408"
    finally:
        writer.close()
