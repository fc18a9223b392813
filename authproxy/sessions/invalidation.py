"""Cross-replica invalidation of the session cache, over Redis pub/sub.

Every process subscribes to one channel (``<key_prefix>session-invalidations``); whoever writes or
deletes a session record publishes its store key there before answering the request that caused
it. Redis confirms a ``PUBLISH`` in the same write-out in which it sends the message to every
subscriber, so by the time a logout's answer leaves one replica the invalidation is already on
the wire to every other (on one host: in their socket buffers within microseconds), well before
the browser's next request can reach any of them. The subscriber applies messages synchronously
in ``data_received``, with no task in between, so the cache it guards is updated as soon as the
bytes are read.

A message names its sender first (``@<origin>``, random per process) and then the keys. A
process skips its own messages: what it wrote it has already put in its own cache (a refresh's
new tokens serve the next request at once), and anyone else's write after that carries another
origin and still invalidates it. Messages without an origin (older versions) invalidate as
before, and older versions read the origin as one more key that matches nothing.

The subscriber speaks RESP (https://redis.io/docs/latest/develop/reference/protocol-spec/)
directly over an asyncio connection, parsed by ``hiredis``. It PINGs every ``PING_INTERVAL``; a
connection that does not answer within ``LIVENESS_TIMEOUT``, closes, or fails its handshake
switches the cache off (every request reads the store again, so a hung Redis is a 503) until a
fresh subscription is confirmed. With every ping it also asks where it should be subscribed
(under Sentinel: which server is the master now) and reconnects when that changed: after a
failover the old master may answer again, a master in its own eyes until Sentinel demotes it,
and hears none of what is published on the new one. Pub/sub is not tied to a database, and
under Redis Cluster a ``PUBLISH`` reaches the subscribers of every node, so one subscription per
process suffices in all three topologies (standalone, Sentinel: the current master, Cluster: the configured node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol, cast

import hiredis

from authproxy.sessions.cache import SessionCache
from authproxy.sessions.resp import Endpoint, encode_command, replies

log = logging.getLogger(__name__)

CHANNEL_SUFFIX: Final = "session-invalidations"
PING_INTERVAL: Final = 0.5
LIVENESS_TIMEOUT: Final = 1.5
RECONNECT_MIN: Final = 0.1
RECONNECT_MAX: Final = 2.0
CONNECT_TIMEOUT: Final = 2.0
# store keys never contain a space (``session:`` + base64url), so one message can carry several
KEY_SEPARATOR: Final = " "
# marks the first word of a message as its sender; a store key never starts with it
ORIGIN_MARK: Final = "@"


class InvalidationFeed(Protocol):
    """Keeps a :class:`SessionCache` in step with writes made anywhere."""

    async def start(self) -> None:
        """Begin receiving invalidations (returns at once; the cache goes live when they flow)."""
        ...

    async def publish(self, keys: Sequence[str]) -> None:
        """Tell every other process that ``keys`` were written or deleted."""
        ...

    def announcement(self, keys: Sequence[str]) -> tuple[str, str] | None:
        """What ``publish(keys)`` would publish, as (channel, message), for a store to send along
        with the write itself (``SessionStore.set_if_present``); None when there is nobody to tell."""
        ...

    async def close(self) -> None: ...


class LocalFeed:
    """One process, no other replica (the memory store): the cache is live from the start."""

    def __init__(self, cache: SessionCache) -> None:
        self._cache = cache

    async def start(self) -> None:
        self._cache.set_live(True)

    async def publish(self, keys: Sequence[str]) -> None:
        return None

    def announcement(self, keys: Sequence[str]) -> tuple[str, str] | None:
        return None

    async def close(self) -> None:
        self._cache.set_live(False)


class PublishOnlyFeed:
    """A process without a cache (``session.cache.enabled: false``) on Redis: it still tells the
    replicas that keep one, so turning the cache off on some replicas never leaves the others
    serving a session that was ended here."""

    def __init__(self, *, channel: str, publish: Callable[[str, str], Awaitable[object]]) -> None:
        self._channel = channel
        self._publish = publish
        self.origin = new_origin()

    async def start(self) -> None:
        return None

    async def publish(self, keys: Sequence[str]) -> None:
        if keys:
            await self._publish(self._channel, write_message(self.origin, keys))

    def announcement(self, keys: Sequence[str]) -> tuple[str, str] | None:
        return (self._channel, write_message(self.origin, keys)) if keys else None

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------------- pure RESP pieces


def read_message(payload: bytes) -> tuple[str | None, list[str]]:
    """The sender (None when the message names none) and the store keys of one message."""
    words = [word for word in payload.decode("utf-8", errors="replace").split(KEY_SEPARATOR) if word]
    if words and words[0].startswith(ORIGIN_MARK):
        return words[0][len(ORIGIN_MARK) :], words[1:]
    return None, words


def write_message(origin: str, keys: Sequence[str]) -> str:
    """The message announcing ``keys``, sent by ``origin``."""
    return KEY_SEPARATOR.join((ORIGIN_MARK + origin, *keys))


def new_origin() -> str:
    """A process's sender name: random, so replicas and workers never share one."""
    return secrets.token_hex(8)


def channel_name(key_prefix: str) -> str:
    return key_prefix + CHANNEL_SUFFIX


def subscribe_handshake(endpoint: Endpoint, channel: str) -> bytes:
    """AUTH when credentials are configured, then SUBSCRIBE (pub/sub is not tied to a database)."""
    return endpoint.auth_command() + encode_command("SUBSCRIBE", channel)


