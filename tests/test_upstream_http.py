"""The upstream HTTP/1.1 client (RFC 9112): pure framing and reuse rules, then real sockets.

I/O tests run against raw asyncio servers that misbehave on purpose (reset mid-body, close after
headers, garbled status line, close a pooled connection) and aiohttp servers, never mocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from authproxy import upstream_http
from authproxy.upstream_http import (
    Endpoint,
    RequestFraming,
    ResponseFraming,
    UpstreamBadResponse,
    UpstreamClient,
    UpstreamConnectError,
    UpstreamReset,
    UpstreamResponse,
    chunk_prefix,
    keeps_alive,
    request_framing,
    request_head,
    response_framing,
    retryable,
    reusable,
    split_tokens,
)
from tests.support.net import free_port
from tests.support.tls import self_signed
from tests.support.upstream import Route, serve_proxy

# ---------------------------------------------------------------- pure rules


@pytest.mark.parametrize(
    ("method", "headers", "has_body", "expected"),
    [
        pytest.param("GET", {}, False, RequestFraming.NONE, id="get"),
        pytest.param("HEAD", {}, False, RequestFraming.NONE, id="head"),
        pytest.param("OPTIONS", {}, False, RequestFraming.NONE, id="options"),
        pytest.param("POST", {}, False, RequestFraming.EMPTY, id="post-without-body"),
        pytest.param("DELETE", {}, False, RequestFraming.EMPTY, id="delete-without-body"),
        pytest.param("PURGE", {}, False, RequestFraming.EMPTY, id="extension-method"),
        pytest.param("POST", {"Content-Length": "0"}, False, RequestFraming.NONE, id="client-length-zero"),
        pytest.param("POST", {"Content-Length": "5"}, True, RequestFraming.LENGTH, id="client-length"),
        pytest.param("PUT", {}, True, RequestFraming.CHUNKED, id="unknown-length"),
        pytest.param("GET", {}, True, RequestFraming.CHUNKED, id="get-with-chunked-body"),
    ],
)
def test_request_framing(method: str, headers: dict[str, str], has_body: bool, expected: RequestFraming) -> None:
    assert request_framing(method, CIMultiDict(headers), has_body=has_body) is expected


def _head(
    headers: list[tuple[str, str]],
    *,
    method: str = "GET",
    target: str = "/p?q=1",
    framing: RequestFraming = RequestFraming.NONE,
) -> bytes:
    return request_head(method, target, CIMultiDict(headers), authority="up.example:8080", framing=framing)


@pytest.mark.parametrize(
    ("headers", "kwargs", "expected"),
    [
        pytest.param([], {}, b"GET /p?q=1 HTTP/1.1\r\nHost: up.example:8080\r\n\r\n", id="authority-as-host"),
        pytest.param(
            [("Accept", "a"), ("host", "client.example"), ("X-A", "1")],
            {},
            b"GET /p?q=1 HTTP/1.1\r\nHost: client.example\r\nAccept: a\r\nX-A: 1\r\n\r\n",
            id="client-host-first",
        ),
        pytest.param(
            [("X-A", "1"), ("x-a", "2"), ("Cookie", "a=1")],
            {},
            b"GET /p?q=1 HTTP/1.1\r\nHost: up.example:8080\r\nX-A: 1\r\nx-a: 2\r\nCookie: a=1\r\n\r\n",
            id="repeated-kept-in-order",
        ),
        pytest.param(
            [],
            {"method": "POST", "framing": RequestFraming.CHUNKED},
            b"POST /p?q=1 HTTP/1.1\r\nHost: up.example:8080\r\nTransfer-Encoding: chunked\r\n\r\n",
            id="chunked",
        ),
        pytest.param(
            [],
            {"method": "POST", "framing": RequestFraming.EMPTY},
            b"POST /p?q=1 HTTP/1.1\r\nHost: up.example:8080\r\nContent-Length: 0\r\n\r\n",
            id="empty",
        ),
        pytest.param(
            [("Content-Length", "3")],
            {"method": "PUT", "framing": RequestFraming.LENGTH},
            b"PUT /p?q=1 HTTP/1.1\r\nHost: up.example:8080\r\nContent-Length: 3\r\n\r\n",
            id="client-length-kept",
        ),
        pytest.param(
            [("X-Name", "caf\u00e9 \udcff")],
            {"target": "/%C3%A9"},
            b"GET /%C3%A9 HTTP/1.1\r\nHost: up.example:8080\r\nX-Name: caf\xc3\xa9 \xff\r\n\r\n",
            id="bytes-round-trip",
        ),
    ],
)
def test_request_head(headers: list[tuple[str, str]], kwargs: dict[str, Any], expected: bytes) -> None:
    assert _head(headers, **kwargs) == expected


@pytest.mark.parametrize(
    ("headers", "target"),
    [
        pytest.param([("X-A", "1\r\nX-Injected: 1")], "/", id="crlf-in-value"),
        pytest.param([("X-A", "1\nX-Injected: 1")], "/", id="lf-in-value"),
        pytest.param([("X-A", "1\r")], "/", id="cr-in-value"),
        pytest.param([("X-A\r\nX-B", "1")], "/", id="crlf-in-name"),
        pytest.param([("X-A", "a\x00b")], "/", id="nul"),
        pytest.param([("Host", "h\r\nX-B: 1")], "/", id="crlf-in-host"),
        pytest.param([], "/a b", id="space-in-target"),
        pytest.param([], "/a\r\nX: 1", id="crlf-in-target"),
    ],
)
def test_request_head_refuses_injection(headers: list[tuple[str, str]], target: str) -> None:
    with pytest.raises(ValueError, match=r"control|CR"):
        _head(headers, target=target)


@pytest.mark.parametrize(
    ("method", "status", "content_length", "codings", "expected"),
    [
        pytest.param("HEAD", 200, True, (), ResponseFraming.NO_BODY, id="head"),
        pytest.param("HEAD", 200, False, ("chunked",), ResponseFraming.NO_BODY, id="head-chunked"),
        pytest.param("GET", 100, False, (), ResponseFraming.NO_BODY, id="interim"),
        pytest.param("GET", 204, True, (), ResponseFraming.NO_BODY, id="no-content"),
        pytest.param("GET", 304, True, (), ResponseFraming.NO_BODY, id="not-modified"),
        pytest.param("GET", 200, False, ("chunked",), ResponseFraming.CHUNKED, id="chunked"),
        pytest.param("GET", 200, False, ("gzip", "chunked"), ResponseFraming.CHUNKED, id="gzip-then-chunked"),
        pytest.param("GET", 200, False, ("chunked", "gzip"), ResponseFraming.UNTIL_CLOSE, id="chunked-not-final"),
        pytest.param("GET", 200, True, ("chunked",), ResponseFraming.CHUNKED, id="te-wins-over-length"),
        pytest.param("GET", 200, True, (), ResponseFraming.LENGTH, id="length"),
        pytest.param("POST", 404, True, (), ResponseFraming.LENGTH, id="error-with-length"),
        pytest.param("GET", 200, False, (), ResponseFraming.UNTIL_CLOSE, id="until-close"),
    ],
)
def test_response_framing(
    method: str, status: int, content_length: bool, codings: tuple[str, ...], expected: ResponseFraming
) -> None:
    assert response_framing(method, status, content_length=content_length, transfer_codings=codings) is expected


@pytest.mark.parametrize(
    ("version", "tokens", "expected"),
    [
        pytest.param("1.1", set(), True, id="http11-default"),
        pytest.param("1.1", {"close"}, False, id="http11-close"),
        pytest.param("1.1", {"keep-alive", "close"}, False, id="close-wins"),
        pytest.param("1.0", set(), False, id="http10-default"),
        pytest.param("1.0", {"keep-alive"}, True, id="http10-keep-alive"),
        pytest.param("0.9", {"keep-alive"}, False, id="http09"),
    ],
)
def test_keeps_alive(version: str, tokens: set[str], expected: bool) -> None:
    assert keeps_alive(version, frozenset(tokens)) is expected


@pytest.mark.parametrize(("version", "expected"), [("1.1", True), ("1.0", False)])
def test_an_http_1_0_answer_with_transfer_encoding_never_keeps_its_connection(version: str, expected: bool) -> None:
    # RFC 9112 section 6.1: its framing is faulty; the sender may have kept part of it back
    assert keeps_alive(version, frozenset({"keep-alive"}), transfer_coded=True) is expected


_GOOD = {
    "keep_alive": True,
    "framing": ResponseFraming.LENGTH,
    "response_complete": True,
    "request_complete": True,
    "delivered": True,
}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({}, True, id="clean-exchange"),
        pytest.param({"framing": ResponseFraming.CHUNKED}, True, id="chunked"),
        pytest.param({"framing": ResponseFraming.NO_BODY}, True, id="no-body"),
        pytest.param({"keep_alive": False}, False, id="upstream-said-close"),
        pytest.param({"framing": ResponseFraming.UNTIL_CLOSE}, False, id="close-delimited"),
        pytest.param({"response_complete": False}, False, id="body-unread"),
        pytest.param({"request_complete": False}, False, id="upload-unfinished"),
        pytest.param({"delivered": False}, False, id="client-went-away"),
    ],
)
def test_reusable(changes: dict[str, Any], expected: bool) -> None:
    assert reusable(**{**_GOOD, **changes}) is expected


@pytest.mark.parametrize(
    ("method", "has_body", "expected"),
    [
        pytest.param("GET", False, True, id="get"),
        pytest.param("HEAD", False, True, id="head"),
        pytest.param("DELETE", False, True, id="delete"),
        pytest.param("PUT", False, True, id="put-without-body"),
        pytest.param("PUT", True, False, id="put-with-body"),
        pytest.param("POST", False, False, id="post"),
        pytest.param("PATCH", False, False, id="patch"),
    ],
)
def test_retryable(method: str, has_body: bool, expected: bool) -> None:
    assert retryable(method, has_body=has_body) is expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [pytest.param(1, b"1\r\n", id="one"), pytest.param(255, b"ff\r\n", id="hex"), pytest.param(0, b"0\r\n", id="zero")],
)
def test_chunk_prefix(size: int, expected: bytes) -> None:
    assert chunk_prefix(size) == expected


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        pytest.param("http://127.0.0.1:8080", Endpoint("127.0.0.1", 8080, False, "127.0.0.1:8080"), id="port"),
        pytest.param("http://App.Example", Endpoint("app.example", 80, False, "app.example"), id="default-port"),
        pytest.param("http://app.example:80", Endpoint("app.example", 80, False, "app.example"), id="explicit-80"),
        pytest.param("https://app.example", Endpoint("app.example", 443, True, "app.example"), id="https"),
        pytest.param(
            "https://app.example:8443", Endpoint("app.example", 8443, True, "app.example:8443"), id="tls-port"
        ),
        pytest.param("http://[::1]:81", Endpoint("::1", 81, False, "[::1]:81"), id="ipv6"),
    ],
)
def test_endpoint_parse(origin: str, expected: Endpoint) -> None:
    assert Endpoint.parse(origin) == expected


@pytest.mark.parametrize("origin", ["ftp://x", "http://", "x"], ids=["scheme", "no-host", "not-a-url"])
def test_endpoint_parse_refuses(origin: str) -> None:
    with pytest.raises(ValueError, match="origin"):
        Endpoint.parse(origin)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(b"close", ["close"], id="one"),
        pytest.param(b" Keep-Alive , X-Hop,,", ["keep-alive", "x-hop"], id="spaces-case-empties"),
        pytest.param(b"", [], id="empty"),
    ],
)
def test_split_tokens(value: bytes, expected: list[str]) -> None:
    assert split_tokens(value) == expected


# ---------------------------------------------------------------- raw misbehaving servers

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """An asyncio server on 127.0.0.1 running ``handler`` per connection; counts connections."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.closed_by_peer = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.origin = ""
        self.handlers: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers[task] = writer
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self.server.sockets[0].getsockname()[1]
        self.origin = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        # handlers still waiting on their peer end with EOF, not cancelled at loop teardown
        for task, writer in self.handlers.items():
            if not task.done():
                writer.transport.abort()
        pending = [task for task in self.handlers if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=2)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self.server.wait_closed()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def keep_answering(answer: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A raw server's handler: ``answer`` to every request head on the connection, for as long as it lasts."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            writer.write(answer)
            await writer.drain()

    return serve


keepalive_ok = keep_answering(OK)


@contextlib.asynccontextmanager
async def client(**kwargs: Any) -> AsyncIterator[UpstreamClient]:
    http = UpstreamClient(**kwargs)
    try:
        yield http
    finally:
        http.close()


async def fetch(
    http: UpstreamClient, origin: str, method: str = "GET", **kwargs: Any
) -> tuple[UpstreamResponse, bytes]:
    """One exchange, body read whole, connection released as the forwarder does."""
    async with asyncio.timeout(5):
        response = await http.request(origin, method, "/x?token=SECRET", CIMultiDict(), **kwargs)
        body = b""
        delivered = False
        try:
            while chunk := await response.read():
                body += chunk
            delivered = True
        finally:
            response.release(delivered=delivered)
    return response, body


async def test_keep_alive_connection_is_reused() -> None:
    async with RawServer(keepalive_ok) as server, client() as http:
        for _ in range(3):
            response, body = await fetch(http, server.origin)
            assert (response.status, body) == (200, b"ok")
    assert server.connections == 1


async def test_one_field_is_read_as_headers_reads_it() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Twice: first\r\nx-twice: second\r\nX-Caf: caf\xc3\xa9\r\n\r\nok"
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(answer)
        await writer.drain()

    async with RawServer(serve) as server, client() as http:
        response, _ = await fetch(http, server.origin)
        found = {name: response.field(name) for name in (b"content-length", b"x-twice", b"x-caf", b"x-absent")}
        assert found == {b"content-length": "2", b"x-twice": "first", b"x-caf": "café", b"x-absent": None}
        assert {name: response.headers.get(name.decode()) for name in found} == found
        assert response.field(b"x-twice") == "first"  # from the decoded headers now


async def test_trailer_fields_never_join_the_header_section() -> None:
    # in one write, so the trailers are parsed before anyone looks at the head (RFC 9110 6.5.1)
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: evil\r\n\r\n"
    async with RawServer(keep_answering(answer)) as server, client() as http:
        for _ in range(2):  # and the connection stays usable after them
            response, body = await fetch(http, server.origin)
            assert body == b"ok"
            assert [name for name, _ in response.raw_fields] == [b"Transfer-Encoding"]
            assert "X-Trailer" not in response.headers
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", id="connection-close"),
        pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", id="http10"),
    ],
)
async def test_connection_not_reused_when_upstream_ends_it(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(answer)
        await writer.drain()
        # stays open: the client must close on the upstream's word, not on EOF
        await reader.read()

    async with RawServer(handler) as server, client() as http:
        for _ in range(2):
            _, body = await fetch(http, server.origin)
            assert body == b"ok"
    assert server.connections == 2


async def test_an_http_1_0_answer_with_transfer_encoding_is_read_then_its_connection_closed() -> None:
    # RFC 9112 section 6.1: an HTTP/1.0 sender that says chunked may have forwarded the coding
    # without handling it, and kept back bytes that the next request on the connection would read
    answer = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    async with RawServer(keep_answering(answer)) as server, client() as http:
        for _ in range(2):
            _, body = await fetch(http, server.origin)
            assert body == b"ok"
    assert server.connections == 2


async def test_unread_body_is_never_reused() -> None:
    async with RawServer(keepalive_ok) as server, client() as http:
        response = await http.request(server.origin, "GET", "/", CIMultiDict())
        response.release(delivered=False)
        await fetch(http, server.origin)
    assert server.connections == 2


async def test_idle_connection_closed_after_keepalive_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_http, "KEEPALIVE_TIMEOUT", 0.2)
    eof = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(OK)
        await writer.drain()
        assert await reader.read() == b""
        eof.set()

    async with RawServer(handler) as server, client() as http:
        await fetch(http, server.origin)
        async with asyncio.timeout(2):
            await eof.wait()
        await fetch(http, server.origin)
    assert server.connections == 2


