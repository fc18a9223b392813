"""The pure parts of kept forms (authproxy.preserved_post) and of the account pages.

The page that posts a kept form back is where mod_auth_openidc had its XSS (CVE-2021-32792):
each hostile value below must come out as inert text, parsed back by an HTML parser to exactly
the value that went in.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Final

import pytest

from authproxy.account_pages import authorize_prompt, signed_out_location, start_url
from authproxy.preserved_post import KeptForm, is_valid_tag, parse_form, render_resubmit_page, resubmit_headers

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


def test_kept_form_round_trips() -> None:
    form = KeptForm("app.example.com", "/a?b=c", tuple(HOSTILE), 12.5)
    assert KeptForm.from_bytes(form.to_bytes()) == form


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
