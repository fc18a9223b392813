"""SPEC section 5: one session store contract, the same suite over every backend.

The conformance tests run against MemoryStore (on a clock the test can jump forward) and
RedisStore on real servers: standalone, behind a Sentinel, and a three-master Cluster. Redis TTL
tests use short real TTLs. The Redis-only tests at the end cover what only a network store can
get wrong: the key prefix, a dead or hung server, and recovery when it comes back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest
import redis.asyncio

from authproxy.errors import StoreError, StoreUnavailable
from authproxy.sessions.memory import MemoryStore
from authproxy.sessions.redis import RedisStore
from authproxy.sessions.store import SessionStore, hold_lock
from tests.support.redis_server import (
    RedisCluster,
    RedisSentinel,
    RedisServer,
    start_redis_cluster,
    start_redis_sentinel,
)

SHORT = 0.2  # a TTL that runs out during the test
PAST_SHORT = 0.35  # enough time for SHORT to have run out, with margin for a loaded machine
LONG = 30.0  # a TTL that does not


class JumpClock:
    """A monotonic clock that also moves when a test jumps it forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


@dataclass
class Harness:
    store: SessionStore
    advance: Callable[[float], Awaitable[None]]


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = start_redis_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.kill()


@pytest.fixture(scope="module")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinel]:
    sentinel = start_redis_sentinel(tmp_path_factory.mktemp("sentinel"))
    try:
        yield sentinel
    finally:
        sentinel.kill()


