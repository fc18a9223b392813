"""Paths that servers read differently never reach another route's upstream (SPEC section 2).

Routes are chosen on the path as sent. Upstreams normalise: nginx merges ``//``, Tomcat and
Jetty drop ``;parameters``, IIS reads ``\\`` as ``/``. A path that those readings would send to
another route (``//admin/x`` and ``/admin;x/y`` chosen as ``/``, served as ``/admin/...``)
is refused with a 400 before any upstream sees it; one whose reading keeps its route is
forwarded as sent (``;jsessionid`` keeps working). A prefix stripped from a %-escaped path is
stripped segment for segment, or refused when an escaped slash straddles it. The routes here
need no sign-in: ``site`` and ``admin`` stand for a route open to everyone and one with an
``allow`` rule, and which upstream path a request reached shows which route served it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from authproxy.proxy import AmbiguousPath, another_route_once_normalised, normalized_path, upstream_path
from authproxy.routing import RouteTable
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream, raw_request, upstream_fixture  # noqa: F401


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/admin/x", "/admin/x", id="plain"),
        pytest.param("//admin/x", "/admin/x", id="leading-double-slash"),
        pytest.param("/admin//x", "/admin/x", id="inner-double-slash"),
        pytest.param("/admin;x/secret", "/admin/secret", id="segment-parameter"),
        pytest.param("/;x/admin", "/admin", id="parameter-only-segment"),
        pytest.param("/admin\\x", "/admin/x", id="backslash"),
        pytest.param("/admin/", "/admin/", id="trailing-slash-kept"),
        pytest.param("/admin//", "/admin/", id="trailing-double-slash"),
        pytest.param("/", "/", id="root"),
        pytest.param("//", "/", id="root-double-slash"),
        pytest.param("/a;jsessionid=1", "/a", id="jsessionid"),
    ],
)
def test_normalized_path_reads_a_path_as_normalising_servers_do(path: str, expected: str) -> None:
    assert normalized_path(path) == expected


TABLE: RouteTable[str] = RouteTable(((None, "/", "site"), (None, "/admin/", "admin")))


@pytest.mark.parametrize(
    ("path", "another"),
    [
        pytest.param("/admin;x/secret", True, id="parameter-hides-the-prefix"),
        pytest.param("//admin/x", True, id="empty-segment-hides-the-prefix"),
        pytest.param("/shop;jsessionid=1/cart", False, id="parameter-within-the-route"),
        pytest.param("/admin/x;v=1", False, id="parameter-inside-the-prefix-route"),
        pytest.param("/shop/cart", False, id="nothing-to-normalise"),
    ],
)
def test_a_path_is_judged_by_the_route_normalising_servers_would_serve(path: str, another: bool) -> None:
    route = TABLE.choose("front.example", path)
    assert another_route_once_normalised(TABLE, "front.example", path, route) is another


@pytest.mark.parametrize(
    ("raw", "prefix", "expected"),
    [
        pytest.param("/%61pp/x", "/app", "/x", id="escaped-prefix"),
        pytest.param("/%61pp", "/app", "/", id="escaped-prefix-alone"),
        pytest.param("/%61pp/%61dmin/x%2Fy", "/app/admin", "/x%2Fy", id="two-escaped-segments"),
    ],
)
def test_an_escaped_prefix_is_stripped_segment_for_segment(raw: str, prefix: str, expected: str) -> None:
    assert upstream_path("", raw, prefix, strip=True) == expected


@pytest.mark.parametrize("raw", ["/app%2Fzzz/admin/x", "/app%2Fadmin"], ids=["slash-after-prefix", "slash-in-prefix"])
def test_an_escaped_slash_straddling_the_prefix_is_refused(raw: str) -> None:
    with pytest.raises(AmbiguousPath):
        upstream_path("", raw, "/app", strip=True)


@pytest.fixture
async def proxy(run_proxy: Callable[..., ProxyProcess], upstream: Upstream) -> ProxyProcess:
    routes: list[dict[str, Any]] = [
        {"name": "site", "upstream": upstream.url + "/site", "auth": "none"},
        {"name": "admin", "match": {"path_prefix": "/admin/"}, "upstream": upstream.url + "/admin", "auth": "none"},
        {"name": "mounted", "match": {"path_prefix": "/app"}, "upstream": upstream.url + "/mounted",
         "auth": "none", "strip_path_prefix": True},
        {"name": "vhost", "match": {"host": "admin.example.test"}, "upstream": upstream.url + "/vhost",
         "auth": "none"},
    ]  # fmt: skip
    return await asyncio.to_thread(run_proxy, {"routes": routes})


async def _sent_upstream(proxy: ProxyProcess, target: str, host: str = "front.example") -> tuple[int, str | None]:
    """The status for ``GET target``, and the path the upstream received (None: it saw nothing)."""
    status, _, body = await raw_request(proxy.url, f"GET {target} HTTP/1.1\nHost: {host}")
    return status, json.loads(body)["path"] if status == 200 else None


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("//admin/x", id="double-slash"),
        pytest.param("/admin;x/secret", id="segment-parameter"),
        pytest.param("/admin%5Cx", id="escaped-backslash"),
        pytest.param("/;x/admin/x", id="parameter-only-segment"),
    ],
)
async def test_a_path_another_route_would_serve_once_normalised_is_refused(proxy: ProxyProcess, target: str) -> None:
    assert await _sent_upstream(proxy, target) == (400, None)


@pytest.mark.parametrize(
    ("target", "seen"),
    [
        pytest.param("/shop;jsessionid=1/cart", "/site/shop;jsessionid=1/cart", id="jsessionid-same-route"),
        pytest.param("/admin/x;v=1", "/admin/admin/x;v=1", id="parameter-inside-the-route"),
        pytest.param("/admin/a//b", "/admin/admin/a//b", id="double-slash-inside-the-route"),
        pytest.param("/%61pp/x", "/mounted/x", id="escaped-prefix-stripped"),
        # an escaped line feed or carriage return is a character of the path like any other: its
        # route's answer, never a bare "404: Not Found" as if no route matched
        pytest.param("/admin/a%0Ab", "/admin/admin/a%0Ab", id="escaped-line-feed"),
        pytest.param("/shop/a%0D%0Ab", "/site/shop/a%0D%0Ab", id="escaped-line-break"),
    ],
)
async def test_a_path_whose_reading_keeps_its_route_is_forwarded_as_sent(
    proxy: ProxyProcess, target: str, seen: str
) -> None:
    assert await _sent_upstream(proxy, target) == (200, seen)


async def test_an_escaped_slash_across_a_stripped_prefix_is_refused(proxy: ProxyProcess) -> None:
    assert await _sent_upstream(proxy, "/app%2Fzzz/admin/x") == (400, None)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/oauth2%2Fstart", id="escaped-slash"),
        pytest.param("//oauth2/start", id="double-slash"),
        pytest.param("/oauth2;x/start", id="segment-parameter"),
        pytest.param("/oauth2%5Cstart", id="escaped-backslash"),
    ],
)
async def test_the_auth_prefix_spelled_otherwise_never_reaches_an_upstream(proxy: ProxyProcess, target: str) -> None:
    # reserved for authproxy's own endpoints (SPEC section 2): whatever its spelling, a path under
    # it is authproxy's to answer, never the route's upstream that / would choose
    assert await _sent_upstream(proxy, target) == (404, None)


@pytest.mark.parametrize("host", ["admin.example.test", "admin.example.test.", "admin.example.test.:80"])
async def test_a_host_route_is_chosen_whatever_the_root_dot_and_port(proxy: ProxyProcess, host: str) -> None:
    assert await _sent_upstream(proxy, "/x", host) == (200, "/vhost/x")