def answers_after(delays: list[float | None], eof: asyncio.Event) -> Handler:
    """Answers request n after ``delays[n]`` seconds, or never (None); notes when the client hangs up."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for delay in delays:
            await read_head(reader)
            if delay is None:
                break
            await asyncio.sleep(delay)
            writer.write(OK)
            await writer.drain()
        assert await reader.read() == b""
        eof.set()

    return handler


async def test_a_response_head_not_in_by_the_head_timeout_is_a_timeout_and_ends_the_connection() -> None:
    eof = asyncio.Event()
    async with RawServer(answers_after([None], eof)) as server, client() as http:
        with pytest.raises(TimeoutError):
            await fetch(http, server.origin, head_timeout=0.1)
        async with asyncio.timeout(2):
            await eof.wait()


async def test_a_shorter_head_timeout_after_a_longer_one_still_holds() -> None:
    eof = asyncio.Event()
    async with RawServer(answers_after([0, None], eof)) as server, client() as http:
        await fetch(http, server.origin, head_timeout=60)
        with pytest.raises(TimeoutError):
            await fetch(http, server.origin, head_timeout=0.1)
    assert server.connections == 1


async def test_an_earlier_requests_head_timeout_does_not_cut_a_later_wait() -> None:
    eof = asyncio.Event()
    async with RawServer(answers_after([0, 0.3, 0], eof)) as server, client() as http:
        await fetch(http, server.origin, head_timeout=0.1)
        # the second answer comes after the first request's deadline, within its own
        _, body = await fetch(http, server.origin, head_timeout=2)
        assert body == b"ok"
        await asyncio.sleep(0.2)
        _, body = await fetch(http, server.origin, head_timeout=2)
        assert body == b"ok"
    assert server.connections == 1


async def test_body_bytes_not_in_by_the_deadline_are_a_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok")
        await writer.drain()
        await reader.read()

    async with RawServer(handler) as server, client() as http:
        response = await http.request(server.origin, "GET", "/", CIMultiDict(), head_timeout=5)
        loop = asyncio.get_running_loop()
        try:
            assert await response.read(loop.time() + 0.1) == b"ok"
            with pytest.raises(TimeoutError):
                await response.read(loop.time() + 0.1)
        finally:
            response.release(delivered=False)


def closes_second_request(answered: list[int]) -> Handler:
    """Answers the first request on each connection; then reads the next and closes (a stale pool entry)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(OK)
        await writer.drain()
        answered.append(1)
        await read_head(reader)

    return handler


