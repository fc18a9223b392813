"""What reaches the upstream and what comes back (SPEC section 4), through a real proxy and upstream."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import aiohttp
import pytest

from authproxy.proxy import has_dot_segments, upstream_path
from tests.support.upstream import GZIP_BODY, Match, Route, Upstream, raw_request, serve_proxy, upstream_fixture  # noqa: F401

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)
ELSEWHERE = (ipaddress.ip_network("10.0.0.0/8"),)


def header_list(echo: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


def names(echo: dict[str, Any]) -> set[str]:
    return {k.lower() for k, _ in echo["headers"]}


async def get_echo(url: str, **kwargs: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as client, client.get(url, **kwargs) as resp:
        assert resp.status == 200
        data: dict[str, Any] = await resp.json()
        return data


@pytest.mark.parametrize(
    ("base", "raw", "prefix", "strip", "expected"),
    [
        pytest.param("", "/api/x", "/api", False, "/api/x", id="no-strip"),
        pytest.param("", "/api/x", "/api", True, "/x", id="strip"),
        pytest.param("", "/api", "/api", True, "/", id="strip-exact-keeps-slash"),
        pytest.param("", "/api/", "/api/", True, "/", id="strip-trailing-prefix"),
        pytest.param("", "/api/x/", "/api/", True, "/x/", id="strip-keeps-trailing"),
        pytest.param("/base", "/api/x", "/api", True, "/base/x", id="base-path"),
        pytest.param("/base/", "/x", "/", True, "/base/x", id="base-trailing-slash"),
        pytest.param("/base", "/", "/", False, "/base/", id="root-under-base"),
        pytest.param("", "/%61pi/x%20y", "/api", True, "/x%20y", id="escaped-prefix"),
        pytest.param("", "/api/a%2Fb", "/api", True, "/a%2Fb", id="escapes-kept"),
    ],
)
def test_upstream_path(base: str, raw: str, prefix: str, strip: bool, expected: str) -> None:
    assert upstream_path(base, raw, prefix, strip=strip) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/a/b.c/d", False, id="dots-in-names"),
        pytest.param("/a/../b", True, id="dotdot"),
        pytest.param("/a/./b", True, id="dot"),
        pytest.param("/a/..", True, id="trailing-dotdot"),
        pytest.param("/a/..;x/b", True, id="tomcat-style"),
        pytest.param("/a\\..\\b", True, id="backslash"),
        pytest.param("/a/...", False, id="three-dots"),
    ],
)
def test_has_dot_segments(path: str, expected: bool) -> None:
    assert has_dot_segments(path) is expected


async def test_hop_by_hop_request_headers_not_forwarded(upstream: Upstream) -> None:
    async with serve_proxy(Route(upstream.url)) as url:
        status, _, body = await raw_request(
            url,
            "GET /echo HTTP/1.1\nHost: front.example\nConnection: X-Secret-Hop\nX-Secret-Hop: 1\n"
            "Keep-Alive: timeout=5\nTE: trailers\nTrailer: X-Checksum\nUpgrade: h2c\n"
            "Proxy-Authorization: Basic eDp5\nProxy-Connection: keep-alive\nX-End-To-End: kept",
        )
    assert status == 200
    echo = json.loads(body)
    sent = names(echo)
    for name in ("x-secret-hop", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization", "proxy-connection"):
        assert name not in sent, name
    assert header_list(echo, "X-End-To-End") == ["kept"]
    # the only Connection header upstream is the client library's own keep-alive choice
    assert all("secret" not in v.lower() for v in header_list(echo, "Connection"))


async def test_hop_by_hop_response_headers_not_returned(upstream: Upstream) -> None:
    async with serve_proxy(Route(upstream.url)) as url:
        status, fields, body = await raw_request(url, "GET /hop HTTP/1.1\nHost: x")
    assert status == 200
    got = {k.lower(): v for k, v in fields}
    for name in ("x-secret-hop", "keep-alive", "proxy-authenticate", "trailer", "upgrade"):
        assert name not in got, name
    assert got["x-end-to-end"] == "kept"
    assert body == b"hop"


@pytest.mark.parametrize(
    ("trusted", "expected_for", "expected_proto", "expected_host", "believed"),
    [
        pytest.param(LOOPBACK, "203.0.113.7, 127.0.0.1", "https", "app.example.com", True, id="trusted-peer"),
        pytest.param(ELSEWHERE, "127.0.0.1", "http", "front.example:8080", False, id="untrusted-peer"),
        pytest.param((), "127.0.0.1", "http", "front.example:8080", False, id="default-trusts-none"),
    ],
)
async def test_x_forwarded_headers(
    upstream: Upstream,
    trusted: tuple[Any, ...],
    expected_for: str,
    expected_proto: str,
    expected_host: str,
    believed: bool,
) -> None:
    async with serve_proxy(Route(upstream.url), trusted_proxies=trusted) as url:
        echo = await get_echo(
            url + "/echo",
            headers={
                "Host": "front.example:8080",
                "X-Forwarded-For": "203.0.113.7",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "app.example.com",
                "X_Forwarded_For": "6.6.6.6",
                "Forwarded": "for=203.0.113.7;proto=https",
                "X-Real-IP": "203.0.113.7",
            },
        )
    assert header_list(echo, "X-Forwarded-For") == [expected_for]
    assert header_list(echo, "X-Forwarded-Proto") == [expected_proto]
    assert header_list(echo, "X-Forwarded-Host") == [expected_host]
    assert "x_forwarded_for" not in names(echo)
    assert ("forwarded" in names(echo)) is believed
    assert ("x-real-ip" in names(echo)) is believed


@pytest.mark.parametrize(
    ("trusted", "sent", "passed"),
    [
        pytest.param(LOOPBACK, "trace-abc-123", True, id="trusted-passed"),
        pytest.param(LOOPBACK, "x" * 200, False, id="too-long-replaced"),
        pytest.param((), "trace-abc-123", False, id="untrusted-replaced"),
        pytest.param(LOOPBACK, None, False, id="created"),
    ],
)
async def test_x_request_id(upstream: Upstream, trusted: tuple[Any, ...], sent: str | None, passed: bool) -> None:
    async with serve_proxy(Route(upstream.url), trusted_proxies=trusted) as url:
        echo = await get_echo(url + "/echo", headers={"X-Request-Id": sent} if sent else {})
    ids = header_list(echo, "X-Request-Id")
    assert len(ids) == 1
    if passed:
        assert ids == [sent]
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", ids[0])


@pytest.mark.parametrize("pass_host", [True, False], ids=["pass-host", "upstream-host"])
async def test_pass_host_header(upstream: Upstream, pass_host: bool) -> None:
    async with serve_proxy(Route(upstream.url, pass_host_header=pass_host)) as url:
        echo = await get_echo(url + "/echo", headers={"Host": "app.example.com"})
    expected = "app.example.com" if pass_host else f"127.0.0.1:{upstream.port}"
    assert header_list(echo, "Host") == [expected]
    assert header_list(echo, "X-Forwarded-Host") == ["app.example.com"]


@pytest.mark.parametrize(
    ("strip", "expected_path"),
    [pytest.param(True, "/base/x%20y/z", id="stripped"), pytest.param(False, "/base/api/x%20y/z", id="kept")],
)
async def test_strip_path_prefix_and_base_path(upstream: Upstream, strip: bool, expected_path: str) -> None:
    route = Route(upstream.url + "/base", match=Match("/api"), strip_path_prefix=strip)
    async with serve_proxy(route) as url:
        status, _, body = await raw_request(url, "GET /api/x%20y/z?b=%41&a=1+2&&c HTTP/1.1\nHost: x")
    assert status == 200
    echo = json.loads(body)
    assert echo["path"] == expected_path
    assert echo["query"] == "b=%41&a=1+2&&c"


async def test_query_string_passed_raw(upstream: Upstream) -> None:
    async with serve_proxy(Route(upstream.url)) as url:
        status, _, body = await raw_request(url, "GET /echo?q=%2F%20a+b&x=%E2%82%AC&empty=&flag;semi HTTP/1.1\nHost: x")
    assert status == 200
    assert json.loads(body)["query"] == "q=%2F%20a+b&x=%E2%82%AC&empty=&flag;semi"


async def test_dot_segments_refused(upstream: Upstream) -> None:
    async with serve_proxy(Route(upstream.url)) as url:
        for path in ("/public/../admin", "/public/%2e%2e/admin", "/public%2F..%2Fadmin"):
            status, _, body = await raw_request(url, f"GET {path} HTTP/1.1\nHost: x\nAccept: application/json")
            assert status == 400, path
            assert json.loads(body)["error"] == "bad_request"


async def test_identity_headers_replace_spoofed_copies_and_session_cookie_removed(upstream: Upstream) -> None:
    strip = frozenset({"x-forwarded-user", "x-forwarded-email", "x-forwarded-groups", "authorization"})
    async with serve_proxy(
        Route(upstream.url),
        add_headers={"X-Forwarded-User": "alice", "Authorization": "Bearer real"},
        strip_names=strip,
        strip_cookies=frozenset({"authproxy_session"}),
    ) as url:
        status, _, body = await raw_request(
            url,
            "GET /echo HTTP/1.1\nHost: x\nX-Forwarded-User: mallory\nx-forwarded-user: mallory2\n"
            "X_Forwarded_User: mallory3\nX-Forwarded-Email: m@evil\nX_FORWARDED_GROUPS: admins\n"
            "X-Auth-Request-User: mallory\nX_Auth_Request_Email: m@evil\nX-Authproxy-Identity: forged\n"
            "Authorization: Bearer forged\n"
            "Cookie: theme=dark; authproxy_session=SECRET; authproxy_session_flow_ab12=F; lang=en",
        )
    assert status == 200
    echo = json.loads(body)
    assert header_list(echo, "X-Forwarded-User") == ["alice"]
    assert header_list(echo, "Authorization") == ["Bearer real"]
    sent = names(echo)
    for name in (
        "x_forwarded_user",
        "x-forwarded-email",
        "x_forwarded_groups",
        "x-auth-request-user",
        "x_auth_request_email",
        "x-authproxy-identity",
    ):
        assert name not in sent, name
    assert header_list(echo, "Cookie") == ["theme=dark; lang=en"]


@pytest.mark.parametrize(
    ("identified", "head", "status", "cache_control"),
    [
        pytest.param(True, "POST /cached HTTP/1.1", 200, ["private"], id="identity-no-cache-control"),
        pytest.param(True, 'GET /cached HTTP/1.1\nIf-None-Match: "v1"', 304, ["private"], id="identity-not-modified"),
        pytest.param(True, "POST /cached?cc=public,%20max-age=60 HTTP/1.1", 200, ["public, max-age=60"],
                     id="identity-the-applications-own"),
        pytest.param(False, "POST /cached HTTP/1.1", 200, [], id="anonymous"),
    ],
)  # fmt: skip
async def test_an_answer_forwarded_with_an_identity_says_private_unless_the_upstream_said(
    upstream: Upstream, identified: bool, head: str, status: int, cache_control: list[str]
) -> None:
    # RFC 9111 section 5.2.2.7: a shared cache in front must not keep one user's page for others
    async with serve_proxy(Route(upstream.url), identified=identified) as url:
        answer, fields, _ = await raw_request(url, head + "\nHost: x\nContent-Length: 0")
    assert answer == status
    assert [value for name, value in fields if name.lower() == "cache-control"] == cache_control


async def test_only_session_cookie_means_no_cookie_header(upstream: Upstream) -> None:
    async with serve_proxy(Route(upstream.url), strip_cookies=frozenset({"authproxy_session"})) as url:
        echo = await get_echo(url + "/echo", headers={"Cookie": "authproxy_session=SECRET"})
    assert "cookie" not in names(echo)


async def test_no_headers_invented_for_upstream(upstream: Upstream) -> None:
    async with serve_proxy(Route(upstream.url)) as url:
        status, _, body = await raw_request(url, "POST /echo HTTP/1.1\nHost: x\nContent-Length: 3", b"abc")
    echo = json.loads(body)
    assert status == 200
    assert echo["body_size"] == 3
    sent = names(echo)
    for name in ("user-agent", "accept", "accept-encoding", "content-type"):
        assert name not in sent, name


async def test_redirects_returned_not_followed_and_cookies_passed(upstream: Upstream) -> None:
    async with serve_proxy(Route(upstream.url)) as url:
        async with aiohttp.ClientSession() as client, client.get(url + "/redirect", allow_redirects=False) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] == "/echo?from=redirect"
        async with aiohttp.ClientSession() as client, client.get(url + "/echo") as resp:
            assert resp.headers.getall("Set-Cookie") == ["upstream=1; Path=/"]


async def test_encoded_body_passed_untouched_with_length(upstream: Upstream) -> None:
    async with (
        serve_proxy(Route(upstream.url)) as url,
        aiohttp.ClientSession(auto_decompress=False) as client,
        client.get(url + "/gzip", headers={"Accept-Encoding": "gzip"}) as resp,
    ):
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["Content-Length"] == str(len(GZIP_BODY))
        assert await resp.read() == GZIP_BODY


async def test_head_keeps_content_length_without_body(upstream: Upstream) -> None:
    async with serve_proxy(Route(upstream.url)) as url:
        status, fields, body = await raw_request(url, "HEAD /big?mb=1 HTTP/1.1\nHost: x")
    assert status == 200
    assert dict((k.lower(), v) for k, v in fields)["content-length"] == str(1024 * 1024)
    assert body == b""


async def test_methods_and_keep_alive_pool(upstream: Upstream) -> None:
    async with serve_proxy(Route(upstream.url)) as url, aiohttp.ClientSession() as client:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"):
            async with client.request(method, url + "/echo", data=b"x" if method != "GET" else None) as resp:
                assert resp.status == 200
                assert (await resp.json())["method"] == method
