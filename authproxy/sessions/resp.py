"""A lean Redis client for a standalone server: RESP over one multiplexed asyncio connection.

redis-py's asyncio client spends about 60 µs of CPU on every command (connection pool, retry
wrapper, per-call timeouts, stream reader); the proxy's own work around a command is a fraction of
that. For a standalone server (``redis://``, ``rediss://``, ``unix://`` without options in the
query), :class:`LeanRedis` sends every command of the process down one connection and matches the
answers in order (RESP guarantees answers in the order of the commands,
https://redis.io/docs/latest/develop/reference/protocol-spec/); ``hiredis`` writes the commands
and parses the answers. A command then costs about a quarter of the CPU, several commands sent
together cost one round trip (:meth:`LeanRedis.execute_many`), and no connection pool can run
dry under load. Sentinel and Cluster stay on redis-py, which knows their topologies.

It offers the subset of redis-py's ``Redis`` methods that :class:`~authproxy.sessions.redis.RedisStore`
uses, with the same answers and redis-py's own exception classes, so the store treats both alike:

- a connection that cannot be made, breaks, or fails its handshake (``AUTH``, ``SELECT``) raises
  ``redis.exceptions.ConnectionError``; every command in flight on a broken connection fails, and
  the next command dials again;
- an error answer raises ``redis.exceptions.ResponseError``, or ``ReadOnlyError`` /
  ``BusyLoadingError`` for a replica or a server still loading its data (both mean "unavailable").

Every command has a deadline (``command_timeout``): one timer per connection, armed for the oldest
command waiting, fails each command not answered by its deadline with ``redis.exceptions.
TimeoutError``, in the order they were sent, instead of a timer per call. A command that failed
or was abandoned by its caller keeps its place in the queue, so later answers still reach the
right callers; a connection whose oldest command has waited longer than ``stall_timeout`` without
any answer is dropped before the next command is sent, so a dead path is not reused forever.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import math
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import BusyLoadingError, ReadOnlyError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

DEFAULT_PORT: Final = 6379

Arg = str | bytes | int


# ---------------------------------------------------------------------- pure RESP pieces


# hiredis writes a command in C; its stub declares a one-element tuple where any length is taken
_pack_command: Final = cast("Callable[[tuple[Arg, ...]], bytes]", hiredis.pack_command)


def encode_command(*args: Arg) -> bytes:
    """A command as a RESP array of bulk strings (integers in decimal, text as UTF-8)."""
    return _pack_command(args)


def replies(reader: hiredis.Reader, data: bytes) -> Iterator[object]:
    """The answers ``data`` completes, in order; ``hiredis.ProtocolError`` when it is not RESP."""
    reader.feed(data)
    while (reply := reader.gets()) is not False:
        yield reply


def error_for_reply(reply: hiredis.ReplyError) -> RedisError:
    """redis-py's exception for an error answer: unavailable (replica, loading) or refused."""
    text = str(reply)
    if text.startswith("READONLY"):
        return ReadOnlyError(text)
    if text.startswith("LOADING"):
        return BusyLoadingError(text)
    return ResponseError(text)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: a TCP host and port, or a Unix socket path, with credentials."""

    host: str | None = None
    port: int = DEFAULT_PORT
    path: str | None = None
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never into a log line or traceback
    database: int = 0
    # the trust a ``rediss://`` URL's options ask for (``?ssl_ca_certs=``...); None: the system's.
    # Not part of the address: two endpoints naming one server are equal whatever their contexts
    tls_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    def client_tls_context(self) -> ssl.SSLContext | None:
        """The context to dial with: this endpoint's own, else a verifying one on the system store."""
        if not self.tls:
            return None
        return self.tls_context or ssl.create_default_context()

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if parts.scheme == "unix":
            return cls(path=parts.path, username=username, password=password)
        database = parts.path.strip("/")
        return cls(
            host=parts.hostname,
            port=parts.port or DEFAULT_PORT,
            tls=parts.scheme == "rediss",
            username=username,
            password=password,
            database=int(database) if database.isdigit() else 0,
        )

    @staticmethod
    def understands(url: str) -> bool:
        """Whether ``from_url`` captures everything ``url`` asks for (no query options, known scheme)."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix") or parts.query:
            return False
        database = parts.path.strip("/")
        return parts.scheme == "unix" or database == "" or database.isdigit()

    def auth_command(self) -> bytes:
        """``AUTH`` when credentials are configured, else nothing."""
        if self.password is None:
            return b""
        if self.username:
            return encode_command("AUTH", self.username, self.password)
        return encode_command("AUTH", self.password)

    def handshake(self) -> tuple[bytes, int]:
        """The commands that prepare a command connection (``AUTH``, ``SELECT``) and how many."""
        commands = [self.auth_command()] if self.password is not None else []
        if self.database:
            commands.append(encode_command("SELECT", self.database))
        return b"".join(commands), len(commands)


# ---------------------------------------------------------------------- the connection


class RespConnection(asyncio.Protocol):
    """One connection: commands written as they come, answers handed out in the same order."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader = hiredis.Reader()
        # each command's answer and the loop time by which it must have come
        self._waiters: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._deadline_timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False
        # when the connection last showed progress: an answer, or the first command after idling
        self._progress = self._loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        waiters = self._waiters
        try:
            for reply in replies(self._reader, data):
                if not waiters:
                    self.fail("Redis answered a command that was never sent")
                    return
                self._progress = self._loop.time()
                waiter, _ = waiters.popleft()
                if not waiter.done():  # a caller that gave up (deadline, cancellation) is skipped
                    waiter.set_result(reply)
        except hiredis.ProtocolError:
            self.fail("Redis sent a garbled answer")

    def eof_received(self) -> bool | None:
        return False  # close our side too: Redis does not half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_waiters("Redis closed the connection")

    def send(self, data: bytes, count: int, timeout: float | None = None) -> list[asyncio.Future[Any]]:
        """Write ``count`` commands already encoded in ``data``; one future per answer.

        With ``timeout``, an answer not in within that many seconds fails its future. Deadlines
        expire in the order the commands were sent, so every caller should pass the same timeout.
        """
        if self.closed or self.transport is None or self.transport.is_closing():
            raise RedisConnectionError("the connection to Redis is closed")
        now = self._loop.time()
        if not self._waiters:
            self._progress = now
        deadline = math.inf if timeout is None else now + timeout
        futures = [self._loop.create_future() for _ in range(count)]
        self._waiters.extend((future, deadline) for future in futures)
        if self._deadline_timer is None and timeout is not None:
            self._deadline_timer = self._loop.call_at(deadline, self._expire)
        self.transport.write(data)
        return futures

    def _expire(self) -> None:
        """Fail the commands whose deadline has passed, and wait for the next one's."""
        self._deadline_timer = None
        now = self._loop.time()
        for waiter, deadline in self._waiters:
            if deadline > now:
                if deadline != math.inf:
                    self._deadline_timer = self._loop.call_at(deadline, self._expire)
                return
            if not waiter.done():
                waiter.set_exception(RedisTimeoutError("Redis did not answer in time"))
                waiter.exception()  # its caller may be waiting on an earlier one: no warning

    def stalled(self, timeout: float) -> bool:
        """Commands are waiting and nothing has come back for ``timeout`` seconds."""
        return bool(self._waiters) and self._loop.time() - self._progress > timeout

    def fail(self, reason: str) -> None:
        """Drop the connection; every command in flight fails with ``reason``."""
        self.closed = True
        self._fail_waiters(reason)
        if self.transport is not None:
            self.transport.abort()

    def _fail_waiters(self, reason: str) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter, _ in waiters:
            if not waiter.done():
                waiter.set_exception(RedisConnectionError(reason))
                # a caller that gave up never reads it: mark it seen so asyncio does not warn
                waiter.exception()