async def test_request_on_a_stale_pooled_connection_is_retried_once() -> None:
    answered: list[int] = []
    async with RawServer(closes_second_request(answered)) as server, client() as http:
        await fetch(http, server.origin)
        response, body = await fetch(http, server.origin)
        assert (response.status, body) == (200, b"ok")
    assert server.connections == 2
    assert len(answered) == 2


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_unsafe_request_on_a_stale_connection_is_not_retried(method: str) -> None:
    answered: list[int] = []
    async with RawServer(closes_second_request(answered)) as server, client() as http:
        await fetch(http, server.origin)
        with pytest.raises(UpstreamReset) as info:
            await fetch(http, server.origin, method)
    assert info.value.kind == "reset"
    assert server.connections == 1


async def test_request_with_a_body_on_a_stale_connection_is_not_retried() -> None:
    answered: list[int] = []
    async with RawServer(closes_second_request(answered)) as server, client() as http:
        await fetch(http, server.origin)
        with pytest.raises(UpstreamReset):
            await fetch(http, server.origin, "PUT", body=Body([b"abc"]))
    assert server.connections == 1


async def test_fresh_connection_closed_before_answer_is_not_retried() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)

    async with RawServer(handler) as server, client() as http:
        with pytest.raises(UpstreamReset):
            await fetch(http, server.origin)
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HTTP/1.1 2OO OK\r\n\r\n", id="garbled-status"),
        pytest.param(b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n", id="status-below-100"),
        pytest.param(b"HTTP/1.1 600 High\r\nContent-Length: 0\r\n\r\n", id="status-above-599"),
        pytest.param(b"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n", id="control-in-reason"),
        pytest.param(b"HTTP/1.1 200 O\x7fK\r\nContent-Length: 0\r\n\r\n", id="delete-in-reason"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", id="gzip-transfer-coding"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nxyz", id="gzip-until-close"
        ),
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", id="field-without-colon"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", id="double-length"),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n", id="upgrade"),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", id="switch-without-upgrade-field"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (20 * 1024) + b"\r\n\r\n", id="header-line-too-long"),
        pytest.param(b"HTTP/1.1 200 " + b"R" * (20 * 1024) + b"\r\n\r\n", id="status-line-too-long"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 8000) for i in range(200)) + b"\r\n",
            id="head-too-large",
        ),
    ],
)
async def test_bad_response(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(answer)
        await writer.drain()
        await reader.read()

    async with RawServer(handler) as server, client() as http:
        with pytest.raises(UpstreamBadResponse) as info:
            await fetch(http, server.origin)
    assert info.value.kind == "bad_response"
    assert "SECRET" not in str(info.value) and "SECRET" not in (info.value.strerror or "")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_reset_mid_body_fails_the_read(chunked: bool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        if chunked:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")
        await writer.drain()
        await asyncio.sleep(0.05)
        rst(writer)

    async with RawServer(handler) as server, client() as http:
        response = await http.request(server.origin, "GET", "/", CIMultiDict())
        assert response.status == 200
        received = b""
        with pytest.raises(UpstreamReset):
            async with asyncio.timeout(5):
                while chunk := await response.read():
                    received += chunk
        response.release(delivered=False)
    assert received == b"hello"


async def test_close_after_headers_with_length_is_a_reset() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        await writer.drain()

    async with RawServer(handler) as server, client() as http:
        with pytest.raises(UpstreamReset) as info:
            await fetch(http, server.origin)
    assert not info.value.before_response


async def test_close_before_headers_end_is_a_reset() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        await writer.drain()

    async with RawServer(handler) as server, client() as http:
        with pytest.raises(UpstreamReset):
            await fetch(http, server.origin)


async def test_body_delimited_by_close() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"second")
        await writer.drain()

    async with RawServer(handler) as server, client() as http:
        for _ in range(2):
            _, body = await fetch(http, server.origin)
            assert body == b"first second"
    assert server.connections == 2


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        pytest.param("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", id="head-with-length"),
        pytest.param("HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", id="head-chunked"),
        pytest.param("GET", b"HTTP/1.1 204 No Content\r\n\r\n", id="204"),
        pytest.param("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n", id="304-with-length"),
    ],
)
async def test_responses_without_body_keep_the_connection(method: str, answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            writer.write(answer)
            await writer.drain()

    async with RawServer(handler) as server, client() as http:
        for _ in range(3):
            _, body = await fetch(http, server.origin, method)
            assert body == b""
    assert server.connections == 1


async def test_interim_responses_are_skipped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"HTTP/1.1 201 Created\r\nX-Final: yes\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read()

    async with RawServer(handler) as server, client() as http:
        response, body = await fetch(http, server.origin)
    assert (response.status, response.reason, body) == (201, "Created", b"ok")
    assert list(response.headers.items()) == [("X-Final", "yes"), ("Content-Length", "2")]


async def test_unsolicited_bytes_on_an_idle_connection_close_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            writer.write(OK)
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(b"HTTP/1.1 200 OK\r\n")  # a second answer nobody asked for

    async with RawServer(handler) as server, client() as http:
        await fetch(http, server.origin)
        await asyncio.sleep(0.1)
        _, body = await fetch(http, server.origin)
        assert body == b"ok"
    assert server.connections == 2


async def test_a_second_answer_in_the_same_write_is_never_given_to_a_later_request() -> None:
    # an upstream that answers one request with two responses at once: the second must not wait
    # in the pooled connection for whoever asks next (response queue poisoning)
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            writer.write(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
            await writer.drain()

    async with RawServer(handler) as server, client() as http:
        answers = [(await fetch(http, server.origin))[1] for _ in range(2)]
    # the first answer is delivered; its connection is not pooled, so the next request gets a
    # new one and its own first answer
    assert answers == [b"ok", b"ok"]
    assert server.connections == 2


async def test_refused_connection() -> None:
    async with client() as http:
        with pytest.raises(UpstreamConnectError) as info:
            await fetch(http, f"http://127.0.0.1:{free_port()}")
    assert info.value.kind == "refused"
    assert info.value.strerror


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="no-length"),
        pytest.param({"Content-Length": "4"}, id="wrong-length"),
        pytest.param({"Transfer-Encoding": "chunked"}, id="chunked"),
    ],
)
async def test_content_sent_with_the_head_must_carry_its_own_length(fields: dict[str, str]) -> None:
    # a body that the upstream would frame differently from what is written is never sent
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        writer.close()

    async with RawServer(handler) as server, client() as http:
        with pytest.raises(ValueError, match="content goes alone, with its Content-Length"):
            await http.request(server.origin, "POST", "/token", CIMultiDict(fields), content=b"a=1&b=2")
    assert not any(received)


