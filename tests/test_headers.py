"""Header rules of SPEC section 4: hop-by-hop, anti-spoofing, X-Forwarded-*, request id, identity."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest
from multidict import CIMultiDict

from authproxy.headers import (
    DEFAULT_IDENTITY_HEADERS,
    HOP_BY_HOP,
    MAX_IDENTITY_FIELD,
    build_upstream_headers,
    client_address,
    forwarded_headers,
    identity_header_values,
    original_host,
    peer_is_trusted,
    remove_cookie,
    request_id,
    strip_hop_by_hop,
    strip_spoofable,
    without_own_cookies,
)

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)
TEN = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def pairs(headers: CIMultiDict[str]) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in headers.items()]


@pytest.mark.parametrize(
    ("incoming", "expected"),
    [
        pytest.param(
            [(name, "x") for name in sorted(HOP_BY_HOP)] + [("X-Keep", "1")],
            [("x-keep", "1")],
            id="fixed-set",
        ),
        pytest.param(
            [("Connection", "keep-alive, X-Secret"), ("X-Secret", "s"), ("X-Keep", "1")],
            [("x-keep", "1")],
            id="named-in-connection",
        ),
        pytest.param(
            [("Connection", "X-One"), ("Connection", " x-two ,"), ("x-one", "1"), ("X-Two", "2"), ("X-Three", "3")],
            [("x-three", "3")],
            id="several-connection-headers",
        ),
        pytest.param(
            [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Content-Length", "5")],
            [("set-cookie", "a=1"), ("set-cookie", "b=2"), ("content-length", "5")],
            id="repeated-end-to-end-kept",
        ),
    ],
)
def test_strip_hop_by_hop(incoming: list[tuple[str, str]], expected: list[tuple[str, str]]) -> None:
    assert pairs(strip_hop_by_hop(CIMultiDict(incoming))) == expected


@pytest.mark.parametrize(
    ("incoming", "names", "expected"),
    [
        pytest.param(
            [("X-Forwarded-User", "m"), ("x-forwarded-user", "m2"), ("X-FORWARDED-USER", "m3"), ("Accept", "*/*")],
            frozenset({"x-forwarded-user"}),
            [("accept", "*/*")],
            id="all-copies-any-case",
        ),
        pytest.param(
            [("X_Forwarded_User", "m"), ("x_forwarded-email", "m"), ("X-Keep", "1")],
            frozenset({"x-forwarded-user", "x-forwarded-email"}),
            [("x-keep", "1")],
            id="underscore-spellings",
        ),
        pytest.param(
            [("X-Auth-Request-User", "m"), ("x_auth_request_email", "m"), ("X-Authproxy-Identity", "j")],
            frozenset(),
            [],
            id="reserved-families-always",
        ),
        pytest.param(
            [("Authorization", "Bearer x"), ("X-Forwarded-Id-Token", "t")],
            frozenset({"Authorization", "X_Forwarded_Id_Token"}),
            [],
            id="names-given-in-any-spelling",
        ),
        pytest.param(
            [("Authorization", "Basic x"), ("X-Forwarded-Userx", "ok")],
            frozenset({"x-forwarded-user"}),
            [("authorization", "Basic x"), ("x-forwarded-userx", "ok")],
            id="others-untouched",
        ),
    ],
)
def test_strip_spoofable(
    incoming: list[tuple[str, str]], names: frozenset[str], expected: list[tuple[str, str]]
) -> None:
    assert pairs(strip_spoofable(CIMultiDict(incoming), names)) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("a=1; authproxy_session=SECRET; b=2", "a=1; b=2", id="middle"),
        pytest.param("authproxy_session=SECRET", None, id="only-one"),
        pytest.param("authproxy_session_flow_0123=x; a=1", "a=1", id="flow-variant"),
        pytest.param("a=1;b=2", "a=1;b=2", id="untouched-verbatim"),
        pytest.param(
            "my_authproxy_session=1; authproxy_sessionx=2",
            "my_authproxy_session=1; authproxy_sessionx=2",
            id="similar-names-kept",
        ),
        pytest.param("theme=dark authproxy_session=SECRET; a=1", "a=1", id="after-whitespace-in-a-pair"),
        pytest.param('t="x;authproxy_session=SECRET;y"', 't="x; y"', id="inside-a-quoted-value"),
        pytest.param("name=John Smith; a=1", "name=John Smith; a=1", id="whitespace-in-another-value"),
        pytest.param("a=1; authproxy_session =SECRET", "a=1", id="space-before-equals"),
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
    ],
)
def test_remove_cookie(header: str | None, expected: str | None) -> None:
    assert remove_cookie(header, frozenset({"authproxy_session"})) == expected


@pytest.mark.parametrize(
    ("peer", "networks", "expected"),
    [
        pytest.param("10.1.2.3", TEN, True, id="v4-inside"),
        pytest.param("11.1.2.3", TEN, False, id="v4-outside"),
        pytest.param("::ffff:10.0.0.9", TEN, True, id="v4-mapped"),
        pytest.param("fd00::1", TEN, True, id="v6-inside"),
        pytest.param("127.0.0.1", (), False, id="default-none"),
        pytest.param(None, TEN, False, id="no-peer"),
        pytest.param("not-an-ip", TEN, False, id="garbage"),
    ],
)
def test_peer_is_trusted(peer: str | None, networks: Any, expected: bool) -> None:
    assert peer_is_trusted(peer, networks) is expected


@pytest.mark.parametrize(
    ("peer", "xff", "proto", "fhost", "expected"),
    [
        pytest.param(
            "10.0.0.5",
            "203.0.113.7",
            "https",
            "app.example.com",
            {
                "X-Forwarded-For": "203.0.113.7, 10.0.0.5",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "app.example.com",
            },
            id="trusted-appends-and-keeps",
        ),
        pytest.param(
            "198.51.100.1",
            "203.0.113.7",
            "https",
            "evil.example",
            {"X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "front:8080"},
            id="untrusted-replaced",
        ),
        pytest.param(
            "10.0.0.5",
            None,
            None,
            None,
            {"X-Forwarded-For": "10.0.0.5", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "front:8080"},
            id="trusted-but-absent",
        ),
        pytest.param(
            "10.0.0.5",
            "1.1.1.1, 2.2.2.2",
            "https, http",
            "a.example, b.example",
            {
                "X-Forwarded-For": "1.1.1.1, 2.2.2.2, 10.0.0.5",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "a.example",
            },
            id="trusted-chain-first-proto-host",
        ),
        pytest.param(
            "10.0.0.5",
            None,
            "gopher",
            "bad host\r\n",
            {"X-Forwarded-For": "10.0.0.5", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "front:8080"},
            id="trusted-but-insane-values",
        ),
    ],
)
def test_forwarded_headers(
    peer: str, xff: str | None, proto: str | None, fhost: str | None, expected: dict[str, str]
) -> None:
    assert forwarded_headers(peer, xff, proto, fhost, "http", "front:8080", TEN) == expected


@pytest.mark.parametrize(
    ("forwarded", "trusted", "expected"),
    [
        pytest.param("wiki.example.org", True, "wiki.example.org", id="trusted"),
        pytest.param(
            "wiki.example.org:8443, proxy.internal", True, "wiki.example.org:8443", id="trusted-first-of-chain"
        ),
        pytest.param("wiki.example.org", False, "authproxy:4180", id="untrusted-ignored"),
        pytest.param("bad host\r\n", True, "authproxy:4180", id="trusted-but-malformed"),
        pytest.param(None, True, "authproxy:4180", id="absent"),
    ],
)
def test_original_host_believes_x_forwarded_host_only_from_a_trusted_proxy(
    forwarded: str | None, trusted: bool, expected: str
) -> None:
    assert original_host("authproxy:4180", forwarded, peer_trusted=trusted) == expected


@pytest.mark.parametrize(
    ("incoming", "trusted", "passed"),
    [
        pytest.param("abc-123", True, True, id="trusted-sane"),
        pytest.param("req:1/2+3=@x.y_z", True, True, id="trusted-all-safe-chars"),
        pytest.param("a" * 128, True, True, id="trusted-128"),
        pytest.param("a" * 129, True, False, id="too-long"),
        pytest.param("abc def", True, False, id="space"),
        pytest.param("abc\r\nx", True, False, id="crlf"),
        pytest.param("", True, False, id="empty"),
        pytest.param(None, True, False, id="absent"),
        pytest.param("abc-123", False, False, id="untrusted-never"),
    ],
)
def test_request_id(incoming: str | None, trusted: bool, passed: bool) -> None:
    value = request_id(incoming, trusted)
    if passed:
        assert value == incoming
    else:
        assert value != incoming
        assert re.fullmatch(r"[0-9a-f]{32}", value)


def test_request_ids_are_unique() -> None:
    assert len({request_id(None, False) for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        pytest.param(
            {"sub": "u1", "email": "a@example.com", "preferred_username": "alice", "groups": ["admins", "eng"]},
            {
                "X-Forwarded-User": "u1",
                "X-Forwarded-Email": "a@example.com",
                "X-Forwarded-Preferred-Username": "alice",
                "X-Forwarded-Groups": "admins,eng",
            },
            id="all",
        ),
        pytest.param({"sub": "u1"}, {"X-Forwarded-User": "u1"}, id="absent-omitted"),
        pytest.param({"sub": "u1", "email": "a@x\r\nX-Admin: 1"}, {"X-Forwarded-User": "u1"}, id="crlf-dropped"),
        pytest.param({"sub": "u\x001"}, {}, id="nul-dropped"),
        pytest.param(
            {"sub": "u1", "groups": ["ok", "bad\ngroup", "also-ok"]},
            {"X-Forwarded-User": "u1", "X-Forwarded-Groups": "ok,also-ok"},
            id="list-entry-dropped",
        ),
        pytest.param({"sub": "u1", "groups": ["bad\r"]}, {"X-Forwarded-User": "u1"}, id="list-all-bad"),
        pytest.param({"sub": "u1", "groups": []}, {"X-Forwarded-User": "u1"}, id="empty-list"),
        pytest.param({"sub": 42, "email": True}, {"X-Forwarded-User": "42", "X-Forwarded-Email": "true"}, id="scalars"),
        pytest.param({"sub": {"nested": 1}}, {}, id="object-not-emitted"),
        pytest.param({"sub": "ünïcode"}, {"X-Forwarded-User": "ünïcode"}, id="unicode-kept"),
        # an HTTP parser strips whitespace around a field value (RFC 9110 section 5.5), list
        # readers around each entry: the upstream would read " alice" as "alice"
        pytest.param({"sub": "u1", "preferred_username": " alice"}, {"X-Forwarded-User": "u1"}, id="leading-space"),
        pytest.param({"sub": "alice\t"}, {}, id="trailing-tab"),
        pytest.param(
            {"sub": "u1", "groups": ["ok", " admins", "admins\t", "a b"]},
            {"X-Forwarded-User": "u1", "X-Forwarded-Groups": "ok,a b"},
            id="list-entry-padded-dropped",
        ),
        # a reader of the comma-joined list would take "sales,admins" for two groups
        pytest.param(
            {"sub": "u1", "groups": ["ok", "sales,admins"]},
            {"X-Forwarded-User": "u1", "X-Forwarded-Groups": "ok"},
            id="list-entry-with-comma-dropped",
        ),
        # JSON's "\ud800" reads as a lone surrogate, which has no UTF-8 encoding
        pytest.param(
            {"sub": "u1", "preferred_username": "x\ud800", "groups": ["\udcff", "ok"]},
            {"X-Forwarded-User": "u1", "X-Forwarded-Groups": "ok"},
            id="lone-surrogates-dropped",
        ),
        pytest.param(
            {"sub": "u1", "preferred_username": "Smith, Jo"},
            {"X-Forwarded-User": "u1", "X-Forwarded-Preferred-Username": "Smith, Jo"},
            id="scalar-comma-kept",
        ),
    ],
)
def test_identity_header_values(claims: dict[str, Any], expected: dict[str, str]) -> None:
    assert identity_header_values(claims, DEFAULT_IDENTITY_HEADERS) == expected


def test_identity_header_values_custom_mapping() -> None:
    mapping = {"X-User": "email", "X-Dept": "department"}
    assert identity_header_values({"email": "a@b", "sub": "s", "department": ["x", "y"]}, mapping) == {
        "X-User": "a@b",
        "X-Dept": "x,y",
    }


# what a field line "X-Forwarded-Groups: ..." of exactly n bytes holds, and one byte more
GROUPS_FIELD_PREFIX = len("X-Forwarded-Groups: ")


def groups_of_length(n: int) -> list[str]:
    """Groups ("g0001", ...) whose comma-joined list is exactly ``n`` characters, the last padded."""
    groups = [f"g{i:04d}" for i in range(n // 6)]
    rest = n - len(",".join(groups))
    groups[-1] += "x" * rest
    assert len(",".join(groups)) == n
    return groups


def test_an_identity_header_too_large_for_upstreams_is_not_sent_at_all_and_is_reported() -> None:
    # a user in thousands of groups: nginx, Apache, gunicorn and aiohttp refuse a field line
    # over 8190 bytes, so every request of that user would fail upstream with 400 or 431
    groups = [f"team-{i:04d}" for i in range(3000)]
    too_large: list[tuple[str, int]] = []
    values = identity_header_values(
        {"sub": "u1", "email": "a@example.com", "groups": groups}, DEFAULT_IDENTITY_HEADERS, too_large
    )
    # never a shortened list: a group left out, or a name cut in two, is another identity
    assert values == {"X-Forwarded-User": "u1", "X-Forwarded-Email": "a@example.com"}
    assert too_large == [("X-Forwarded-Groups", GROUPS_FIELD_PREFIX + len(",".join(groups)))]


def test_the_identity_header_bound_is_on_the_whole_field_line_in_utf8_bytes() -> None:
    fits = groups_of_length(MAX_IDENTITY_FIELD - GROUPS_FIELD_PREFIX)
    assert identity_header_values({"groups": fits}, DEFAULT_IDENTITY_HEADERS)["X-Forwarded-Groups"] == ",".join(fits)
    one_more = groups_of_length(MAX_IDENTITY_FIELD - GROUPS_FIELD_PREFIX + 1)
    too_large: list[tuple[str, int]] = []
    assert identity_header_values({"groups": one_more}, DEFAULT_IDENTITY_HEADERS, too_large) == {}
    assert too_large == [("X-Forwarded-Groups", MAX_IDENTITY_FIELD + 1)]
    # "é" is two bytes on the wire: counted as such, not as one character
    accented = "é" * ((MAX_IDENTITY_FIELD - len("X-Forwarded-User: ")) // 2 + 1)
    too_large = []
    assert identity_header_values({"sub": accented}, DEFAULT_IDENTITY_HEADERS, too_large) == {}
    assert too_large == [("X-Forwarded-User", len("X-Forwarded-User: ") + 2 * len(accented))]


def build(incoming: list[tuple[str, str]], **kwargs: Any) -> CIMultiDict[str]:
    options: dict[str, Any] = {
        "peer_ip": "198.51.100.1",
        "peer_trusted": False,
        "scheme": "http",
        "request_id": "rid",
    }
    options.update(kwargs)
    return build_upstream_headers(CIMultiDict(incoming), **options)


def test_build_upstream_headers_untrusted() -> None:
    out = build(
        [
            ("Host", "front.example"),
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "300"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X_Forwarded_For", "5.6.7.8"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil"),
            ("Forwarded", "for=1.2.3.4"),
            ("X-Real-IP", "1.2.3.4"),
            ("X-Request-Id", "client-chosen"),
            ("X-Forwarded-User", "mallory"),
            ("X_Forwarded_User", "mallory"),
            ("X-Auth-Request-Email", "m@x"),
            ("Cookie", "a=1; sess=S"),
            ("Cookie", "sess_flow_1=F"),
            ("Expect", "100-continue"),
            ("Accept", "text/html"),
        ],
        strip_names=frozenset({"x-forwarded-user"}),
        strip_cookies=frozenset({"sess"}),
        add={"X-Forwarded-User": "alice"},
        drop=frozenset({"expect"}),
    )
    assert pairs(out) == [
        ("host", "front.example"),
        ("cookie", "a=1"),
        ("accept", "text/html"),
        ("x-forwarded-for", "198.51.100.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "front.example"),
        ("x-request-id", "rid"),
        ("x-forwarded-user", "alice"),
    ]


@pytest.mark.parametrize("listed", ["Host, X-Hop", "x-hop, host", "keep-alive, HOST, X-Hop"])
def test_a_connection_option_cannot_take_host_from_the_upstream(listed: str) -> None:
    # the route was chosen by Host: a client naming it in Connection must not have the upstream
    # (and X-Forwarded-Host) fall back to another host, while the other fields it names still go
    out = build([("Host", "app.example"), ("Connection", listed), ("X-Hop", "1")])
    assert out.getall("Host") == ["app.example"] and out["X-Forwarded-Host"] == "app.example"
    assert "X-Hop" not in out


def test_build_upstream_headers_trusted() -> None:
    out = build(
        [
            ("Host", "internal:8080"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-For", "5.6.7.8"),
            ("X_Forwarded_For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "app.example.com"),
            ("Forwarded", "for=1.2.3.4"),
        ],
        peer_ip="10.0.0.2",
        peer_trusted=True,
        keep_host=False,
    )
    assert pairs(out) == [
        ("forwarded", "for=1.2.3.4"),
        ("x-forwarded-for", "1.2.3.4, 5.6.7.8, 10.0.0.2"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example.com"),
        ("x-request-id", "rid"),
    ]


def test_a_forked_child_makes_request_ids_its_parent_never_made() -> None:
    import os

    request_id(None, False)  # the parent holds a block of random bytes not yet used
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, "".join(request_id(None, False) for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 1024).decode()
    os.close(read)
    parent = "".join(request_id(None, False) for _ in range(4))
    assert len(child) == len(parent) == 128
    assert child != parent


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        pytest.param("198.51.100.7", [], "198.51.100.7", id="direct-client"),
        pytest.param("198.51.100.7", ["203.0.113.1"], "198.51.100.7", id="untrusted-peer-is-not-believed"),
        pytest.param("10.0.0.2", [], "10.0.0.2", id="trusted-peer-without-the-field"),
        pytest.param("10.0.0.2", ["203.0.113.1"], "203.0.113.1", id="one-trusted-proxy"),
        pytest.param("10.0.0.2", ["203.0.113.1, 10.0.0.9"], "203.0.113.1", id="two-trusted-proxies"),
        # the leftmost entries are the client's to write: only the one the nearest proxy saw counts
        pytest.param("10.0.0.2", ["1.1.1.1, 203.0.113.1"], "203.0.113.1", id="client-written-entry-ignored"),
        pytest.param("10.0.0.2", ["1.1.1.1", "203.0.113.1"], "203.0.113.1", id="two-fields"),
        pytest.param("10.0.0.2", ["10.0.0.8, 10.0.0.9"], "10.0.0.8", id="only-trusted-hops"),
        pytest.param("10.0.0.2", ["1.1.1.1, not-an-address"], "10.0.0.2", id="unusable-entry-keeps-the-peer"),
        pytest.param("10.0.0.2", ["2001:db8::1"], "2001:db8::1", id="ipv6-client"),
    ],
)
def test_client_address(peer: str, forwarded_for: list[str], client: str) -> None:
    assert client_address(peer, forwarded_for, TEN) == client


def test_an_upstream_answer_loses_only_the_set_cookie_fields_of_the_proxys_own_cookies() -> None:
    names = frozenset({"__Host-sess", "sess"})
    fields = CIMultiDict(
        [
            ("Set-Cookie", "sess=planted; Path=/"),
            ("Content-Type", "text/html"),
            ("Set-Cookie", "theme=dark"),
            ("set-cookie", " __Host-sess_flow_ab12=x; Secure"),
            ("Set-Cookie", "session=unrelated"),
        ]
    )
    kept = without_own_cookies(fields, names)
    assert kept is not None
    assert pairs(kept) == [
        ("content-type", "text/html"),
        ("set-cookie", "theme=dark"),
        ("set-cookie", "session=unrelated"),
    ]
    assert without_own_cookies(CIMultiDict([("Set-Cookie", "theme=dark")]), names) is None