# ---------------------------------------------------------------------- the client


Command = Sequence[Arg]


class LeanRedis:
    """The commands :class:`~authproxy.sessions.redis.RedisStore` needs, over one :class:`RespConnection`."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        connect_timeout: float,
        stall_timeout: float,
        command_timeout: float | None = None,
    ) -> None:
        """``command_timeout`` bounds each command's wait for its answer (none without it)."""
        self._endpoint = endpoint
        self._connect_timeout = connect_timeout
        self._stall_timeout = stall_timeout
        self._command_timeout = command_timeout
        self._connection: RespConnection | None = None
        self._connecting: asyncio.Future[RespConnection] | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, timeout: float) -> LeanRedis:
        return cls(Endpoint.from_url(url), connect_timeout=timeout, stall_timeout=timeout, command_timeout=timeout)

    # -- commands, answered as redis-py answers them

    async def get(self, key: str) -> bytes | None:
        return cast("bytes | None", await self.execute_command("GET", key))

    async def getdel(self, key: str) -> bytes | None:
        return cast("bytes | None", await self.execute_command("GETDEL", key))

    async def set(
        self, key: str, value: bytes | str, *, px: int | None = None, nx: bool = False, xx: bool = False
    ) -> bool | None:
        """True when stored; None when ``nx``/``xx`` kept it from being stored (as redis-py)."""
        return await self.execute_command(*set_command(key, value, px=px, nx=nx, xx=xx)) == b"OK" or None

    async def delete(self, *keys: str) -> int:
        return cast("int", await self.execute_command("DEL", *keys))

    async def eval(self, script: str, numkeys: int, *args: Arg) -> Any:
        return await self.execute_command("EVAL", script, numkeys, *args)

    async def smembers(self, key: str) -> builtins.set[bytes]:
        return set(cast("list[bytes]", await self.execute_command("SMEMBERS", key)))

    async def srem(self, key: str, *members: str) -> int:
        return cast("int", await self.execute_command("SREM", key, *members))

    async def publish(self, channel: str, message: str) -> int:
        return cast("int", await self.execute_command("PUBLISH", channel, message))

    async def ping(self) -> bool:
        return bool(await self.execute_command("PING") == b"PONG")

    async def execute_command(self, *args: Arg) -> Any:
        """One command's raw answer (bulk strings as bytes, integers as int, nil as None)."""
        (answer,) = await self.execute_many((args,))
        return answer

    async def execute_many(self, commands: Iterable[Command]) -> list[Any]:
        """Send ``commands`` in one write and return their raw answers, in order (one round trip).

        An error answer to any of them raises (after all were answered), like redis-py's
        ``pipeline(transaction=False)``.
        """
        batch = [tuple(command) for command in commands]
        encoded = [_pack_command(command) for command in batch]
        data, count = b"".join(encoded), len(encoded)
        timeout = self._command_timeout
        connection, fresh = await self._ready()
        try:
            answers = [await future for future in connection.send(data, count, timeout)]
        except RedisConnectionError:
            if fresh or not all(may_run_twice(command) for command in batch):
                raise
            # the kept connection was already dead (Redis restarted since its last answer): one
            # more try on a fresh connection, as redis-py's retry on connection errors does. Only
            # for commands that may run twice: a reset after the write leaves no way to tell
            # whether Redis ran them (an INCR counted twice, a lock taken by nobody, a GETDEL's
            # value gone), and then the caller's error is the honest answer
            connection, _ = await self._ready()
            answers = [await future for future in connection.send(data, count, timeout)]
        for answer in answers:
            if isinstance(answer, hiredis.ReplyError):
                raise error_for_reply(answer)
        return answers

    async def aclose(self) -> None:
        self._closed = True
        if self._connection is not None:
            self._connection.fail("the client was closed")
            self._connection = None

    # -- the connection

    async def _ready(self) -> tuple[RespConnection, bool]:
        """The connection to send on, and whether it was dialled for this call."""
        connection = self._connection
        if connection is not None and not connection.closed:
            if not connection.stalled(self._stall_timeout):
                return connection, False
            connection.fail("Redis stopped answering")
        if self._closed:
            raise RedisConnectionError("the client was closed")
        if self._connecting is None:
            # one dial for all callers that arrive meanwhile; it runs on even if its first
            # caller gives up, so the others are not failed by someone else's deadline
            self._connecting = asyncio.ensure_future(self._dial())
            self._connecting.add_done_callback(_retrieve)
        return await asyncio.shield(self._connecting), True

    async def _dial(self) -> RespConnection:
        loop = asyncio.get_running_loop()
        endpoint = self._endpoint
        connection: RespConnection | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                if endpoint.path is not None:
                    _, connection = await loop.create_unix_connection(RespConnection, endpoint.path)
                else:
                    assert endpoint.host is not None  # the configuration refuses a URL without a host
                    _, connection = await loop.create_connection(
                        RespConnection, endpoint.host, endpoint.port, ssl=endpoint.client_tls_context()
                    )
                handshake, count = endpoint.handshake()
                if count:
                    for answer in await asyncio.gather(*connection.send(handshake, count)):
                        if isinstance(answer, hiredis.ReplyError):
                            raise RedisConnectionError(f"Redis refused AUTH or SELECT: {error_for_reply(answer)}")
        except (OSError, TimeoutError, ssl.SSLError) as e:
            if connection is not None:
                connection.fail("the handshake did not finish")
            raise RedisConnectionError(f"cannot connect to Redis: {type(e).__name__}") from e
        except BaseException:
            if connection is not None:
                connection.fail("the handshake did not finish")
            raise
        finally:
            self._connecting = None
        self._connection = connection
        return connection