async def test_close_closes_pooled_connections() -> None:
    eof = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(OK)
        await writer.drain()
        assert await reader.read() == b""
        eof.set()

    async with RawServer(handler) as server:
        http = UpstreamClient()
        await fetch(http, server.origin)
        http.close()
        async with asyncio.timeout(2):
            await eof.wait()


# ---------------------------------------------------------------- request bodies


class Body:
    """A ``BodySource`` handing out ``parts``; waits for ``gate`` (if set) before each part after the first."""

    def __init__(self, parts: list[bytes], gate: asyncio.Event | None = None) -> None:
        self.parts = list(parts)
        self.gate = gate
        self.sent = 0

    async def readany(self) -> bytes:
        if not self.parts:
            return b""
        if self.sent and self.gate is not None:
            await self.gate.wait()
            self.gate.clear()
        self.sent += 1
        return self.parts.pop(0)


async def upload_server(seen: list[dict[str, Any]], gates: list[asyncio.Event]) -> web.AppRunner:
    async def upload(request: web.Request) -> web.Response:
        chunks = []
        async for chunk in request.content.iter_any():
            chunks.append(chunk)
            for gate in gates:
                gate.set()  # the proxy may send the next part only now: proof of streaming
        seen.append(
            {
                "body": b"".join(chunks),
                "content_length": request.headers.get("Content-Length"),
                "transfer_encoding": request.headers.get("Transfer-Encoding"),
                "host": request.headers.get("Host"),
            }
        )
        return web.Response(text="done")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upload)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    return runner