def _unique_prefix() -> str:
    # the Sentinel and Cluster servers are shared by the module: each test gets its own keys
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=["memory", "redis", "redis-sentinel", "redis-cluster"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    store: SessionStore
    advance: Callable[[float], Awaitable[None]]
    if request.param == "memory":
        clock = JumpClock()

        async def jump(seconds: float) -> None:
            clock.offset += seconds
            await asyncio.sleep(0)

        store = MemoryStore(clock=clock)
        advance = jump
    else:
        if request.param == "redis":
            server: RedisServer = request.getfixturevalue("redis_server")
            store = RedisStore.from_settings(url=server.url, key_prefix=_unique_prefix())
        elif request.param == "redis-sentinel":
            sentinel: RedisSentinel = request.getfixturevalue("redis_sentinel")
            store = RedisStore.from_settings(
                url="redis://ignored-with-sentinel/0",
                sentinel_master=sentinel.master_name,
                sentinel_nodes=sentinel.nodes,
                key_prefix=_unique_prefix(),
            )
        else:
            cluster: RedisCluster = request.getfixturevalue("redis_cluster")
            store = RedisStore.from_settings(url=cluster.url, cluster=True, key_prefix=_unique_prefix())
        advance = asyncio.sleep
    try:
        yield Harness(store, advance)
    finally:
        await store.close()


# ---------------------------------------------------------------------------- values


async def test_get_returns_what_set_stored(harness: Harness) -> None:
    store = harness.store
    assert await store.get("absent") is None
    await store.set("k", b"\x00value\xff", LONG)
    assert await store.get("k") == b"\x00value\xff"
    await store.set("k", b"replaced", LONG)
    assert await store.get("k") == b"replaced"


async def test_value_expires_after_its_ttl(harness: Harness) -> None:
    await harness.store.set("k", b"v", SHORT)
    await harness.store.set("keep", b"v", LONG)
    assert await harness.store.get("k") == b"v"
    await harness.advance(PAST_SHORT)
    assert await harness.store.get("k") is None
    assert await harness.store.get("keep") == b"v"


async def test_set_replaces_the_ttl_too(harness: Harness) -> None:
    await harness.store.set("k", b"v", LONG)
    await harness.store.set("k", b"w", SHORT)
    await harness.advance(PAST_SHORT)
    assert await harness.store.get("k") is None


async def test_set_if_absent_stores_only_the_first_value(harness: Harness) -> None:
    store = harness.store
    assert await store.set_if_absent("jti", b"first", SHORT) is True
    assert await store.set_if_absent("jti", b"second", SHORT) is False
    assert await store.get("jti") == b"first"
    await harness.advance(PAST_SHORT)
    assert await store.set_if_absent("jti", b"third", LONG) is True
    assert await store.get("jti") == b"third"


async def test_set_if_absent_has_one_winner_under_concurrency(harness: Harness) -> None:
    results = await asyncio.gather(*(harness.store.set_if_absent("jti", b"%d" % n, LONG) for n in range(20)))
    assert results.count(True) == 1


async def test_take_returns_the_value_once(harness: Harness) -> None:
    store = harness.store
    assert await store.take("flow") is None
    await store.set("flow", b"state", LONG)
    assert await store.take("flow") == b"state"
    assert await store.take("flow") is None
    assert await store.get("flow") is None


async def test_take_has_exactly_one_winner_under_concurrency(harness: Harness) -> None:
    await harness.store.set("flow", b"state", LONG)
    results = await asyncio.gather(*(harness.store.take("flow") for _ in range(25)))
    assert results.count(b"state") == 1
    assert results.count(None) == 24


async def test_take_of_an_expired_value_is_none(harness: Harness) -> None:
    await harness.store.set("flow", b"state", SHORT)
    await harness.advance(PAST_SHORT)
    assert await harness.store.take("flow") is None


async def test_delete_removes_every_key_given(harness: Harness) -> None:
    store = harness.store
    for key in ("a", "b", "c"):
        await store.set(key, b"v", LONG)
    await store.delete("a", "b", "absent")
    await store.delete()
    assert [await store.get(key) for key in ("a", "b", "c")] == [None, None, b"v"]


@pytest.mark.parametrize(
    "ttl",
    [0, -1.0, float("inf"), float("nan"), 1e16],
    # beyond a century: Redis refused it (beyond 2**63 ms) where the memory store took it
    ids=["zero", "negative", "infinite", "nan", "beyond-a-century"],
)
async def test_a_ttl_must_be_a_positive_finite_number(harness: Harness, ttl: float) -> None:
    store = harness.store
    with pytest.raises(ValueError):
        await store.set("k", b"v", ttl)
    with pytest.raises(ValueError):
        await store.set_if_absent("k", b"v", ttl)
    with pytest.raises(ValueError):
        await store.increment("k", ttl)
    with pytest.raises(ValueError):
        await store.index_add("i", "m", ttl)
    with pytest.raises(ValueError):
        await store.acquire_lock("l", ttl)
    assert await store.get("k") is None


# ---------------------------------------------------------------------------- counters


async def test_increment_counts_up_within_its_window(harness: Harness) -> None:
    assert [await harness.store.increment("c", LONG) for _ in range(3)] == [1, 2, 3]
    assert await harness.store.increment("other", LONG) == 1


async def test_increment_window_is_fixed_from_the_first_increment(harness: Harness) -> None:
    store = harness.store
    assert await store.increment("c", 0.5) == 1
    await harness.advance(0.3)
    assert await store.increment("c", 0.5) == 2
    # 0.6 s after the first increment: a fixed window has ended, a sliding one (0.8 s) would not
    await harness.advance(0.3)
    assert await store.increment("c", 0.5) == 1


# ---------------------------------------------------------------------------- indexes


async def test_index_has_set_semantics(harness: Harness) -> None:
    store = harness.store
    assert await store.index_members("idx") == set()
    await store.index_add("idx", "session:a", LONG)
    await store.index_add("idx", "session:b", LONG)
    await store.index_add("idx", "session:a", LONG)
    assert await store.index_members("idx") == {"session:a", "session:b"}
    await store.index_remove("idx", "session:a", "session:absent")
    await store.index_remove("idx")
    assert await store.index_members("idx") == {"session:b"}
    await store.index_remove("idx", "session:b")
    assert await store.index_members("idx") == set()
    await store.index_remove("absent-index", "x")


async def test_index_expires_after_its_ttl(harness: Harness) -> None:
    await harness.store.index_add("idx", "m", SHORT)
    await harness.advance(PAST_SHORT)
    assert await harness.store.index_members("idx") == set()


async def test_index_expiry_is_lengthened_by_a_longer_ttl(harness: Harness) -> None:
    await harness.store.index_add("idx", "short", SHORT)
    await harness.store.index_add("idx", "long", LONG)
    await harness.advance(PAST_SHORT)
    assert await harness.store.index_members("idx") == {"short", "long"}


async def test_index_expiry_is_never_shortened(harness: Harness) -> None:
    await harness.store.index_add("idx", "long", LONG)
    await harness.store.index_add("idx", "short", SHORT)
    await harness.advance(PAST_SHORT)
    assert await harness.store.index_members("idx") == {"long", "short"}


async def test_using_a_value_as_an_index_is_a_store_error(harness: Harness) -> None:
    store = harness.store
    await store.set("value", b"v", LONG)
    await store.index_add("index", "m", LONG)
    with pytest.raises(StoreError):
        await store.index_add("value", "m", LONG)
    with pytest.raises(StoreError):
        await store.get("index")
    with pytest.raises(StoreError):
        await store.take("index")


async def test_counting_a_value_that_is_not_a_counter_is_a_store_error(harness: Harness) -> None:
    await harness.store.set("value", b"not a number", LONG)
    with pytest.raises(StoreError):
        await harness.store.increment("value", LONG)


# ---------------------------------------------------------------------------- locks


async def test_lock_is_exclusive_until_released(harness: Harness) -> None:
    store = harness.store
    lock = await store.acquire_lock("refresh:s1", LONG)
    assert lock is not None
    assert await store.acquire_lock("refresh:s1", LONG) is None
    assert await store.acquire_lock("refresh:s2", LONG) is not None
    await lock.release()
    assert await store.acquire_lock("refresh:s1", LONG) is not None


async def test_lock_expires_after_its_lease(harness: Harness) -> None:
    lock = await harness.store.acquire_lock("l", SHORT)
    assert lock is not None
    await harness.advance(PAST_SHORT)
    assert await harness.store.acquire_lock("l", LONG) is not None
    assert await lock.extend(LONG) is False


async def test_lock_extend_keeps_it_past_its_first_lease(harness: Harness) -> None:
    lock = await harness.store.acquire_lock("l", SHORT)
    assert lock is not None
    assert await lock.extend(LONG) is True
    await harness.advance(PAST_SHORT)
    assert await harness.store.acquire_lock("l", LONG) is None


async def test_lock_is_released_and_extended_only_by_its_owner(harness: Harness) -> None:
    store = harness.store
    stale = await store.acquire_lock("l", SHORT)
    assert stale is not None
    await harness.advance(PAST_SHORT)
    current = await store.acquire_lock("l", LONG)
    assert current is not None
    # the first holder's lease ran out: its release and extend must not touch the new holder's lock
    await stale.release()
    assert await stale.extend(LONG) is False
    assert await store.acquire_lock("l", LONG) is None
    assert await current.extend(LONG) is True
    await current.release()
    assert await store.acquire_lock("l", LONG) is not None


async def test_hold_lock_extends_the_lease_while_the_block_runs(harness: Harness) -> None:
    store = harness.store
    async with hold_lock(store, "l", 0.3) as lock:
        assert lock is not None
        # real time, also for the memory store (its clock is monotonic plus jumps)
        await asyncio.sleep(0.8)
        assert await store.acquire_lock("l", LONG) is None
    assert await store.acquire_lock("l", LONG) is not None


async def test_hold_lock_yields_none_when_the_lock_stays_busy(harness: Harness) -> None:
    store = harness.store
    assert await store.acquire_lock("l", LONG) is not None
    async with hold_lock(store, "l", 1.0) as lock:
        assert lock is None
    async with hold_lock(store, "l", 1.0, wait=0.2) as lock:
        assert lock is None


async def test_hold_lock_waits_for_a_lock_to_be_freed(harness: Harness) -> None:
    store = harness.store
    other = await store.acquire_lock("l", LONG)
    assert other is not None

    async def release_soon() -> None:
        await asyncio.sleep(0.1)
        await other.release()

    releaser = asyncio.create_task(release_soon())
    async with hold_lock(store, "l", 1.0, wait=5.0) as lock:
        assert lock is not None
        assert await store.acquire_lock("l", LONG) is None
    await releaser


async def test_hold_lock_releases_when_the_block_raises(harness: Harness) -> None:
    store = harness.store
    with pytest.raises(RuntimeError, match="boom"):
        async with hold_lock(store, "l", 1.0) as lock:
            assert lock is not None
            raise RuntimeError("boom")
    assert await store.acquire_lock("l", LONG) is not None
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_hold_lock_releases_when_the_block_is_cancelled(harness: Harness) -> None:
    store = harness.store
    entered = asyncio.Event()

    async def holder() -> None:
        async with hold_lock(store, "l", 0.3):
            entered.set()
            await asyncio.sleep(LONG)

    task = asyncio.create_task(holder())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.acquire_lock("l", LONG) is not None
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_ping_answers(harness: Harness) -> None:
    await harness.store.ping()


# ---------------------------------------------------------------------------- memory only


class StepClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_value_lives_exactly_its_ttl() -> None:
    clock = StepClock()
    store = MemoryStore(clock=clock)
    await store.set("k", b"v", 10)
    clock.now += 9.999
    assert await store.get("k") == b"v"
    clock.now += 0.001
    assert await store.get("k") is None


async def test_memory_never_serves_an_expired_value_the_sweep_has_not_reached() -> None:
    clock = StepClock()
    store = MemoryStore(clock=clock)
    for n in range(1000):
        await store.set(f"session:{n:03d}", b"v", 10)
    clock.now += 10
    # a read sweeps a bounded batch, the earliest keys first: the last one is far from swept
    assert await store.get("session:999") is None
    assert await store.take("session:998") is None


async def test_memory_sweeps_expired_entries_nobody_reads() -> None:
    clock = StepClock()
    store = MemoryStore(clock=clock)
    for n in range(1000):
        await store.set(f"flow:{n}", b"v", 10)
        await store.index_add(f"index:{n}", "m", 10)
        await store.increment(f"rate:{n}", 10)
    await store.set("live", b"v", 100)
    assert len(store) == 3001
    clock.now += 11
    # each operation sweeps a bounded batch: a few dozen calls clear the lot
    for _ in range(100):
        assert await store.get("live") == b"v"
    assert len(store) == 1


async def test_memory_rewrites_of_one_key_do_not_grow_without_bound() -> None:
    clock = StepClock()
    store = MemoryStore(clock=clock)
    for n in range(20_000):
        await store.set("hot", b"%d" % n, 100)
        clock.now += 0.001
    assert len(store) == 1
    assert await store.get("hot") == b"19999"
    # the expiry heap is compacted too (its size is internal; memory use is what matters)
    assert len(store._expiries) < 20_000


# ---------------------------------------------------------------------------- Redis only


async def _all_keys(url: str) -> dict[str, int]:
    """Every key on the server with its remaining TTL in ms."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        return {key.decode(): await client.pttl(key) async for key in client.scan_iter()}
    finally:
        await client.aclose()


async def test_redis_every_key_carries_the_prefix_and_a_ttl(redis_server: RedisServer) -> None:
    store = RedisStore.from_settings(url=redis_server.url, key_prefix="authproxy:")
    try:
        await store.set("session:a", b"v", LONG)
        await store.set_if_absent("jti:a", b"1", LONG)
        await store.increment("rate:a", LONG)
        await store.index_add("index:sub:a", "session:a", LONG)
        assert await store.acquire_lock("lock:a", LONG) is not None
        await store.set("flow:a", b"v", LONG)
        assert await store.take("flow:a") == b"v"
        keys = await _all_keys(redis_server.url)
        assert set(keys) == {f"authproxy:{k}" for k in ("session:a", "jti:a", "rate:a", "index:sub:a", "lock:a")}
        assert all(0 < ttl <= LONG * 1000 for ttl in keys.values()), keys
        # and the prefix is not applied twice on the way back
        assert await store.index_members("index:sub:a") == {"session:a"}
        await store.delete(*await store.index_members("index:sub:a"))
        assert "authproxy:session:a" not in await _all_keys(redis_server.url)
    finally:
        await store.close()


def _every_operation(store: RedisStore) -> dict[str, Callable[[], Awaitable[object]]]:
    return {
        "get": lambda: store.get("k"),
        "set": lambda: store.set("k", b"v", LONG),
        "set_if_absent": lambda: store.set_if_absent("k", b"v", LONG),
        "take": lambda: store.take("k"),
        "delete": lambda: store.delete("k"),
        "increment": lambda: store.increment("c", LONG),
        "index_add": lambda: store.index_add("i", "m", LONG),
        "index_members": lambda: store.index_members("i"),
        "index_remove": lambda: store.index_remove("i", "m"),
        "acquire_lock": lambda: store.acquire_lock("l", LONG),
        "ping": store.ping,
    }


async def _assert_unavailable_within(store: RedisStore, seconds: float) -> None:
    for name, operation in _every_operation(store).items():
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await operation()
        assert time.monotonic() - started < seconds, name


async def test_redis_down_gives_store_unavailable_quickly(redis_server: RedisServer) -> None:
    store = RedisStore.from_settings(url=redis_server.url, timeout=0.5)
    try:
        lock = await store.acquire_lock("held", LONG)
        assert lock is not None
        redis_server.stop()
        await _assert_unavailable_within(store, 1.0)
        with pytest.raises(StoreUnavailable):
            await lock.extend(LONG)
        with pytest.raises(StoreUnavailable):
            await lock.release()
    finally:
        await store.close()


async def test_a_write_that_would_free_its_lock_fails_as_unavailable_and_leaves_the_release_to_retry(
    redis_server: RedisServer,
) -> None:
    # a refresh's last round trip (the record, then the lock's release) while Redis is gone
    store = RedisStore.from_settings(url=redis_server.url, timeout=0.5)
    try:
        await store.set("session", b"v1", LONG)
        lock = await store.acquire_lock("refresh", LONG)
        assert lock is not None
        redis_server.stop()
        with pytest.raises(StoreUnavailable):
            await store.set_if_present("session", b"v2", LONG, release=lock)
        # the release may not have landed, so the holder's own release still tries it
        with pytest.raises(StoreUnavailable):
            await lock.release()
    finally:
        await store.close()


async def test_hung_redis_gives_store_unavailable_within_the_timeout(redis_server: RedisServer) -> None:
    store = RedisStore.from_settings(url=redis_server.url, timeout=0.3)
    try:
        await store.ping()
        redis_server.freeze()
        try:
            await _assert_unavailable_within(store, 0.8)
        finally:
            redis_server.thaw()
        # the connections cut off mid-command were dropped, not reused out of sync
        await store.set("after", b"v", LONG)
        assert await store.get("after") == b"v"
    finally:
        await store.close()


async def test_redis_store_recovers_after_a_restart(redis_server: RedisServer) -> None:
    store = RedisStore.from_settings(url=redis_server.url, timeout=0.5)
    try:
        # several pooled connections, all of which go stale when the server dies
        await asyncio.gather(*(store.set(f"k{n}", b"v", LONG) for n in range(5)))
        redis_server.stop()
        with pytest.raises(StoreUnavailable):
            await store.get("k0")
        redis_server.start()
        # the same object, no restart: the first call after the server is back succeeds
        assert await store.get("k0") is None
        await asyncio.gather(*(store.set(f"k{n}", b"w", LONG) for n in range(5)))
        assert await store.take("k4") == b"w"
        assert await store.acquire_lock("l", LONG) is not None
    finally:
        await store.close()


async def test_redis_restart_without_an_outage_call_is_invisible(redis_server: RedisServer) -> None:
    store = RedisStore.from_settings(url=redis_server.url, timeout=0.5)
    try:
        await store.ping()
        redis_server.stop()
        redis_server.start()
        # the pooled connection is stale; one retry on a fresh connection hides that
        await store.ping()
        await store.set("k", b"v", LONG)
    finally:
        await store.close()


def test_redis_store_refuses_sentinel_and_cluster_at_once() -> None:
    with pytest.raises(ValueError):
        RedisStore.from_settings(url="redis://127.0.0.1/0", sentinel_master="m", sentinel_nodes=["h:1"], cluster=True)
    with pytest.raises(ValueError):
        RedisStore.from_settings(url="redis://127.0.0.1/0", sentinel_master="m", sentinel_nodes=[])


async def test_memory_store_is_bounded_and_refuses_new_keys_when_full() -> None:
    clock = JumpClock()
    store = MemoryStore(clock=clock, max_entries=3)
    for name in ("a", "b", "c"):
        await store.set(name, b"1", LONG)
    await store.set("a", b"2", LONG)  # overwriting an existing key is always fine
    with pytest.raises(StoreUnavailable):
        await store.set("d", b"1", LONG)
    clock.offset += LONG + 1  # everything expired: room again
    await store.set("d", b"1", LONG)
    assert await store.get("d") == b"1"


async def test_set_if_present_never_recreates_a_deleted_key(harness: Harness) -> None:
    store = harness.store
    assert await store.set_if_present("session", b"v1", LONG) is False
    assert await store.get("session") is None
    await store.set("session", b"v1", LONG)
    assert await store.set_if_present("session", b"v2", LONG) is True
    assert await store.get("session") == b"v2"
    await store.delete("session")
    assert await store.set_if_present("session", b"v3", LONG) is False
    assert await store.get("session") is None


async def test_a_lock_taken_with_a_read_carries_what_the_last_holder_wrote(harness: Harness) -> None:
    store = harness.store
    first = await store.acquire_lock("lock:s", LONG, read="s")
    assert first is not None and first.value is None  # nothing stored yet
    await store.set("s", b"written by the first holder", LONG)
    await first.release()
    second = await store.acquire_lock("lock:s", LONG, read="s")
    assert second is not None and second.value == b"written by the first holder"
    assert await store.acquire_lock("lock:s", LONG, read="s") is None  # held: no lock, no value


async def test_a_write_can_release_the_lock_whatever_its_outcome(harness: Harness) -> None:
    store = harness.store
    await store.set("s", b"v1", LONG)
    lock = await store.acquire_lock("lock:s", LONG, read="s")
    assert lock is not None
    assert await store.set_if_present("s", b"v2", LONG, release=lock) is True
    assert await store.get("s") == b"v2"
    taken_again = await store.acquire_lock("lock:s", LONG, read="s")
    assert taken_again is not None and taken_again.value == b"v2"
    await lock.release()  # a second release must not free the lock someone else holds now
    assert await store.acquire_lock("lock:s", LONG) is None
    await store.delete("s")
    assert await store.set_if_present("s", b"v3", LONG, release=taken_again) is False
    assert await store.acquire_lock("lock:s", LONG) is not None


async def test_a_write_announces_itself_on_the_channel_given(redis_server: RedisServer) -> None:
    store = RedisStore.from_settings(url=redis_server.url)
    listener = redis.asyncio.Redis.from_url(redis_server.url)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe("invalidations")
        await pubsub.get_message(timeout=1.0)  # the subscription's confirmation
        await store.set("s", b"v1", LONG)
        assert await store.set_if_present("s", b"v2", LONG, publish=("invalidations", "s")) is True
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
        assert message is not None and message["data"] == b"s"
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await store.close()


async def test_a_value_stored_with_its_indexes_is_found_through_each(harness: Harness) -> None:
    store = harness.store
    await store.set_indexed("session:a", b"record", LONG, ["index:sub:x", "index:sid:y"], LONG)
    assert await store.get("session:a") == b"record"
    assert await store.index_members("index:sub:x") == {"session:a"}
    assert await store.index_members("index:sid:y") == {"session:a"}
    await store.set_indexed("session:b", b"other", LONG, ["index:sub:x"], LONG)
    assert await store.index_members("index:sub:x") == {"session:a", "session:b"}


async def test_counters_counted_together_count_as_one_by_one(harness: Harness) -> None:
    store = harness.store
    assert await store.increment_all([("rate:a", LONG), ("loop:b", LONG)]) == [1, 1]
    assert await store.increment_all([("rate:a", LONG), ("loop:b", LONG), ("loop:c", LONG)]) == [2, 2, 1]
    assert await store.increment("rate:a", LONG) == 3


async def test_counters_can_be_counted_and_a_value_stored_in_one_step(harness: Harness) -> None:
    store = harness.store
    assert await store.increment_all_and_set([("rate:a", LONG), ("loop:b", LONG)], "flow:x", b"flow", LONG) == [1, 1]
    assert await store.get("flow:x") == b"flow"
    assert await store.increment_all_and_set([("rate:a", LONG)], "flow:y", b"other", LONG) == [2]
    assert await store.increment_all([("rate:a", LONG), ("loop:b", LONG)]) == [3, 2]
    assert await store.get("flow:y") == b"other"


async def test_a_counter_can_be_counted_and_a_value_taken_in_one_step(harness: Harness) -> None:
    store = harness.store
    await store.set("flow:x", b"flow", LONG)
    assert await store.increment_and_take(("rate:a", LONG), "flow:x") == (1, b"flow")
    # taken: gone for the next, which still counts
    assert await store.increment_and_take(("rate:a", LONG), "flow:x") == (2, None)
    assert await store.get("flow:x") is None
    assert await store.increment("rate:a", LONG) == 3


async def test_storing_a_session_can_forget_other_keys_in_the_same_step(harness: Harness) -> None:
    store = harness.store
    await store.set("loop:browser", b"3", LONG)
    await store.set_indexed("session:a", b"record", LONG, ["index:sub:x"], LONG, forget=["loop:browser"])
    assert await store.get("loop:browser") is None
    assert await store.get("session:a") == b"record"
