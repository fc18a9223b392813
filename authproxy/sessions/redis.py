"""The shared session store on Redis (SPEC section 5): standalone, Sentinel or Cluster.

Replicas sharing one Redis share sessions completely. Every key carries ``key_prefix`` and a
TTL in milliseconds (``PX``/``PEXPIRE``), so nothing is left behind. The compound operations
are single Lua scripts over a single key each, atomic on the server and valid under Redis
Cluster (every key of a script in one slot):

- ``take``: ``GETDEL`` (Redis >= 6.2), so single-use flow state has exactly one taker;
- ``increment``: ``INCR`` plus ``PEXPIRE`` on the first hit, a fixed window;
- ``index_add``: ``SADD`` plus an expiry that only ever lengthens;
- locks: ``SET name token NX PX`` to take one, compare-the-token-then-act scripts to extend or
  release one (the Redlock single-instance pattern), so a holder whose lease ran out cannot
  release or extend the lock of whoever took it next.

Operations that belong together are sent together where the keys allow it: the refresh lock
with the read of the record (``acquire_lock(read=)``), a refreshed record with its announcement
and the lock's release (``set_if_present(publish=, release=)``), a new session with its index
entries (``set_indexed``), the sign-in counters (``increment_all``). On a standalone server
(:class:`~authproxy.sessions.resp.LeanRedis`, one multiplexed connection) each is one write and
one round trip, and Redis runs the commands in the order sent; on Sentinel and Cluster
(redis-py) they run one after the other, each awaited, since a Cluster may keep the keys on
different nodes.

A dead or hanging Redis must fail requests quickly (503, fail closed) rather than hang them:
socket timeouts and an overall deadline per operation bound every call to ``timeout``, and all
client errors (both clients raise redis-py's exceptions) leave this module as
:class:`~authproxy.errors.StoreUnavailable` or :class:`~authproxy.errors.StoreError`. Both
clients drop a connection that failed and dial a new one on the next call, so the same store
works again as soon as Redis is back.
"""

from __future__ import annotations

import asyncio
import builtins
import math
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, Final, TypeVar, cast
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, ConnectionPool, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from authproxy.errors import StoreError, StoreUnavailable
from authproxy.sessions.resp import Command, Endpoint, LeanRedis, set_command
from authproxy.sessions.store import Lock, check_ttl

T = TypeVar("T")

DEFAULT_TIMEOUT: Final = 2.0
# connections to a standalone Redis per process; more concurrent operations wait for one
MAX_CONNECTIONS: Final = 256
DEFAULT_SENTINEL_PORT: Final = 26379
LOCK_TOKEN_BYTES: Final = 16

# Errors that mean "Redis cannot serve right now" rather than "this call was wrong": a dead or
# unreachable server, a timeout, a cluster mid-failover, a replica promoted under our feet.
_UNAVAILABLE: Final = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,
    RedisClusterException,
    TimeoutError,
    OSError,
)

# Scripts are sent with EVAL rather than EVALSHA: they are tiny, and EVAL needs no script cache,
# which a restarted server, a failover or another cluster node would not have.
_INCREMENT: Final = """
local count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('PTTL', KEYS[1]) < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
"""
# PTTL is -1 for a key without expiry, so a fresh set gets one too
_INDEX_ADD: Final = """
redis.call('SADD', KEYS[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
"""
_LOCK_EXTEND: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_LOCK_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def _ms(seconds: float) -> int:
    """A TTL in whole milliseconds, rounded up so a short TTL never becomes 0 (an error in PX)."""
    return max(1, math.ceil(check_ttl(seconds) * 1000))


def _split_node(node: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``, or a bare host on the Sentinel port) as a tuple."""
    host, sep, port = node.rpartition(":")
    if not sep or "]" in port:
        host, port = node, str(DEFAULT_SENTINEL_PORT)
    return host.strip("[]"), int(port)


def _describe(error: BaseException) -> str:
    """An error for logs: connection and server messages name hosts and reasons, but the cluster
    client's own messages may quote a whole command, values included, so those give their type."""
    if isinstance(error, RedisClusterException) or not str(error):
        return type(error).__name__
    return f"{type(error).__name__}: {error}"


