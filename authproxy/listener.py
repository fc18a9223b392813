"""The main listener's sockets, accepted from in batches so that no new connection waits for long.

uvloop (libuv) accepts one pending connection per turn of the event loop. Under load a turn
lasts as long as it takes to serve every request that became ready in it (tens of milliseconds
at a few hundred connections), so a burst of new connections (a client opening 256 at once, a
load balancer reconnecting) is accepted one turn at a time: the last of them waited seconds
before its first request was even read, while the connections accepted earlier were served
many times over. asyncio's own loop accepts up to the backlog per turn; this does the same on
any loop. Each turn the listening socket is readable, every pending connection (up to
``max_per_turn``) is accepted and handed to the loop with ``connect_accepted_socket``, so its
first request joins the same queue as everyone else's.

Running out of file descriptors (or kernel memory) pauses accepting for ``PAUSE_ON_ERROR``
seconds, as asyncio does, instead of spinning on a socket that stays readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Final

LOG: Final = logging.getLogger("authproxy.listener")

PAUSE_ON_ERROR: Final = 1.0
# errors that say "the process or the kernel is out of something", not "this connection failed"
_RESOURCE_ERRORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def listening_sockets(host: str | None, port: int, *, backlog: int, reuse_port: bool) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address ``host`` resolves to (as asyncio binds)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                # one socket per family, as asyncio does, so "::" and "0.0.0.0" do not collide
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class BatchAcceptor:
    """Accepts every pending connection of one listening socket each turn it is readable."""

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_per_turn: int = 1024,
    ) -> None:
        self.sock = sock
        self._factory = protocol_factory
        self._ssl = ssl_context
        self._max_per_turn = max_per_turn
        self._loop = asyncio.get_running_loop()
        self._accepting = False
        self._closed = False
        self._resume: asyncio.TimerHandle | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if not self._accepting and not self._closed:
            self._accepting = True
            self._loop.add_reader(self.sock.fileno(), self._accept_ready)

    def _pause(self) -> None:
        if self._accepting:
            self._accepting = False
            self._loop.remove_reader(self.sock.fileno())

    def _accept_ready(self) -> None:
        for _ in range(self._max_per_turn):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # gone before it was accepted
            except OSError as e:
                if e.errno not in _RESOURCE_ERRORS:
                    raise
                LOG.warning("cannot accept connections: %s; pausing", e.strerror)
                self._pause()
                self._resume = self._loop.call_later(PAUSE_ON_ERROR, self.start)
                return
            self._connect(conn)

    def _connect(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # the transport exists once the task first runs (this turn's callbacks); with TLS the
        # handshake then runs in the background like any other read
        task = self._loop.create_task(self._attach(conn))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _attach(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn, ssl=self._ssl)
        except (OSError, ssl.SSLError) as e:
            # a failed TLS handshake or a client that left: its own problem, not the listener's
            LOG.debug("connection dropped before it was set up: %s", type(e).__name__)
            conn.close()

    def close(self) -> None:
        """Stop accepting and close the listening socket (connections already made stay open)."""
        self._closed = True
        self._pause()
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        self.sock.close()

    async def wait_closed(self) -> None:
        for task in list(self._handshakes):
            task.cancel()
        if self._handshakes:
            await asyncio.wait(list(self._handshakes))


class BatchServer:
    """The listening sockets of one site; looks enough like ``asyncio.Server`` for aiohttp's site."""

    def __init__(self, acceptors: list[BatchAcceptor]) -> None:
        self._acceptors = acceptors

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(acceptor.sock for acceptor in self._acceptors)

    def start(self) -> None:
        for acceptor in self._acceptors:
            acceptor.start()

    def close(self) -> None:
        for acceptor in self._acceptors:
            acceptor.close()

    async def wait_closed(self) -> None:
        for acceptor in self._acceptors:
            await acceptor.wait_closed()


def serve_in_batches(
    host: str | None,
    port: int,
    protocol_factory: Callable[[], asyncio.Protocol],
    *,
    backlog: int,
    reuse_port: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> BatchServer:
    """Listen on ``host:port`` and start accepting in batches (call from the running loop)."""
    sockets = listening_sockets(host, port, backlog=backlog, reuse_port=reuse_port)
    server = BatchServer(
        [BatchAcceptor(sock, protocol_factory, ssl_context=ssl_context, max_per_turn=backlog) for sock in sockets]
    )
    server.start()
    return server
