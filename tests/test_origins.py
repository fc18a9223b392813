"""Which origin a request belongs to, and where a sign-in may start (authproxy.origins, pure)."""

from __future__ import annotations

import pytest

from authproxy.origins import Origins, host_name, normalize_origin, within_cookie_domain

ORIGINS = Origins.build("https://app.example.com", ["https://wiki.example.org", "http://tickets.example.net:8080"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("https://Wiki.Example.org", "https://wiki.example.org", id="lower-case"),
        pytest.param("https://wiki.example.org:443/", "https://wiki.example.org", id="default-port-and-slash-dropped"),
        pytest.param("http://wiki.example.org:8080", "http://wiki.example.org:8080", id="other-port-kept"),
        pytest.param("http://[::1]:4180", "http://[::1]:4180", id="ipv6-literal"),
        pytest.param("https://wiki.example.org/path", None, id="path"),
        pytest.param("https://wiki.example.org/?q=1", None, id="query"),
        pytest.param("https://wiki.example.org/#f", None, id="fragment"),
        pytest.param("https://user@wiki.example.org", None, id="user-info"),
        pytest.param("ftp://wiki.example.org", None, id="scheme"),
        pytest.param("wiki.example.org", None, id="no-scheme"),
        pytest.param("https://wiki.example.org:99999", None, id="bad-port"),
    ],
)
def test_normalize_origin(value: str, expected: str | None) -> None:
    assert normalize_origin(value) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("wiki.example.org", "wiki.example.org"),
        ("WIKI.example.org:8443", "wiki.example.org"),
        ("[::1]:4180", "[::1]"),
        ("wiki.example.org.", "wiki.example.org"),
        ("wiki.example.org.:8443", "wiki.example.org"),
        ("", ""),
    ],
)
def test_host_name_drops_the_port_and_the_roots_dot(host: str, expected: str) -> None:
    assert host_name(host) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("wiki.example.org", "https://wiki.example.org", id="sso-origin"),
        pytest.param("wiki.example.org:9999", "https://wiki.example.org", id="ports-never-count"),
        pytest.param("tickets.example.net:8080", "http://tickets.example.net:8080", id="sso-origin-with-port"),
        pytest.param("app.example.com", None, id="authenticating-origin"),
        pytest.param("evil.example.org", None, id="unknown-host-is-not-an-sso-origin"),
        pytest.param("wiki.example.org.evil.com", None, id="suffix-trick"),
        # the same host for route choice: its routes must not be served as the authenticating origin's
        pytest.param("wiki.example.org.", "https://wiki.example.org", id="root-dot"),
        pytest.param(None, None, id="no-host"),
    ],
)
def test_satellite_of(host: str | None, expected: str | None) -> None:
    assert ORIGINS.satellite_of(host) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("https://wiki.example.org", "https://wiki.example.org", id="exact"),
        pytest.param("https://WIKI.example.org/", "https://wiki.example.org", id="normalised"),
        pytest.param("http://wiki.example.org", None, id="other-scheme"),
        pytest.param("https://wiki.example.org:8443", None, id="other-port"),
        pytest.param("https://app.example.com", None, id="the-authenticating-origin-is-no-handoff-target"),
        pytest.param("https://evil.example.com", None, id="unknown"),
        pytest.param("https://wiki.example.org@evil.example.com", None, id="user-info-trick"),
        pytest.param("//wiki.example.org", None, id="scheme-relative"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_only_configured_origins_receive_a_handoff(value: str | None, expected: str | None) -> None:
    assert ORIGINS.configured_satellite(value) == expected


@pytest.mark.parametrize(
    ("origins", "host", "expected"),
    [
        pytest.param(ORIGINS, "app.example.com", True, id="authenticating-origin"),
        pytest.param(ORIGINS, "wiki.example.org", True, id="sso-origin"),
        pytest.param(ORIGINS, "evil.example.com", False, id="unknown-host-with-sso-origins"),
        pytest.param(Origins.build("https://app.example.com"), "internal:4180", True, id="one-origin-any-host"),
        pytest.param(
            Origins.build("https://app.example.com", ["https://wiki.example.org"], ".example.com"),
            "reports.example.com",
            True,
            id="covered-by-the-cookie-domain",
        ),
    ],
)
def test_can_sign_in(origins: Origins, host: str, expected: bool) -> None:
    assert origins.can_sign_in(host) is expected


@pytest.mark.parametrize(
    ("host", "domain", "expected"),
    [
        ("a.example.com", ".example.com", True),
        ("example.com", "example.com", True),
        ("badexample.com", "example.com", False),
        ("a.example.com", None, False),
    ],
)
def test_within_cookie_domain(host: str, domain: str | None, expected: bool) -> None:
    assert within_cookie_domain(host, domain) is expected