@pytest.mark.parametrize(
    ("headers", "expected_length", "expected_te"),
    [
        pytest.param({}, None, "chunked", id="chunked"),
        pytest.param({"Content-Length": "9"}, "9", None, id="content-length"),
    ],
)
async def test_request_body_streams_as_it_arrives(
    headers: dict[str, str], expected_length: str | None, expected_te: str | None
) -> None:
    seen: list[dict[str, Any]] = []
    gate = asyncio.Event()
    runner = await upload_server(seen, [gate])
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with client() as http, asyncio.timeout(5):
            body = Body([b"abc", b"def", b"ghi"], gate)
            response = await http.request(f"http://127.0.0.1:{port}", "POST", "/up", CIMultiDict(headers), body=body)
            assert response.status == 200
            assert await response.read() == b"done"
            response.release(delivered=True)
    finally:
        await runner.cleanup()
    assert seen == [
        {
            "body": b"abcdefghi",
            "content_length": expected_length,
            "transfer_encoding": expected_te,
            "host": f"127.0.0.1:{port}",
        }
    ]


async def test_failing_request_body_fails_the_exchange() -> None:
    class Broken:
        async def readany(self) -> bytes:
            raise ConnectionResetError("client went away")

    async with RawServer(keepalive_ok) as server, client() as http:
        with pytest.raises(UpstreamReset) as info:
            await fetch(http, server.origin, "POST", body=Broken())
    assert info.value.strerror == "ConnectionResetError"