# commands whose second run differs from their first (a script may count, as the rate limit's does)
_RUN_ONCE: Final = frozenset(
    {b"INCR", b"INCRBY", b"DECR", b"DECRBY", b"GETDEL", b"GETSET", b"SPOP", b"LPOP", b"RPOP", b"EVAL", b"EVALSHA"}
)


def may_run_twice(command: Sequence[Arg]) -> bool:
    """Whether running ``command`` again after it may have run changes nothing (``SET ... NX``
    and ``SET ... GET`` do: a lock taken by the first run, an old value the first run replaced)."""
    name = _as_bytes(command[0]).upper()
    if name in _RUN_ONCE:
        return False
    if name == b"SET":
        return not any(_as_bytes(arg).upper() in (b"NX", b"GET") for arg in command[3:])
    return True


def _as_bytes(arg: Arg) -> bytes:
    return arg if isinstance(arg, bytes) else str(arg).encode()


def _retrieve(future: asyncio.Future[RespConnection]) -> None:
    # a dial whose callers all gave up still fails quietly
    if not future.cancelled():
        future.exception()


def set_command(key: str, value: bytes | str, *, px: int | None, nx: bool, xx: bool) -> list[Arg]:
    """``SET key value [PX ms] [NX|XX]`` as arguments."""
    command: list[Arg] = ["SET", key, value]
    if px is not None:
        command += ["PX", px]
    if nx:
        command.append("NX")
    if xx:
        command.append("XX")
    return command
