"""The cross-origin guard's decision (authproxy.csrf), rule by rule, as Go 1.25's CrossOriginProtection.

Header values are the ones real browsers send: Chromium, Firefox and Safari send
``Sec-Fetch-Site`` on every request since 2023; older ones send only ``Origin`` on POSTs.
"""

from __future__ import annotations

from typing import Final

import pytest

from authproxy.csrf import judge_cross_origin, trusted_origin_set
from authproxy.origins import normalize_origin

HOST: Final = "app.example.com"
TRUSTED: Final = trusted_origin_set(["https://admin.example.com", "http://127.0.0.1:8080"])

CASES: Final = [
    # (method, origin, sec_fetch_site, websocket, allowed)
    pytest.param("GET", "https://evil.example", "cross-site", False, True, id="get-is-safe-even-cross-site"),
    pytest.param("HEAD", "https://evil.example", "cross-site", False, True, id="head-is-safe"),
    pytest.param("OPTIONS", "https://evil.example", "cross-site", False, True, id="options-is-safe"),
    pytest.param("POST", "https://app.example.com", "same-origin", False, True, id="post-same-origin"),
    pytest.param("POST", None, "none", False, True, id="post-user-initiated-none"),
    pytest.param("POST", "https://evil.example", "cross-site", False, False, id="post-cross-site"),
    pytest.param("PUT", "https://evil.example", "cross-site", False, False, id="put-cross-site"),
    pytest.param("PATCH", "https://evil.example", "cross-site", False, False, id="patch-cross-site"),
    pytest.param("DELETE", "https://evil.example", "cross-site", False, False, id="delete-cross-site"),
    pytest.param("post", "https://evil.example", "cross-site", False, False, id="method-case-does-not-matter"),
    pytest.param("POST", "https://other.example.com", "same-site", False, False, id="post-same-site-sibling"),
    pytest.param("POST", "https://evil.example", "Cross-Site", False, False, id="header-value-case"),
    pytest.param("POST", "https://evil.example", "bogus", False, False, id="unknown-fetch-site-value"),
    pytest.param("POST", "https://admin.example.com", "same-site", False, True, id="trusted-origin-same-site"),
    pytest.param("POST", "https://ADMIN.example.com:443", "cross-site", False, True, id="trusted-origin-normalised"),
    pytest.param("POST", "http://127.0.0.1:8080", "cross-site", False, True, id="trusted-origin-with-port"),
    pytest.param("POST", "http://127.0.0.1:8081", "cross-site", False, False, id="other-port-is-not-trusted"),
    pytest.param("POST", "https://app.example.com", None, False, True, id="old-browser-origin-equals-host"),
    pytest.param("POST", "https://evil.example", None, False, False, id="old-browser-origin-differs"),
    pytest.param("POST", "https://app.example.com:8443", None, False, False, id="old-browser-port-differs"),
    pytest.param("POST", "null", None, False, False, id="old-browser-origin-null"),
    pytest.param("POST", "http://[::1", None, False, False, id="origin-with-an-unclosed-ipv6-literal"),
    pytest.param("POST", "http://[zz]", None, False, False, id="origin-with-an-invalid-ipv6-literal"),
    pytest.param("POST", "https://app.example.com:99999", None, False, False, id="origin-port-out-of-range"),
    pytest.param("POST", "https://app.example.com.evil.example", None, False, False, id="origin-host-suffix-trick"),
    pytest.param("POST", None, None, False, True, id="no-headers-not-a-browser"),
    pytest.param("GET", "https://evil.example", "cross-site", True, False, id="websocket-upgrade-cross-site"),
    pytest.param("GET", "https://app.example.com", "same-origin", True, True, id="websocket-upgrade-same-origin"),
    pytest.param("GET", "https://evil.example", None, True, False, id="websocket-upgrade-origin-differs"),
]


@pytest.mark.parametrize(("method", "origin", "fetch_site", "websocket", "allowed"), CASES)
def test_cross_origin_verdict(
    method: str, origin: str | None, fetch_site: str | None, websocket: bool, allowed: bool
) -> None:
    verdict = judge_cross_origin(
        method=method,
        host=HOST,
        origin=origin,
        sec_fetch_site=fetch_site,
        trusted_origins=TRUSTED,
        websocket_upgrade=websocket,
    )
    assert verdict.allowed is allowed, verdict
    assert verdict.reason


@pytest.mark.parametrize(
    ("host", "origin", "allowed"),
    [
        pytest.param("app.example.com:443", "https://app.example.com", True, id="default-https-port-in-host"),
        pytest.param("127.0.0.1:4180", "http://127.0.0.1:4180", True, id="loopback-with-port"),
        pytest.param("localhost:4180", "http://127.0.0.1:4180", False, id="localhost-is-not-127.0.0.1"),
        pytest.param("APP.example.com", "https://app.example.com", True, id="host-case"),
        pytest.param("[::1]:4180", "http://[::1]:4180", True, id="ipv6-literal"),
    ],
)
def test_origin_fallback_compares_host_and_port(host: str, origin: str, allowed: bool) -> None:
    verdict = judge_cross_origin(method="POST", host=host, origin=origin, sec_fetch_site=None)
    assert verdict.allowed is allowed, verdict


def test_refusal_reason_names_the_header_but_never_echoes_unknown_values() -> None:
    verdict = judge_cross_origin(
        method="POST", host=HOST, origin=None, sec_fetch_site="<script>", trusted_origins=frozenset()
    )
    assert not verdict.allowed and "<script>" not in verdict.reason
    assert judge_cross_origin(method="POST", host=HOST, origin=None, sec_fetch_site="cross-site").reason == (
        "Sec-Fetch-Site cross-site"
    )


@pytest.mark.parametrize(
    ("value", "normalized"),
    [
        ("https://a.example", "https://a.example"),
        ("https://A.Example:443/", "https://a.example"),
        ("http://a.example:80", "http://a.example"),
        ("http://a.example:8080", "http://a.example:8080"),
        ("https://a.example/path", None),
        ("ftp://a.example", None),
        ("null", None),
        ("https://user@a.example", None),
    ],
)
def test_normalize_origin(value: str, normalized: str | None) -> None:
    assert normalize_origin(value) == normalized