# ---------------------------------------------------------------------- the subscriber


class _Subscriber(asyncio.Protocol):
    """One subscription connection; applies invalidations as their bytes arrive."""

    def __init__(self, cache: SessionCache, channel: bytes, handshake: bytes, origin: str | None = None) -> None:
        self._cache = cache
        self._origin = origin
        self._channel = channel
        self._handshake = handshake
        self._reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_answer = asyncio.get_running_loop().time()
        self.subscribed = False
        self.confirmation: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast("asyncio.Transport", transport)
        self.transport.write(self._handshake)

    def data_received(self, data: bytes) -> None:
        try:
            for reply in replies(self._reader, data):
                self._handle(reply)
        except hiredis.ProtocolError:
            self._fail("garbled answer")

    def _handle(self, reply: object) -> None:
        self.last_answer = asyncio.get_running_loop().time()
        if isinstance(reply, hiredis.ReplyError):
            # AUTH refused, or a server that does not allow SUBSCRIBE: no feed, no cache
            self._fail("Redis refused the subscription")
            return
        if not isinstance(reply, list) or not reply:
            return  # +OK of AUTH
        kind = reply[0]
        if kind == b"message" and len(reply) == 3 and reply[1] == self._channel:
            origin, keys = read_message(reply[2])
            if origin is not None and origin == self._origin:
                return  # our own write: already in our cache as written
            for key in keys:
                self._cache.invalidate(key)
        elif kind == b"subscribe" and len(reply) >= 2 and reply[1] == self._channel:
            # live once the feed has checked it is still where it should be (RedisFeed)
            self.subscribed = True
            if not self.confirmation.done():
                self.confirmation.set_result(None)
        # b"pong": last_answer is all a pong is for

    def ping(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_command("PING"))

    def _fail(self, reason: str) -> None:
        self._cache.set_live(False)
        log.warning("session cache invalidation feed failed: %s", reason)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cache.set_live(False)
        if not self.closed.done():
            self.closed.set_result(None)


AddressSource = Callable[[], Awaitable[Endpoint]]
Publish = Callable[[str, str], Awaitable[object]]


class RedisFeed:
    """The Redis pub/sub feed: subscribes from a background task, publishes through the store."""

    def __init__(self, cache: SessionCache, *, channel: str, endpoint: AddressSource, publish: Publish) -> None:
        self._cache = cache
        self._channel = channel
        self._endpoint = endpoint
        self._publish = publish
        self.origin = new_origin()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def publish(self, keys: Sequence[str]) -> None:
        if keys:
            await self._publish(self._channel, write_message(self.origin, keys))

    def announcement(self, keys: Sequence[str]) -> tuple[str, str] | None:
        return (self._channel, write_message(self.origin, keys)) if keys else None

    async def close(self) -> None:
        self._cache.set_live(False)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = RECONNECT_MIN
        while True:
            subscribed = False
            try:
                subscribed = await self._subscribe_once()
            except Exception as e:
                # unreachable, refused, or a Sentinel naming no master mid-failover: whatever it
                # was, the feed must come back, since without it the cache stays off
                log.warning("session cache invalidation feed cannot connect: %s", type(e).__name__)
            finally:
                self._cache.set_live(False)
            delay = RECONNECT_MIN if subscribed else min(delay * 2, RECONNECT_MAX)
            await asyncio.sleep(delay)

    async def _still_current(self, endpoint: Endpoint) -> bool:
        """Whether ``endpoint`` is still where writes are published (Sentinel: the master it names now).

        After a failover the old master may answer again, still a master until Sentinel demotes
        it: a subscription there hears none of the invalidations published on the new one.
        """
        try:
            return await self._endpoint() == endpoint
        except Exception:
            return False  # cannot tell: not known to be live

    async def _subscribe_once(self) -> bool:
        """One connection's life; True when it had subscribed before it ended."""
        loop = asyncio.get_running_loop()
        endpoint = await self._endpoint()
        channel = self._channel.encode()

        def protocol() -> _Subscriber:
            return _Subscriber(self._cache, channel, subscribe_handshake(endpoint, self._channel), self.origin)

        async with asyncio.timeout(CONNECT_TIMEOUT):
            if endpoint.path is not None:
                _, subscriber = await loop.create_unix_connection(protocol, endpoint.path)
            else:
                assert endpoint.host is not None  # the configuration refuses a URL without a host
                _, subscriber = await loop.create_connection(
                    protocol, endpoint.host, endpoint.port, ssl=endpoint.client_tls_context()
                )
        try:
            while not subscriber.closed.done():
                subscriber.ping()
                # until live, the confirmation ends the wait too, even one that came before it began
                waited = [subscriber.closed] if self._cache.live else [subscriber.closed, subscriber.confirmation]
                await asyncio.wait(waited, timeout=PING_INTERVAL, return_when=asyncio.FIRST_COMPLETED)
                if loop.time() - subscriber.last_answer > LIVENESS_TIMEOUT:
                    # hung or cut off without a reset: invalidations may be lost, so stop trusting
                    self._cache.set_live(False)
                    log.warning("session cache invalidation feed stopped answering; reconnecting")
                    break
                if not await self._still_current(endpoint):
                    self._cache.set_live(False)
                    log.warning(
                        "session cache invalidation feed is on a server that is no longer the master; reconnecting"
                    )
                    break
                if subscriber.subscribed and not subscriber.closed.done() and not self._cache.live:
                    self._cache.set_live(True)
            return subscriber.subscribed
        finally:
            if subscriber.transport is not None:
                subscriber.transport.abort()
            await subscriber.closed