async def test_early_answer_before_the_upload_ends_closes_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()

    never = asyncio.Event()
    async with RawServer(handler) as server, client() as http:
        response, _ = await fetch(http, server.origin, "POST", body=Body([b"a", b"b"], never))
        assert response.status == 413
        await fetch(http, server.origin)
    assert server.connections == 2


# ---------------------------------------------------------------- flow control


async def test_slow_reader_pauses_the_upstream() -> None:
    """Not reading the body keeps the buffer near ``read_bufsize``: TCP pushes back on the upstream."""
    total = 64 * 1024 * 1024
    wrote = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal wrote
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"x" * 65536
        while wrote < total:
            writer.write(block)
            await writer.drain()
            wrote += len(block)

    async with RawServer(handler) as server, client(read_bufsize=64 * 1024) as http:
        response = await http.request(server.origin, "GET", "/", CIMultiDict())
        await asyncio.sleep(0.5)
        stalled_at = wrote
        assert stalled_at < 16 * 1024 * 1024  # socket buffers, not the whole body
        received = 0
        async with asyncio.timeout(20):
            while chunk := await response.read():
                assert len(chunk) <= 64 * 1024 + 256 * 1024
                received += len(chunk)
        response.release(delivered=True)
    assert received == total


# ---------------------------------------------------------------- TLS


