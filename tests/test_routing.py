"""Route choice (SPEC section 2): host exact > wildcard > absent, then longest path prefix."""

from __future__ import annotations

import itertools

import pytest

from authproxy.config import MatchConfig
from authproxy.routing import RouteTable, is_valid_host, normalize_host, path_matches, target_host_disagrees

ROUTES = [
    ("any-root", None, "/"),
    ("any-api", None, "/api"),
    ("wild-root", "*.example.com", "/"),
    ("wild-deep", "*.apps.example.com", "/"),
    ("exact-root", "app.example.com", "/"),
    ("exact-admin", "app.example.com", "/admin/"),
    ("exact-api-v2", "app.example.com", "/api/v2"),
    ("other-only-docs", "docs.test", "/docs"),
]

CASES = [
    ("app.example.com", "/", "exact-root"),
    ("APP.example.com:8443", "/x", "exact-root"),
    ("app.example.com", "/admin/users", "exact-admin"),
    ("app.example.com", "/admin", "exact-root"),  # "/admin/" needs the slash
    ("app.example.com", "/api/v2/items", "exact-api-v2"),
    ("app.example.com", "/api/v2x", "exact-root"),  # segment boundary
    ("app.example.com", "/api/v1", "exact-root"),  # exact host beats a longer prefix on "any host"
    ("shop.example.com", "/api", "wild-root"),
    ("x.apps.example.com", "/", "wild-deep"),  # the longer wildcard is more specific
    ("example.com", "/", "any-root"),  # *.example.com does not match the apex
    ("elsewhere.org", "/api/x", "any-api"),
    ("elsewhere.org", "/apix", "any-root"),
    ("docs.test", "/docs/a", "other-only-docs"),
    ("docs.test", "/", "any-root"),
    (None, "/", "any-root"),
]


def table(routes: list[tuple[str, str | None, str]]) -> RouteTable[str]:
    return RouteTable.build([(MatchConfig(host=h, path_prefix=p), name) for name, h, p in routes])


@pytest.mark.parametrize(("host", "path", "expected"), CASES, ids=[f"{h}{p}" for h, p, _ in CASES])
def test_route_choice(host: str | None, path: str, expected: str) -> None:
    assert table(ROUTES).choose(host, path) == expected


def test_file_order_never_matters() -> None:
    for order in itertools.islice(itertools.permutations(ROUTES), 0, 5000, 97):
        chosen = table(list(order))
        for host, path, expected in CASES:
            assert chosen.choose(host, path) == expected


def test_no_route_is_none() -> None:
    only_docs = table([("docs", "docs.test", "/docs")])
    assert only_docs.choose("docs.test", "/other") is None
    assert only_docs.choose("other.test", "/docs") is None


@pytest.mark.parametrize(
    ("prefix", "path", "matches"),
    [
        ("/", "/anything", True),
        ("/api", "/api", True),
        ("/api", "/api/", True),
        ("/api", "/apis", False),
        ("/api/", "/api", False),
        ("/api/", "/api/x", True),
    ],
)
def test_path_prefix_segments(prefix: str, path: str, matches: bool) -> None:
    assert path_matches(prefix, path) is matches


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("Example.COM", "example.com"),
        ("example.com:8080", "example.com"),
        ("[::1]:4180", "[::1]"),
        ("", ""),
        ("example.com.", "example.com"),
        ("example.com.:8080", "example.com"),
    ],
)
def test_normalize_host(header: str, host: str) -> None:
    assert normalize_host(header) == host


@pytest.mark.parametrize(
    ("target", "host_fields", "disagrees"),
    [
        pytest.param("/x", ["app.example"], False, id="origin-form"),
        pytest.param("*", ["app.example"], False, id="asterisk-form"),
        pytest.param("http://app.example/x", ["app.example"], False, id="same-host"),
        pytest.param("http://APP.example:80/x?q", ["app.example:8080"], False, id="case-and-port-ignored"),
        pytest.param("http://app.example./x", ["app.example"], False, id="root-dot"),
        pytest.param("http://other.example/x", ["app.example"], True, id="another-host"),
        pytest.param("http://app.example@other.example/x", ["app.example"], True, id="userinfo-is-not-the-host"),
        pytest.param("http://other.example?x", ["app.example"], True, id="query-without-path"),
        pytest.param("http://app.example/x", [], True, id="no-host-field"),
        pytest.param("http://app.example/x", ["app.example", "app.example"], True, id="two-host-fields"),
    ],
)
def test_target_host_disagrees(target: str, host_fields: list[str], disagrees: bool) -> None:
    assert target_host_disagrees(target, host_fields) is disagrees


@pytest.mark.parametrize(
    ("host", "valid"),
    [
        pytest.param("app.example.com", True, id="name"),
        pytest.param("app.example.com:8443", True, id="name-and-port"),
        pytest.param("127.0.0.1:4180", True, id="ipv4-and-port"),
        pytest.param("[::1]:4180", True, id="ipv6-literal"),
        pytest.param("my_host.internal", True, id="underscore"),
        pytest.param("app.example.com.", True, id="root-dot"),
        pytest.param("a b@c/d", False, id="space-at-slash"),
        pytest.param("evil.com/path", False, id="path"),
        pytest.param("user@app.example.com", False, id="userinfo"),
        pytest.param("app.example.com:80x", False, id="port-not-digits"),
        pytest.param("app\texample", False, id="tab"),
        pytest.param("app.example.com\\evil", False, id="backslash"),
    ],
)
def test_is_valid_host(host: str, valid: bool) -> None:
    assert is_valid_host(host) is valid
