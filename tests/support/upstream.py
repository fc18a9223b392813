"""A real aiohttp upstream on 127.0.0.1 and a minimal proxy app around ``Forwarder``.

Upstream routes:
  /echo, and any path not listed  method, raw path, raw query, header pairs, body size (JSON)
  /big?mb=N[&chunked=1][&reset_after=B]   N MiB generated on the fly (Content-Length unless chunked)
  /upload                         byte count and sha256 of the streamed request body
  /sse                            one event, then waits for ``upstream.release``, then two more
  /chunked                        three chunks written with pauses, no Content-Length
  /drip?n=K&interval=S            K small chunks S seconds apart (a slow but active download)
  /stall                          one chunk, then silence until ``release``
  /slow?s=N                       headers only after N seconds
  /hop                            hop-by-hop response headers, some named in Connection
  /gzip                           a gzip-encoded body with Content-Encoding and Content-Length
  /redirect                       302 to /echo
  /reset                          resets the connection (RST) instead of answering
  /ws                             WebSocket echo: text, binary; "close:<code>" closes with that code,
                                  "drop" resets the connection without a close frame

The proxy harness (``serve_proxy``) wires ``Forwarder`` the way ``authproxy.app`` does: request
id from ``authproxy.headers.request_id``, ``AuthproxyError`` rendered by ``authproxy.pages``, any
other exception a plain 500 page. Tests that need the proxy in its own process (memory) use
``tests.support.proxy_process.run_proxy``, the real ``authproxy run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import ipaddress
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from authproxy import headers, pages
from authproxy.errors import AuthproxyError
from authproxy.proxy import Forwarder
from tests.support.net import free_port

BLOCK = b"0123456789abcdef" * (256 * 1024 // 16)  # 256 KiB, allocated once
MIB = 1024 * 1024
GZIP_PLAIN = b"hello compressed world\n" * 200
GZIP_BODY = gzip.compress(GZIP_PLAIN, mtime=0)


def _reset(request: web.Request) -> None:
    """Close the client connection with a TCP RST (SO_LINGER 0), mid-whatever."""
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class Upstream:
    """The upstream application; ``release`` lets /sse and /stall continue."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        # set when the proxy closed an /sse exchange before its end (the handler is cancelled)
        self.sse_abandoned = asyncio.Event()
        # set when the proxy closed a /big exchange before its end
        self.big_abandoned = asyncio.Event()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/big", self.big)
        r.add_post("/upload", self.upload)
        r.add_put("/upload", self.upload)
        r.add_get("/sse", self.sse)
        r.add_get("/chunked", self.chunked)
        r.add_get("/drip", self.drip)
        r.add_get("/stall", self.stall)
        r.add_get("/slow", self.slow)
        r.add_get("/hop", self.hop)
        r.add_get("/gzip", self.gzip)
        r.add_get("/redirect", self.redirect)
        r.add_get("/set-cookies", self.set_cookies)
        # /cached, /optional/cached...: under any route's prefix
        r.add_route("*", r"/{under:(.*/)?}cached", self.cached)
        r.add_route("*", "/reset", self.reset)
        r.add_get("/ws", self.ws)
        r.add_route("*", r"/{tail:[\s\S]*}", self.echo)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def echo(self, request: web.Request) -> web.Response:
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        return web.json_response(
            {
                "method": request.method,
                "path": request.rel_url.raw_path,
                "query": request.rel_url.raw_query_string,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_size": size,
                "peer": request.remote,
                # which of the proxy's connections brought it: reuse shows as the same port
                "peer_port": (request.transport.get_extra_info("peername") or ("", 0))[1]
                if request.transport is not None
                else 0,
            },
            headers={"Set-Cookie": "upstream=1; Path=/"},
        )

    async def big(self, request: web.Request) -> web.StreamResponse:
        # ?kb= for answers that fit in one read of the proxy's (pipelined requests of many of them)
        total = int(request.query["kb"]) * 1024 if "kb" in request.query else int(request.query.get("mb", "1")) * MIB
        reset_after = int(request.query.get("reset_after", "-1"))
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if request.query.get("chunked") != "1":
            response.content_length = total
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        sent = 0
        try:
            while sent < total:
                block = BLOCK[: min(len(BLOCK), total - sent)]
                if 0 <= reset_after <= sent:
                    _reset(request)
                    return response
                await response.write(block)
                sent += len(block)
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionError):
            self.big_abandoned.set()
            raise
        return response

    async def upload(self, request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        return web.json_response(
            {
                "size": size,
                "sha256": digest.hexdigest(),
                "content_length": request.headers.get("Content-Length"),
                "transfer_encoding": request.headers.get("Transfer-Encoding"),
                "content_type": request.headers.get("Content-Type"),
            }
        )

    async def sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(b"id: 1\ndata: first\n\n")
        try:
            await asyncio.wait_for(self.release.wait(), 30)
        except asyncio.CancelledError:
            self.sse_abandoned.set()
            raise
        await response.write(b"id: 2\ndata: second\n\n")
        await response.write(b"id: 3\ndata: third\n\n")
        await response.write_eof()
        return response

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for part in (b"alpha\n", b"beta\n", b"gamma\n"):
            await response.write(part)
            await asyncio.sleep(0.05)
        await response.write_eof()
        return response

    async def drip(self, request: web.Request) -> web.StreamResponse:
        count = int(request.query.get("n", "5"))
        interval = float(request.query.get("interval", "0.2"))
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for i in range(count):
            await response.write(f"drop {i}\n".encode())
            await asyncio.sleep(interval)
        await response.write_eof()
        return response

    async def stall(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(b"start\n")
        await asyncio.wait_for(self.release.wait(), 30)
        await response.write(b"end\n")
        await response.write_eof()
        return response

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "5")))
        return web.Response(text="finally")

    async def hop(self, request: web.Request) -> web.Response:
        response = web.Response(text="hop")
        response.headers["Connection"] = "keep-alive, X-Secret-Hop"
        response.headers["X-Secret-Hop"] = "must not pass"
        response.headers["Keep-Alive"] = "timeout=5"
        response.headers["Proxy-Authenticate"] = "Basic"
        response.headers["Trailer"] = "X-Checksum"
        response.headers["Upgrade"] = "h2c"
        response.headers["X-End-To-End"] = "kept"
        return response

    async def gzip(self, request: web.Request) -> web.Response:
        return web.Response(
            body=GZIP_BODY, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"}
        )

    async def set_cookies(self, request: web.Request) -> web.Response:
        """``Set-Cookie: <name>=planted`` for each ``?name=`` (an upstream setting cookies)."""
        response = web.Response(text="cookies")
        for name in request.query.getall("name", []):
            response.headers.add("Set-Cookie", f"{name}=planted; Path=/")
        return response

    async def cached(self, request: web.Request) -> web.Response:
        """A page a shared cache could keep by heuristics (RFC 9111 section 4.2.2: ``Last-Modified``),
        with ``?cc=`` as its ``Cache-Control`` when given; 304 to a matching ``If-None-Match``."""
        await request.read()
        fields = {"Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT", "ETag": '"v1"'}
        if "cc" in request.query:
            fields["Cache-Control"] = request.query["cc"]
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers=fields)
        return web.Response(text="someone's own page", headers=fields)

    async def redirect(self, request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/echo?from=redirect"})

    async def reset(self, request: web.Request) -> web.Response:
        _reset(request)
        # nothing reaches the client; wait for aiohttp to notice the closed transport
        await asyncio.sleep(30)
        return web.Response(text="unreachable")

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("chat.v2", "chat.v1"))
        await ws.prepare(request)
        await ws.send_str(f"hello {ws.ws_protocol or '-'}")
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                if msg.data == "drop":
                    _reset(request)
                    break
                if msg.data.startswith("close:"):
                    await ws.close(code=int(msg.data.split(":", 1)[1]), message=b"bye")
                    break
                await ws.send_str("echo:" + msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(b"echo:" + msg.data)
        return ws


@pytest.fixture(name="upstream")
async def upstream_fixture() -> AsyncIterator[Upstream]:
    """A started ``Upstream``; import ``upstream_fixture`` into a test module to use ``upstream``."""
    server = Upstream()
    await server.start()
    yield server
    await server.close()


# ---------------------------------------------------------------- proxy harness


@dataclass(frozen=True)
class Match:
    path_prefix: str = "/"
    host: str | None = None


@dataclass(frozen=True)
class Route:
    """The route fields ``Forwarder`` reads, with the config defaults."""

    upstream: str
    name: str = "app"
    match: Match = field(default_factory=Match)
    pass_host_header: bool = True
    strip_path_prefix: bool = False
    websocket: bool = True
    timeout: float = 60.0


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_proxy_app(
    route: Route,
    *,
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
    add_headers: Mapping[str, str] | None = None,
    strip_names: frozenset[str] = frozenset(),
    strip_cookies: frozenset[str] = frozenset(),
    identified: bool = False,
) -> tuple[web.Application, Forwarder]:
    """One route, no auth: what ``authproxy.app`` does around the forwarder (``identified``: as
    for a request the gate let through with an identity)."""
    forwarder = Forwarder(trusted_proxies=trusted_proxies)

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        trusted = headers.peer_is_trusted(request.remote, trusted_proxies)
        request_id = headers.request_id(request.headers.get("X-Request-Id"), trusted)
        request[pages.REQUEST_ID] = request_id
        try:
            return await handler(request)
        except AuthproxyError as e:
            return pages.error_for_exception(request, e, request_id=request_id)
        except web.HTTPException:
            raise
        except Exception:
            return pages.error_response(request, 500, "Internal error", "Something went wrong.", request_id=request_id)

    async def proxy(request: web.Request) -> web.StreamResponse:
        return await forwarder.forward(
            request,
            route,
            request_id=request[pages.REQUEST_ID],
            add_headers=add_headers or {},
            strip_names=strip_names,
            strip_cookies=strip_cookies,
            identified=identified,
        )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        yield
        await forwarder.close()

    app = web.Application(middlewares=[errors])
    app.cleanup_ctx.append(lifecycle)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app, forwarder


@contextlib.asynccontextmanager
async def serve_here(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` in this event loop on a free 127.0.0.1 port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_proxy(route: Route, **kwargs: Any) -> AsyncIterator[str]:
    """Serve ``build_proxy_app`` on a free 127.0.0.1 port; yields its base URL."""
    app, _ = build_proxy_app(route, **kwargs)
    async with serve_here(app) as url:
        yield url


async def raw_request(
    url: str, head: str, body: bytes = b"", *, timeout: float = 10.0
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send ``head`` (request line and headers, no final blank line) byte for byte; read to close.

    For what a polite client library would not send: hop-by-hop fields, dot segments.
    """
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    return status, fields, rest