async def test_https_upstream_certificate_is_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert_path, key_path = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)
    async with RawServer(keepalive_ok, server_context) as server:
        # a self-signed certificate is not in the system store: refused, as aiohttp did
        async with client() as http:
            with pytest.raises(UpstreamConnectError) as info:
                await fetch(http, server.origin)
        assert info.value.kind == "refused"
        # trusted, the same upstream answers over one pooled TLS connection
        trusting = ssl.create_default_context(cafile=str(cert_path))
        monkeypatch.setattr(upstream_http, "TLS_CONTEXT", trusting)
        async with client() as http:
            for _ in range(2):
                response, body = await fetch(http, server.origin)
                assert (response.status, body) == (200, b"ok")
    # the refused handshake never reached the handler; the two requests shared one connection
    assert server.connections == 1


# ---------------------------------------------------------------- through the forwarder


async def test_forwarder_answers_502_for_a_garbled_upstream() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 99999 Nope\r\n\r\n")
        await writer.drain()

    async with (
        RawServer(handler) as server,
        serve_proxy(Route(server.origin)) as url,
        aiohttp.ClientSession() as session,
        session.get(url + "/x?token=SECRET", headers={"Accept": "application/json"}) as resp,
    ):
        assert resp.status == 502
        assert (await resp.json())["error"] == "upstream_unavailable"


async def test_forwarder_retries_a_stale_pooled_connection() -> None:
    answered: list[int] = []
    async with (
        RawServer(closes_second_request(answered)) as server,
        serve_proxy(Route(server.origin)) as url,
        aiohttp.ClientSession() as session,
    ):
        for _ in range(3):
            async with session.get(url + "/") as resp:
                assert resp.status == 200
                assert await resp.read() == b"ok"
    assert len(answered) == 3
