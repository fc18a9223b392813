"""aiohttp's request handler gives an idle connection back to the fast path (authproxy.handback).

A real aiohttp ``web.Server`` on a loopback socket, served by :class:`ReturningRequestHandler`
whose ``give_back`` moves the transport to a protocol that only records what arrives: a
request answered by aiohttp and followed by bytes that reach that protocol was given back; one
answered by aiohttp again was not. Run on asyncio's loop and on uvloop (the proxy's).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvloop
from aiohttp import web

from authproxy.handback import ReturningRequestHandler
from tests.support.tls import tls_contexts


class Taken(asyncio.Protocol):
    """What the fast path would be: records the bytes it gets after the hand-back."""

    def __init__(self) -> None:
        self.data = b""
        self.arrived = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.arrived.set()


@dataclass
class Harness:
    server: web.Server
    accept: bool = True
    given_back: list[Taken] = field(default_factory=list)

    def give_back(self, transport: asyncio.Transport) -> bool:
        if not self.accept:
            return False
        taken = Taken()
        transport.set_protocol(taken)
        self.given_back.append(taken)
        return True


async def answer(request: web.BaseRequest) -> web.StreamResponse:
    body = await request.read()
    return web.Response(text=f"{request.method} {request.path} {len(body)}")


@contextlib.asynccontextmanager
async def serving(
    accept: bool = True, tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None
) -> AsyncIterator[tuple[Harness, asyncio.StreamReader, asyncio.StreamWriter]]:
    loop = asyncio.get_running_loop()
    harness = Harness(web.Server(answer), accept)
    listener = await loop.create_server(
        lambda: ReturningRequestHandler(harness.server, give_back=harness.give_back, loop=loop),
        "127.0.0.1",
        0,
        ssl=tls[0] if tls else None,
    )
    port = listener.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls[1] if tls else None)
    try:
        yield harness, reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        listener.close()
        await harness.server.shutdown(1.0)


def request(path: str, *extra: str, method: str = "GET", version: str = "1.1", body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: app.test", *extra]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    return await asyncio.wait_for(reader.readexactly(length), 5)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


Check = Callable[[], Awaitable[None]]


def on_both_loops(check: Check) -> Callable[[], None]:
    def run() -> None:
        asyncio.run(check())
        uvloop.run(check())

    run.__name__ = check.__name__
    return run


@pytest.mark.parametrize("over_tls", [False, True], ids=["plain", "tls"])
def test_an_idle_keep_alive_connection_is_given_back_after_a_get(over_tls: bool, tmp_path: Path) -> None:
    # over TLS the transport given back is the TLS layer's: the bytes after it arrive decrypted
    tls = tls_contexts(tmp_path) if over_tls else None

    async def check() -> None:
        async with serving(tls=tls) as (harness, reader, writer):
            writer.write(request("/a"))
            assert await read_answer(reader) == b"GET /a 0"
            await settle()
            assert len(harness.given_back) == 1
            writer.write(request("/next"))
            await asyncio.wait_for(harness.given_back[0].arrived.wait(), 5)
            assert harness.given_back[0].data == request("/next")
            # aiohttp let go of it: no longer among its connections, and its loop ended
            await settle()
            assert harness.server.connections == []

    asyncio.run(check())
    uvloop.run(check())


@on_both_loops
async def test_a_head_request_is_given_back_too() -> None:
    async with serving() as (harness, reader, writer):
        writer.write(request("/a", method="HEAD"))
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        await settle()
        assert len(harness.given_back) == 1


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(request("/form", method="POST", body=b"x=1"), id="a-request-with-a-body"),
        pytest.param(request("/a", method="DELETE"), id="not-get-or-head"),
        pytest.param(request("/a", "Connection: keep-alive", version="1.0"), id="http-1.0"),
    ],
)
def test_aiohttp_keeps_a_connection_after_other_requests(first: bytes) -> None:
    async def check() -> None:
        async with serving() as (harness, reader, writer):
            writer.write(first)
            await read_answer(reader)
            await settle()
            assert harness.given_back == []
            # and goes on serving it: the GET that follows is aiohttp's, then given back
            writer.write(request("/then"))
            assert await read_answer(reader) == b"GET /then 0"
            await settle()
            assert len(harness.given_back) == 1

    asyncio.run(check())


@on_both_loops
async def test_a_connection_closing_after_its_answer_is_not_given_back() -> None:
    async with serving() as (harness, reader, writer):
        writer.write(request("/a", "Connection: close"))
        assert await read_answer(reader) == b"GET /a 0"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert harness.given_back == []


@on_both_loops
async def test_pipelined_requests_stay_with_aiohttp_until_the_last_is_answered() -> None:
    async with serving() as (harness, reader, writer):
        writer.write(request("/1") + request("/2") + request("/3"))
        assert [await read_answer(reader) for _ in range(3)] == [b"GET /1 0", b"GET /2 0", b"GET /3 0"]
        await settle()
        assert len(harness.given_back) == 1


@on_both_loops
async def test_part_of_a_next_request_already_read_keeps_the_connection_with_aiohttp() -> None:
    async with serving() as (harness, reader, writer):
        following = request("/2")
        writer.write(request("/1") + following[:9])
        assert await read_answer(reader) == b"GET /1 0"
        await settle()
        assert harness.given_back == []  # aiohttp's parser holds "GET /2 HT"
        writer.write(following[9:])
        assert await read_answer(reader) == b"GET /2 0"
        await settle()
        assert len(harness.given_back) == 1


@on_both_loops
async def test_a_declined_give_back_leaves_aiohttp_serving() -> None:
    async with serving(accept=False) as (harness, reader, writer):
        for path in ("/1", "/2", "/3"):
            writer.write(request(path))
            assert await read_answer(reader) == f"GET {path} 0".encode()
        assert harness.given_back == []
        assert len(harness.server.connections) == 1


@on_both_loops
async def test_a_handler_that_gave_its_connection_back_is_freed_without_the_garbage_collector() -> None:
    # its parser refers back to it: left in place, each hand-back would leave a reference cycle
    gc.collect()
    gc.disable()
    try:
        async with serving() as (harness, reader, writer):
            writer.write(request("/a"))
            await read_answer(reader)
            await settle()
            assert len(harness.given_back) == 1
            assert [o for o in gc.get_objects() if isinstance(o, ReturningRequestHandler)] == []
    finally:
        gc.enable()
