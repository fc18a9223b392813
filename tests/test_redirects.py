"""The `rd` redirect target of SPEC section 3 (`/start`, `/sign_out`): local paths only."""

from __future__ import annotations

import re
from urllib.parse import unquote, urljoin, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authproxy.redirects import sanitize_redirect

BASE = "https://app.example.com/x"
HOST = "app.example.com"

ATTACKS = [
    pytest.param(None, id="none"),
    pytest.param("", id="empty"),
    pytest.param("https://evil.com/", id="absolute-https"),
    pytest.param("http://evil.com", id="absolute-http"),
    pytest.param("HTTPS://EVIL.COM", id="absolute-uppercase"),
    pytest.param("//evil.com", id="scheme-relative"),
    pytest.param("///evil.com", id="triple-slash"),
    pytest.param("//evil.com/path?x=1", id="scheme-relative-with-path"),
    pytest.param("/\\evil.com", id="slash-backslash"),
    pytest.param("\\\\evil.com", id="double-backslash"),
    pytest.param("\\/evil.com", id="backslash-slash"),
    pytest.param("/\\/evil.com", id="slash-backslash-slash"),
    pytest.param("/a\\..\\..\\evil.com", id="backslash-inside-path"),
    pytest.param("javascript:alert(1)", id="javascript-scheme"),
    pytest.param("JaVaScRiPt:alert(1)", id="javascript-mixed-case"),
    pytest.param("data:text/html,<script>alert(1)</script>", id="data-scheme"),
    pytest.param("evil.com", id="relative-host-looking"),
    pytest.param("?next=/", id="query-only"),
    pytest.param(" //evil.com", id="leading-space"),
    pytest.param("\t//evil.com", id="leading-tab"),
    pytest.param("/\t/evil.com", id="tab-inside"),
    pytest.param("/\n/evil.com", id="newline-inside"),
    pytest.param("/\r\n/evil.com", id="crlf-inside"),
    pytest.param("/\x00/evil.com", id="nul-inside"),
    pytest.param("/ok\x7f", id="del"),
    pytest.param("/\u3000/evil.com", id="ideographic-space"),
    pytest.param("\u2028//evil.com", id="line-separator"),
    pytest.param("/\u200b/evil.com", id="zero-width-space"),
    pytest.param("/\u202e/moc.live", id="right-to-left-override"),
    pytest.param("/%09/evil.com", id="encoded-tab"),
    pytest.param("/%E3%80%80/evil.com", id="encoded-ideographic-space"),
    pytest.param("/%0a/evil.com", id="encoded-newline"),
    pytest.param("/%0d%0aSet-Cookie:%20a=b", id="encoded-crlf-header-injection"),
    pytest.param("/%00", id="encoded-nul"),
    pytest.param("/%2F%2Fevil.com", id="encoded-slashes"),
    pytest.param("/%2f%2fevil.com", id="encoded-slashes-lowercase"),
    pytest.param("/%2Fevil.com", id="encoded-second-slash"),
    pytest.param("%2F%2Fevil.com", id="fully-encoded-scheme-relative"),
    pytest.param("/%5Cevil.com", id="encoded-backslash"),
    pytest.param("%2F%5Cevil", id="encoded-slash-backslash"),
    pytest.param("/%5C%5Cevil.com", id="encoded-double-backslash"),
    pytest.param("/%252F%252Fevil.com", id="double-encoded-slashes"),
    pytest.param("/%25252F%25252Fevil.com", id="triple-encoded-slashes"),
    pytest.param("/%252525252F", id="too-many-encoding-layers"),
    pytest.param("/%25%32%46%25%32%46evil.com", id="encoded-percent-encoding"),
    pytest.param("/..//evil.com", id="dot-dot-then-double-slash"),
    pytest.param("/.//evil.com", id="dot-then-double-slash"),
    pytest.param("/%2e%2e//evil.com", id="encoded-dot-dot-double-slash"),
    pytest.param("/./%2F/evil.com", id="dot-then-encoded-slash"),
    pytest.param("//user:pass@evil.com", id="userinfo-scheme-relative"),
    pytest.param("https://app.example.com@evil.com/", id="userinfo-own-host-as-user"),
    pytest.param("/\\app.example.com@evil.com", id="userinfo-backslash"),
    pytest.param("@evil.com", id="userinfo-bare"),
    pytest.param("/\uff0fevil.com", id="fullwidth-solidus"),
    pytest.param("/%EF%BC%8Fevil.com", id="encoded-fullwidth-solidus"),
    pytest.param("/\uff3cevil.com", id="fullwidth-backslash"),
    pytest.param("/" + "a" * 5000, id="too-long"),
    # X-Auth-Request-Redirect bytes that were not UTF-8, as aiohttp reads them
    pytest.param(b"/\xff\xfe".decode("utf-8", "surrogateescape"), id="not-utf-8-bytes"),
]


