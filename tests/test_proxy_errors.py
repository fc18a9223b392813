"""Upstream failures (SPEC section 4): 502 refused/reset, 504 timeout, HTML or JSON, no traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from authproxy import errors, pages
from authproxy.proxy import _failure_kind
from authproxy.upstream_http import UpstreamBadResponse, UpstreamConnectError, UpstreamReset
from tests.support.net import connection_key, free_port
from tests.support.upstream import Route, Upstream, serve_proxy, upstream_fixture  # noqa: F401

JSON = {"Accept": "application/json"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


async def fetch(url: str, headers: dict[str, str]) -> tuple[int, str, str, dict[str, str]]:
    async with aiohttp.ClientSession() as client, client.get(url, headers=headers) as resp:
        return resp.status, resp.content_type, await resp.text(), dict(resp.headers)


def assert_error_body(status: int, ctype: str, body: str, expected_status: int, as_html: bool) -> None:
    assert status == expected_status
    assert "Traceback" not in body
    assert "aiohttp" not in body
    if as_html:
        assert ctype == "text/html"
        assert f"Error {expected_status}" in body
        assert "Request ID" in body
    else:
        assert ctype == "application/json"
        payload = json.loads(body)
        assert set(payload) == {"error", "message", "request_id"}
        assert len(payload["request_id"]) == 32


@pytest.mark.parametrize("headers", [JSON, BROWSER], ids=["json", "html"])
async def test_upstream_down_gives_502(headers: dict[str, str]) -> None:
    closed_port = free_port()
    async with serve_proxy(Route(f"http://127.0.0.1:{closed_port}")) as url:
        status, ctype, body, _ = await fetch(url + "/anything", headers)
    assert_error_body(status, ctype, body, 502, headers is BROWSER)
    if headers is JSON:
        assert json.loads(body)["error"] == "upstream_unavailable"


@pytest.mark.parametrize("headers", [JSON, BROWSER], ids=["json", "html"])
async def test_upstream_reset_gives_502(upstream: Upstream, headers: dict[str, str]) -> None:
    async with serve_proxy(Route(upstream.url)) as url:
        status, ctype, body, _ = await fetch(url + "/reset", headers)
    assert_error_body(status, ctype, body, 502, headers is BROWSER)


@pytest.mark.parametrize("headers", [JSON, BROWSER], ids=["json", "html"])
async def test_slow_upstream_gives_504_after_route_timeout(upstream: Upstream, headers: dict[str, str]) -> None:
    async with serve_proxy(Route(upstream.url, timeout=1.0)) as url:
        started = time.monotonic()
        status, ctype, body, _ = await fetch(url + "/slow?s=10", headers)
        elapsed = time.monotonic() - started
    assert_error_body(status, ctype, body, 504, headers is BROWSER)
    assert 0.9 <= elapsed < 3.0
    if headers is JSON:
        assert json.loads(body)["error"] == "upstream_timeout"


async def test_timeout_restarts_while_the_upload_flows(upstream: Upstream) -> None:
    """A 2.5 s upload through a 1 s route timeout is not cut: the wait for headers starts after the body."""

    async def slow_body() -> Any:
        for _ in range(10):
            yield b"x" * 1024
            await asyncio.sleep(0.25)

    async with (
        serve_proxy(Route(upstream.url, timeout=1.0)) as url,
        aiohttp.ClientSession() as client,
        client.post(url + "/upload", data=slow_body()) as resp,
    ):
        assert resp.status == 200
        assert (await resp.json())["size"] == 10 * 1024


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_upstream_reset_mid_body_closes_the_client_connection(upstream: Upstream, chunked: bool) -> None:
    """After the status line is sent, an upstream failure must not look like a complete body."""
    path = f"/big?mb=4&reset_after={1024 * 1024}" + ("&chunked=1" if chunked else "")
    received = 0
    async with (
        serve_proxy(Route(upstream.url)) as url,
        aiohttp.ClientSession() as client,
        client.get(url + path) as resp,
    ):
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in resp.content.iter_any():
                received += len(chunk)
    assert received < 4 * 1024 * 1024


async def test_idle_upstream_mid_body_closes_the_client_connection(upstream: Upstream) -> None:
    async with (
        serve_proxy(Route(upstream.url, timeout=1.0)) as url,
        aiohttp.ClientSession() as client,
        client.get(url + "/stall") as resp,
    ):
        assert resp.status == 200
        assert await resp.content.readline() == b"start\n"
        started = time.monotonic()
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.content.read()
        assert 0.8 <= time.monotonic() - started < 3.0


async def test_client_disconnect_mid_download_is_quiet(upstream: Upstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve_proxy(Route(upstream.url)) as url:
        for _ in range(3):
            async with aiohttp.ClientSession() as client, client.get(url + "/big?mb=64") as resp:
                await resp.content.readexactly(1024 * 1024)
                # leaving the block closes the connection with most of the body unread
        await asyncio.sleep(0.3)
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert noisy == []
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]


async def test_websocket_to_a_down_upstream_gives_502() -> None:
    async with serve_proxy(Route(f"http://127.0.0.1:{free_port()}")) as url, aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(url + "/ws")
    assert info.value.status == 502


# ---------------------------------------------------------------- pages, pure parts


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        pytest.param("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True, id="browser"),
        pytest.param("application/json", False, id="json"),
        pytest.param("application/json, text/plain, */*", False, id="axios"),
        pytest.param("*/*", False, id="curl"),
        pytest.param(None, False, id="absent"),
        pytest.param("text/html;q=0.5, application/json", False, id="prefers-json"),
        pytest.param("application/json;q=0.5, text/html", True, id="prefers-html"),
        pytest.param("text/html;q=0", False, id="html-refused"),
        pytest.param("text/*", True, id="text-wildcard"),
        pytest.param("application/problem+json, text/html;q=0.9", False, id="json-suffix"),
        pytest.param("TEXT/HTML", True, id="case"),
        pytest.param("text/html;q=abc", False, id="bad-q"),
    ],
)
def test_prefers_html(accept: str | None, html: bool) -> None:
    assert pages.prefers_html(accept) is html


@pytest.mark.parametrize(
    ("method", "accept", "expected"),
    [
        pytest.param("GET", "text/html", True, id="get-html"),
        pytest.param("HEAD", "text/html,*/*", True, id="head-html"),
        pytest.param("POST", "text/html", False, id="post"),
        pytest.param("GET", "*/*", False, id="get-any"),
        pytest.param("GET", "application/json", False, id="get-json"),
    ],
)
def test_wants_html(method: str, accept: str, expected: bool) -> None:
    request = make_mocked_request(method, "/", headers={"Accept": accept})
    assert pages.wants_html(request) is expected
    assert pages.is_browser_navigation(request) is expected


def test_accept_values_are_judged_alike_whether_remembered_or_too_long_to_be() -> None:
    long_html = "text/html," + ",".join(f"application/x-{i}" for i in range(60))
    long_json = "application/json," + ",".join(f"text/x-{i};q=0.1" for i in range(60))
    assert len(long_html) > pages.ACCEPT_CACHED_MAX and len(long_json) > pages.ACCEPT_CACHED_MAX
    remembered = pages.prefers_html.cache_info().currsize
    for _ in range(2):  # the second time from the cache, for the short value
        assert pages.prefers_html("text/html") is True
        assert pages.prefers_html(long_html) is True
        assert pages.prefers_html(long_json) is False
        navigation = make_mocked_request("GET", "/", headers={"Accept": long_html})
        assert pages.wants_html(navigation) is True
    # only the short value was kept: odd clients cannot fill the cache with kilobytes each
    assert pages.prefers_html.cache_info().currsize <= remembered + 1


@pytest.mark.parametrize(
    ("error", "status"),
    [
        pytest.param(errors.UpstreamUnavailable("detail-7f3a"), 502, id="upstream-unavailable"),
        pytest.param(errors.UpstreamTimeout("detail-7f3a"), 504, id="upstream-timeout"),
        pytest.param(errors.UpstreamError("detail-7f3a"), 502, id="upstream-error"),
        pytest.param(errors.ProviderUnavailable("detail-7f3a"), 503, id="provider-unavailable"),
        pytest.param(errors.TokenEndpointError("invalid_grant"), 401, id="token-endpoint"),
        pytest.param(errors.TokenInvalid("exp"), 401, id="token-invalid"),
        pytest.param(errors.UnknownKeyId("kid"), 401, id="unknown-kid"),
        pytest.param(errors.FlowError("state"), 400, id="flow"),
        pytest.param(errors.SessionEnded("invalid_grant"), 401, id="session-ended"),
        pytest.param(errors.StoreUnavailable("detail-7f3a"), 503, id="store-unavailable"),
        pytest.param(errors.ConfigError(["a: b"]), 500, id="config"),
        pytest.param(errors.AuthproxyError("detail-7f3a"), 500, id="base"),
    ],
)
def test_error_for_exception_status_and_no_detail(error: errors.AuthproxyError, status: int) -> None:
    assert pages.status_for(error) == status
    request = make_mocked_request("GET", "/", headers=JSON)
    response = pages.error_for_exception(request, error, request_id="rid")
    assert response.status == status
    assert response.text is not None
    assert str(error) not in json.loads(response.text)["message"]
    assert ("Retry-After" in response.headers) is (status == 503)


def test_every_error_class_has_a_status() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.AuthproxyError)]
    assert set(classes) <= set(pages.STATUS_BY_ERROR)


def test_html_page_escapes_everything() -> None:
    request = make_mocked_request("GET", "/", headers=BROWSER)
    response = pages.error_response(
        request,
        400,
        "<script>alert(1)</script>",
        'a "quote" & <b>',
        request_id="<rid>",
        link=("Go <now>", '/start?rd=/"><script>'),
        hints=("<i>hint</i>",),
    )
    body = response.text or ""
    assert "<script>" not in body
    assert "<i>" not in body and "<b>" not in body and "<rid>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert 'href="/start?rd=/&quot;&gt;&lt;script&gt;"' in body
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("url", ["javascript:alert(1)", "//evil.example/", "data:text/html,x", "/\\evil.example"])
def test_unsafe_links_not_rendered(url: str) -> None:
    html = pages.render_html(400, "t", "m", request_id="r", link=("Try again", url))
    assert "href" not in html


def test_json_extra_cannot_override_fields() -> None:
    request = make_mocked_request("GET", "/", headers=JSON)
    response = pages.error_response(
        request, 401, "t", "m", request_id="rid", extra={"request_id": "forged", "login_url": "/oauth2/start"}
    )
    assert json.loads(response.text or "") == {
        "error": "unauthenticated",
        "message": "m",
        "request_id": "rid",
        "login_url": "/oauth2/start",
    }


def test_login_pages() -> None:
    request = make_mocked_request("GET", "/oauth2/callback", headers=BROWSER)
    request[pages.REQUEST_ID] = "rid-1"
    page = pages.login_error_page(request, 403, "Denied", "No.", retry_url="/oauth2/start?rd=%2F")
    assert page.status == 403
    assert 'href="/oauth2/start?rd=%2F"' in (page.text or "")
    assert "rid-1" in (page.text or "")
    loop_page = pages.login_loop_page(request, "authproxy_session")
    assert loop_page.status == 400
    for word in ("authproxy_session", "secure", "trusted_proxies", "same_site"):
        assert word in (loop_page.text or "")


def test_redirect() -> None:
    response = pages.redirect("/oauth2/start?rd=%2F")
    assert response.status == 302
    assert response.headers["Location"] == "/oauth2/start?rd=%2F"
    with pytest.raises(ValueError, match="control character"):
        pages.redirect("/x\r\nSet-Cookie: a=b")


def test_request_id_of_without_middleware_creates_one() -> None:
    request = make_mocked_request("GET", "/")
    first = pages.request_id_of(request)
    assert len(first) == 32
    assert pages.request_id_of(request) == first


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        pytest.param(TimeoutError(), "timeout", id="timeout"),
        pytest.param(UpstreamConnectError("no"), "refused", id="lean-client-refused"),
        pytest.param(UpstreamBadResponse("garbage"), "bad_response", id="lean-client-garbage"),
        pytest.param(UpstreamReset("closed"), "reset", id="lean-client-reset"),
        pytest.param(
            aiohttp.ClientConnectorError(connection_key("127.0.0.1", 9), ConnectionRefusedError()),
            "refused",
            id="refused",
        ),
        pytest.param(aiohttp.ClientResponseError(None, ()), "bad_response", id="bad-response"),  # type: ignore[arg-type]
        pytest.param(aiohttp.ServerDisconnectedError(), "reset", id="hung-up"),
    ],
)
def test_an_upstream_failure_is_counted_and_logged_by_its_kind(error: BaseException, kind: str) -> None:
    # the kind is the label of authproxy_upstream_errors_total and the "kind" of the log line
    assert _failure_kind(error) == kind