def _retry() -> Retry:
    # One quick retry, on connection errors only: it hides a pooled connection that went stale
    # while Redis restarted, without resending a command that may already have run (a timeout),
    # and without redis-py's default of ten backed-off retries that would hold a request for
    # seconds against a dead server.
    return Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1, supported_errors=(RedisConnectionError,))


class RedisStore:
    """:class:`~authproxy.sessions.store.SessionStore` on Redis, Sentinel or Redis Cluster."""

    def __init__(
        self,
        url: str,
        *,
        sentinel_master: str | None = None,
        sentinel_nodes: Sequence[str] | None = None,
        cluster: bool = False,
        key_prefix: str = "",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Connect lazily: nothing is dialled until the first operation (``ping`` for readiness).

        ``url`` is ``redis://``, ``rediss://`` (TLS) or ``unix://``. With ``sentinel_master``,
        the master's address comes from the Sentinels in ``sentinel_nodes`` and the URL gives
        the rest (credentials, database, TLS, options). With ``cluster``, the URL names any one node.
        """
        if sentinel_master is not None and cluster:
            raise ValueError("choose either sentinel or cluster, not both")
        self._prefix = key_prefix
        self._url = url
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValueError("the Redis timeout must be a positive number of seconds")
        self._timeout = timeout
        self._sentinel: Sentinel | None = None
        self._master_pool: _CurrentMasterPool | None = None
        self._cluster_pending = cluster
        # where the invalidation feed subscribes under Cluster: publishing there saves the bus hop
        url_endpoint = Endpoint.from_url(url)
        self._subscribed_on = (url_endpoint.host or "", url_endpoint.port)
        self._subscriber_base: Endpoint | None = None  # the URL's, with its options: made at first use
        self._cluster_lock = asyncio.Lock()
        connection: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": _retry(),
        }
        self._client: Redis | RedisCluster | LeanRedis
        if sentinel_master is not None:
            if not sentinel_nodes:
                raise ValueError("a Sentinel master name needs at least one Sentinel node")
            # redis-py before 8.2 leaves Sentinel's constructor unannotated
            self._sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
                [_split_node(node) for node in sentinel_nodes],
                sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": _retry()},
                **connection,
            )
            client = self._sentinel.master_for(
                sentinel_master, connection_pool_class=_CurrentMasterPool, **_master_options(url)
            )
            self._master_pool = cast("_CurrentMasterPool", client.connection_pool)
            self._client = client
        elif cluster:
            self._client = RedisCluster.from_url(url, **connection)
        elif Endpoint.understands(url):
            # a standalone server: one multiplexed connection, a quarter of redis-py's CPU per command
            self._client = LeanRedis.from_url(url, timeout=timeout)
        else:
            # URL options only redis-py knows: a blocking pool, so that past max_connections a
            # request waits (up to the store timeout) for a free connection instead of failing
            pool = BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=timeout, **connection)
            self._client = Redis.from_pool(pool)  # owns the pool: aclose() closes it

    @classmethod
    def from_settings(
        cls,
        *,
        url: str,
        sentinel_master: str | None = None,
        sentinel_nodes: Sequence[str] | None = None,
        cluster: bool = False,
        key_prefix: str = "",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> RedisStore:
        """The store for ``session.redis`` of the configuration."""
        return cls(
            url,
            sentinel_master=sentinel_master,
            sentinel_nodes=sentinel_nodes,
            cluster=cluster,
            key_prefix=key_prefix,
            timeout=timeout,
        )

    # ------------------------------------------------------------------ internals

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one client call within the deadline, translating its errors.

        The lean client keeps the deadline itself (each command's, and the dial's), without a
        timer per call; redis-py's calls run under one.
        """
        try:
            if isinstance(self._client, LeanRedis):
                return await operation()
            async with asyncio.timeout(self._timeout):
                if self._cluster_pending:
                    await self._initialize_cluster()
                return await operation()
        except _UNAVAILABLE as e:
            raise StoreUnavailable(f"Redis is unavailable: {_describe(e)}") from e
        except RedisError as e:
            raise StoreError(f"Redis refused the operation: {_describe(e)}") from e

    async def _initialize_cluster(self) -> None:
        # redis-py's cluster client, initialised lazily by many concurrent first commands,
        # can hand one of them a connection its own topology refresh is disconnecting
        # (AttributeError on a None writer, seen with redis-py 8.1): initialise once, alone
        async with self._cluster_lock:
            if self._cluster_pending:
                await cast("RedisCluster", self._client).initialize()
                self._cluster_pending = False

    async def _in_order(self, commands: Sequence[Command]) -> list[Any]:
        """Run ``commands`` in this order within one deadline; their raw answers (nil as None).

        On the lean client they go out in one write and Redis runs them in the order sent (one
        round trip); on redis-py (Sentinel, Cluster) one after the other, each awaited, since a
        Cluster may keep their keys on different nodes. An error stops redis-py at that command,
        and the lean client after all of them have run.
        """
        client = self._client
        if isinstance(client, LeanRedis):
            return await self._call(lambda: client.execute_many(commands))

        async def one_by_one() -> list[Any]:
            return [await _execute(client, command, self._subscribed_on) for command in commands]

        return await self._call(one_by_one)

    async def _eval(self, script: str, key: str, *args: str | int) -> int:
        result = await self._call(lambda: self._client.eval(script, 1, key, *args))
        return int(result)

    # ------------------------------------------------------------------ SessionStore

    async def get(self, key: str) -> bytes | None:
        return cast("bytes | None", await self._call(lambda: self._client.get(self._key(key))))

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        px = _ms(ttl)
        await self._call(lambda: self._client.set(self._key(key), value, px=px))

    async def set_indexed(
        self,
        key: str,
        value: bytes,
        ttl: float,
        indexes: Sequence[str],
        index_ttl: float,
        *,
        forget: Sequence[str] = (),
    ) -> None:
        index_px = _ms(index_ttl)
        commands: list[Command] = [set_command(self._key(key), value, px=_ms(ttl), nx=False, xx=False)]
        commands += [("EVAL", _INDEX_ADD, 1, self._key(index), index_px, key) for index in indexes]
        # one key per DEL: under Cluster the keys of one DEL must share a slot
        commands += [("DEL", self._key(name)) for name in forget]
        await self._in_order(commands)

    async def increment_all(self, counters: Sequence[tuple[str, float]]) -> list[int]:
        commands = [("EVAL", _INCREMENT, 1, self._key(key), _ms(window)) for key, window in counters]
        return [int(count) for count in await self._in_order(commands)]

    async def increment_all_and_set(
        self, counters: Sequence[tuple[str, float]], key: str, value: bytes, ttl: float
    ) -> list[int]:
        commands: list[Command] = [("EVAL", _INCREMENT, 1, self._key(name), _ms(window)) for name, window in counters]
        commands.append(set_command(self._key(key), value, px=_ms(ttl), nx=False, xx=False))
        return [int(count) for count in (await self._in_order(commands))[:-1]]

    async def increment_and_take(self, counter: tuple[str, float], key: str) -> tuple[int, bytes | None]:
        name, window = counter
        count, taken = await self._in_order(
            [("EVAL", _INCREMENT, 1, self._key(name), _ms(window)), ("GETDEL", self._key(key))]
        )
        return int(count), cast("bytes | None", taken)

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        # SET NX answers OK when it stored the value and nil when the key existed
        px = _ms(ttl)
        return bool(await self._call(lambda: self._client.set(self._key(key), value, px=px, nx=True)))

    async def set_if_present(
        self,
        key: str,
        value: bytes,
        ttl: float,
        *,
        publish: tuple[str, str] | None = None,
        release: Lock | None = None,
    ) -> bool:
        # SET XX: stores only over an existing key, so a write can never bring back a deleted session
        ours = release if isinstance(release, _RedisLock) else None
        if release is not None and ours is None:
            raise ValueError("a lock of another store")
        commands: list[Command] = [set_command(self._key(key), value, px=_ms(ttl), nx=False, xx=True)]
        if publish is not None:
            commands.append(("PUBLISH", *publish))
        # last, so the write has landed before the lock is free
        releasing = ours if ours is not None and ours.take_release() else None
        if releasing is not None:
            commands.append(("EVAL", _LOCK_RELEASE, 1, releasing.key, releasing.token))
        try:
            answers = await self._in_order(commands)
        except StoreError:
            if releasing is not None:
                releasing.release_pending()  # maybe not released: the holder's own release tries again
            raise
        return answers[0] is not None  # SET XX answers nil when the key was gone

    async def take(self, key: str) -> bytes | None:
        return cast("bytes | None", await self._call(lambda: self._client.getdel(self._key(key))))

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._call(lambda: self._client.delete(*(self._key(key) for key in keys)))

    async def increment(self, key: str, window: float) -> int:
        return await self._eval(_INCREMENT, self._key(key), _ms(window))

    async def index_add(self, index: str, member: str, ttl: float) -> None:
        await self._eval(_INDEX_ADD, self._key(index), _ms(ttl), member)

    async def index_members(self, index: str) -> builtins.set[str]:
        members = await self._call(lambda: cast("Awaitable[set[bytes]]", self._client.smembers(self._key(index))))
        return {member.decode() for member in members}

    async def index_remove(self, index: str, *members: str) -> None:
        # SREM deletes a set left empty, so no empty index lingers
        if members:
            await self._call(lambda: self._client.srem(self._key(index), *members))

    async def acquire_lock(self, name: str, lease: float, *, read: str | None = None) -> Lock | None:
        key = self._key(name)
        token = secrets.token_hex(LOCK_TOKEN_BYTES)
        px = _ms(lease)
        if read is None:
            if not await self._call(lambda: self._client.set(key, token, px=px, nx=True)):
                return None
            return _RedisLock(self, key, token)
        # the GET runs after the SET NX: it sees what the last holder wrote before releasing
        taken, value = await self._in_order(
            [set_command(key, token, px=px, nx=True, xx=False), ("GET", self._key(read))]
        )
        return _RedisLock(self, key, token, value) if taken is not None else None

    async def ping(self) -> None:
        await self._call(lambda: cast("Awaitable[Any]", self._client.ping()))

    async def publish(self, channel: str, message: str) -> None:
        """PUBLISH ``message`` on ``channel`` (not prefixed: the caller names the whole channel)."""
        client = self._client
        if isinstance(client, RedisCluster):
            await self._call(lambda: _publish_on_any_node(client, channel, message, self._subscribed_on))
            return
        await self._call(lambda: cast("Awaitable[Any]", client.publish(channel, message)))

    async def subscriber_endpoint(self) -> Endpoint:
        """Where a pub/sub subscriber connects: the URL's server, or the master Sentinel names now.

        Asked again and again by the invalidation feed, so under Sentinel it is also how the
        command connections learn of a failover when none of them has to dial (see
        :class:`_CurrentMasterPool`).
        """
        endpoint = self._subscriber_base
        if endpoint is None:
            endpoint = self._subscriber_base = _subscriber_endpoint(self._url)
        pool = self._master_pool
        if pool is None:
            return endpoint
        host, port = await self._call(pool.get_master_address)
        return replace(endpoint, host=host, port=int(port), path=None)

    async def close(self) -> None:
        try:
            await self._client.aclose()
            if self._sentinel is not None:
                for sentinel in self._sentinel.sentinels:
                    await sentinel.aclose()
        except (RedisError, OSError) as e:
            raise StoreError(f"closing the Redis client failed: {type(e).__name__}") from e

    # ------------------------------------------------------------------ for _RedisLock

    async def _extend_lock(self, key: str, token: str, lease: float) -> bool:
        return await self._eval(_LOCK_EXTEND, key, token, _ms(lease)) == 1

    async def _release_lock(self, key: str, token: str) -> None:
        await self._eval(_LOCK_RELEASE, key, token)


async def _execute(client: Redis | RedisCluster, command: Command, subscribed_on: tuple[str, int]) -> Any:
    """One command on redis-py; under Cluster a PUBLISH goes to any node that takes it."""
    if isinstance(client, RedisCluster) and command[0] == "PUBLISH":
        _, channel, message = command
        return await _publish_on_any_node(client, channel, message, subscribed_on)
    return await client.execute_command(*command)


async def _publish_on_any_node(
    client: RedisCluster, channel: str | bytes | int, message: str | bytes | int, subscribed_on: tuple[str, int]
) -> Any:
    """PUBLISH on the node the subscribers listen on or, when it cannot be reached, on another.

    A Cluster passes a PUBLISH on to the subscribers of every node, whichever node takes it, but
    over its bus, tens of milliseconds late at times: the replicas subscribe on the URL's node
    (``subscribed_on``), so that one hears it first-hand, as from a standalone server. redis-py
    would send it to the node of the channel's slot, which has nothing to do with the keys just
    written either: with that one node down, a sign-out whose delete landed would tell no
    replica's cache, and they would go on serving the ended session.
    """
    first = client.get_node(*subscribed_on) or client.get_node_from_key(str(channel))
    nodes = [first] if first is not None else []
    nodes += [node for node in client.get_nodes() if node is not first]
    failure: Exception | None = None
    for node in nodes:
        try:
            return await client.execute_command("PUBLISH", channel, message, target_nodes=node)
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            failure = e
    raise failure if failure is not None else RedisConnectionError("no Redis Cluster node to publish on")


class _CurrentMasterPool(SentinelConnectionPool):
    """redis-py's Sentinel pool, handing out no connection to a master Sentinel no longer names.

    redis-py's asyncio pool asks Sentinel only when it dials, and keeps every connection it has.
    After a failover whose old master comes back (a pause, a partition healed), a connection
    that was waiting on it returns to the pool and commands go on reaching it: a server that
    still takes writes until Sentinel demotes it, and then forgets them (a sign-out undone), and
    whose pub/sub reaches none of the replicas listening on the new master.
    """

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        connection: AbstractConnection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        address = getattr(connection, "host", None), getattr(connection, "port", None)
        if self.master_address is not None and address != tuple(self.master_address):
            await connection.disconnect()  # the command dials the current master
        return connection

    async def get_master_address(self) -> tuple[str, int]:
        """The master Sentinel names now; a change drops the idle connections to the old one."""
        address = await super().get_master_address()  # type: ignore[no-untyped-call]
        return cast("tuple[str, int]", address)


def _subscriber_endpoint(url: str) -> Endpoint:
    """The URL's server for the pub/sub subscriber, with what its query options ask of connections.

    A URL with options (``rediss://...?ssl_ca_certs=/etc/redis/ca.pem``, ``?password=...``) has
    the store's connections made by redis-py: the subscriber takes the same credentials and the
    same TLS trust from a connection redis-py would make (never dialled), so it reaches the server
    the store reaches and refuses the certificates the store refuses.
    """
    endpoint = Endpoint.from_url(url)
    if Endpoint.understands(url):
        return endpoint
    connection = ConnectionPool.from_url(url).make_connection()  # type: ignore[no-untyped-call]
    tls_context = connection.ssl_context.get() if isinstance(connection, SSLConnection) else None
    return replace(
        endpoint,
        username=connection.username or None,
        password=connection.password or None,
        tls_context=tls_context,
    )


def _master_options(url: str) -> dict[str, Any]:
    """Credentials, database, TLS and the URL's other options for a Sentinel-managed master.

    Everything but the address, which Sentinel gives: a ``?ssl_ca_certs=`` for a private CA
    must reach the master's connections as it reaches a standalone server's.
    """
    options: dict[str, Any] = dict(parse_url(url))
    # ?timeout= is a blocking pool's wait for a free connection: Sentinel's pool does not block,
    # and its connections would refuse the keyword (a TypeError on every command)
    for address_or_pool in ("host", "port", "path", "connection_class", "timeout"):
        options.pop(address_or_pool, None)
    if urlsplit(url).scheme == "rediss":
        options["ssl"] = True
    return options


class _RedisLock:
    """A lock of :class:`RedisStore`: its full key and the random token that proves ownership."""

    def __init__(self, store: RedisStore, key: str, token: str, value: bytes | None = None) -> None:
        self._store = store
        self.key = key
        self.token = token
        self.value = value
        self._released = False

    def take_release(self) -> bool:
        """Mark the lock released; True when it was not yet (the caller then releases it)."""
        released, self._released = self._released, True
        return not released

    def release_pending(self) -> None:
        """A release sent with other commands may not have happened: let ``release`` try again."""
        self._released = False

    async def extend(self, lease: float) -> bool:
        return await self._store._extend_lock(self.key, self.token, lease)

    async def release(self) -> None:
        if self.take_release():
            await self._store._release_lock(self.key, self.token)