@pytest.mark.parametrize("rd", ATTACKS)
def test_attack_falls_back_to_root(rd: str | None) -> None:
    assert sanitize_redirect(rd) == "/"


@pytest.mark.parametrize(
    ("rd", "expected"),
    [
        pytest.param("/", "/", id="root"),
        pytest.param("/app", "/app", id="path"),
        pytest.param("/a/b/c.html?x=1&y=%2F", "/a/b/c.html?x=1&y=%2F", id="path-and-query"),
        pytest.param("/search?q=%2F%2Fnot-a-host", "/search?q=%2F%2Fnot-a-host", id="encoded-slashes-in-query"),
        pytest.param("/docs/a%20b", "/docs/a%20b", id="encoded-space"),
        pytest.param("/caf%C3%A9", "/caf%C3%A9", id="encoded-utf8"),
        pytest.param("/café", "/caf%C3%A9", id="raw-utf8-is-encoded"),
        pytest.param("/a b", "/a%20b", id="raw-space-is-encoded"),
        pytest.param("/a/../b", "/a/../b", id="dot-segments-staying-local"),
        pytest.param("/page#section", "/page", id="fragment-dropped"),
        pytest.param("/~user/@home", "/~user/@home", id="at-sign-in-path"),
        pytest.param("/a%2Fb", "/a%2Fb", id="encoded-slash-inside"),
    ],
)
def test_local_path_is_kept(rd: str, expected: str) -> None:
    assert sanitize_redirect(rd) == expected


# --- property: whatever the input, the browser stays on our host


def browser_stays_on_host(reference: str) -> bool:
    """A simplified WHATWG URL parse of ``reference`` against BASE: does it keep the host?"""
    reference = reference.strip("".join(chr(code) for code in range(0x21)))
    reference = re.sub(r"[\t\n\r]", "", reference)
    if re.match(r"[A-Za-z][A-Za-z0-9+.\-]*:", reference):
        return False  # any scheme: another origin or script
    reference = reference.replace("\\", "/")  # special schemes read backslashes as slashes
    return not reference.startswith("//")


def assert_safe(output: str) -> None:
    assert output.startswith("/")
    assert all(0x21 <= ord(char) < 0x7F for char in output), "only printable ASCII goes into Location"
    resolved = urlsplit(urljoin(BASE, output))
    assert (resolved.scheme, resolved.hostname) == ("https", HOST)
    layer = output
    for _ in range(6):  # and after any number of decodings by an upstream
        assert browser_stays_on_host(layer), layer
        assert urlsplit(urljoin(BASE, layer)).hostname == HOST
        layer = unquote(layer)


PIECES = st.sampled_from(
    [
        "/", "//", "\\", "%2F", "%2f", "%5C", "%252F", "%25", "2F", "%09", "%0a", "\t", "\n", " ", "@", ":",
        "evil.com", "javascript", "http", "https", ".", "..", "?", "#", "\x00", "\uff0f", "%EF%BC%8F", "a", "%",
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=60), st.lists(PIECES, max_size=12).map("".join)))
def test_output_always_stays_on_host(rd: str) -> None:
    assert_safe(sanitize_redirect(rd))


@settings(max_examples=200, deadline=None)
@given(st.lists(PIECES, max_size=12).map(lambda pieces: "/" + "".join(pieces)))
def test_output_of_slash_prefixed_input_stays_on_host(rd: str) -> None:
    assert_safe(sanitize_redirect(rd))
