"""The main listener accepts a burst of connections in one loop turn, not one per turn."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest
import uvloop

from authproxy.listener import serve_in_batches
from tests.support.tls import tls_contexts

BURST = 64


class Recorder(asyncio.Protocol):
    made: ClassVar[list[Recorder]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast("asyncio.Transport", transport)
        Recorder.made.append(self)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def on_uvloop(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``test`` on uvloop, the loop authproxy runs on (and the one that accepts one per turn)."""
    Recorder.made = []

    async def run_and_close() -> None:
        try:
            await test()
        finally:
            for made in Recorder.made:
                made.transport.close()
            await turns(2)

    uvloop.run(run_and_close())


async def turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def connect_burst(port: int) -> list[socket.socket]:
    # connect() completes in the kernel (the listen backlog) without the server's loop running
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(BURST)]


def test_a_burst_of_connections_is_accepted_within_a_few_loop_turns() -> None:
    async def check() -> None:
        server = serve_in_batches("127.0.0.1", 0, Recorder, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        clients = connect_burst(port)
        try:
            await turns(4)  # readable -> accept all -> attach tasks run -> connection_made
            assert len(Recorder.made) == BURST
        finally:
            for client in clients:
                client.close()
            server.close()
            await server.wait_closed()

    on_uvloop(check)


def test_the_loops_own_server_would_accept_the_burst_one_turn_at_a_time() -> None:
    """What the listener exists for: uvloop's create_server leaves most of the burst waiting."""

    async def check() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Recorder, "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        clients = connect_burst(port)
        try:
            await turns(4)
            assert len(Recorder.made) < BURST
        finally:
            for client in clients:
                client.close()
            server.close()

    on_uvloop(check)


def test_accepted_connections_are_served_and_closing_stops_accepting() -> None:
    async def check() -> None:
        server = serve_in_batches("127.0.0.1", 0, Recorder, backlog=16)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        # a connection made before the close is not cut off
        writer.write(b"pong")
        assert await reader.readexactly(4) == b"pong"
        writer.close()
        await writer.wait_closed()

    on_uvloop(check)


def test_both_families_of_a_wildcard_host_are_bound_on_one_port() -> None:
    async def check() -> None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        server = serve_in_batches("localhost", port, Recorder, backlog=16)
        try:
            assert {sock.getsockname()[1] for sock in server.sockets} == {port}
            assert socket.AF_INET in {sock.family for sock in server.sockets}
        finally:
            server.close()
            await server.wait_closed()

    on_uvloop(check)


def test_a_tls_listener_completes_the_handshake_and_serves(tmp_path: Path) -> None:
    server_context, client_context = tls_contexts(tmp_path)

    async def check() -> None:
        server = serve_in_batches("127.0.0.1", 0, Recorder, backlog=16, ssl_context=server_context)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context)
            writer.write(b"over tls")
            assert await reader.readexactly(8) == b"over tls"
            writer.close()
            await writer.wait_closed()
            # a client that does not trust the certificate gets no connection, and the listener lives on
            with pytest.raises(ssl.SSLError):
                await asyncio.open_connection("127.0.0.1", port, ssl=ssl.create_default_context())
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context)
            writer.write(b"again")
            assert await reader.readexactly(5) == b"again"
            writer.close()
            await writer.wait_closed()
        finally:
            server.close()
            await server.wait_closed()

    on_uvloop(check)
