"""The in-process session cache and its cross-replica invalidation (issue: a fast authenticated path).

Pure tables for the cache's rules and the RESP pieces; then two "replicas" (two session managers,
each with its own cache and Redis pub/sub feed) on one real redis-server: whatever one writes or
deletes, the other stops serving from memory at once, and while the feed is not known to be live
(Redis hung or gone) nothing is served from memory, so a store outage still fails closed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import uvloop

from authproxy.config import CookieConfig, SessionConfig, parse_config
from authproxy.errors import ConfigError, StoreUnavailable
from authproxy.sessions import invalidation
from authproxy.sessions.cache import SessionCache
from authproxy.sessions.factory import create_cache, create_publisher
from authproxy.sessions.invalidation import (
    LIVENESS_TIMEOUT,
    PING_INTERVAL,
    LocalFeed,
    PublishOnlyFeed,
    RedisFeed,
    channel_name,
    read_message,
    subscribe_handshake,
    write_message,
)
from authproxy.sessions.manager import SessionManager, sub_index
from authproxy.sessions.memory import MemoryStore
from authproxy.sessions.redis import RedisStore
from authproxy.sessions.resp import Endpoint, encode_command
from tests.support.net import free_port
from tests.support.records import NOW, alice_record
from tests.support.redis_server import RedisServer, publishes_taken, start_redis_cluster, start_redis_server
from tests.support.tls import self_signed

SECRET = "s" * 40
KEY_A = b"a" * 32
KEY_B = b"b" * 32
PREFIX = "cachetest:"


def _live_cache(**options: float) -> SessionCache:
    cache = SessionCache(max_age=options.get("max_age", 10.0), max_entries=int(options.get("max_entries", 100)))
    cache.set_live(True)
    return cache


# ---------------------------------------------------------------------------------------------- pure


@pytest.mark.parametrize(("max_age", "max_entries"), [(0.0, 100), (-1.0, 100), (10.0, 0)])
def test_a_cache_that_could_hold_nothing_is_a_mistake_not_a_cache(max_age: float, max_entries: int) -> None:
    with pytest.raises(ValueError, match="positive max_age and max_entries"):
        SessionCache(max_age=max_age, max_entries=max_entries)


def test_a_cached_record_is_served_to_its_own_ticket() -> None:
    cache = _live_cache()
    record = alice_record()
    assert cache.put("k", KEY_A, record, generation=cache.generation, now=NOW)
    assert cache.get("k", KEY_A, NOW + 1) is record


def test_another_ticket_key_never_gets_the_record() -> None:
    cache = _live_cache()
    cache.put("k", KEY_A, alice_record(), generation=cache.generation, now=NOW)
    assert cache.get("k", KEY_B, NOW) is None
    assert cache.get("k", KEY_A, NOW) is None, "a mismatch drops the entry"


@pytest.mark.parametrize(
    ("age", "served"),
    [pytest.param(9.99, True, id="younger-than-max-age"), pytest.param(10.0, False, id="at-max-age")],
)
def test_entries_live_at_most_max_age(age: float, served: bool) -> None:
    cache = _live_cache(max_age=10.0)
    cache.put("k", KEY_A, alice_record(), generation=cache.generation, now=NOW)
    assert (cache.get("k", KEY_A, NOW + age) is not None) is served


def test_invalidation_drops_the_entry() -> None:
    cache = _live_cache()
    cache.put("k", KEY_A, alice_record(), generation=cache.generation, now=NOW)
    cache.invalidate("k")
    assert cache.get("k", KEY_A, NOW) is None


def test_a_read_that_an_invalidation_overtook_is_not_kept() -> None:
    cache = _live_cache()
    generation = cache.generation  # a load starts reading the store...
    cache.invalidate("k")  # ...a logout somewhere deletes the record meanwhile
    assert not cache.put("k", KEY_A, alice_record(), generation=generation, now=NOW)
    assert cache.get("k", KEY_A, NOW) is None


def test_invalidation_of_another_key_also_refuses_reads_started_before_it() -> None:
    cache = _live_cache()
    generation = cache.generation
    cache.invalidate("other")
    assert not cache.put("k", KEY_A, alice_record(), generation=generation, now=NOW)


@pytest.mark.parametrize("turn_to", [pytest.param(False, id="going-off"), pytest.param(True, id="coming-back")])
def test_switching_liveness_forgets_everything(turn_to: bool) -> None:
    cache = _live_cache()
    cache.put("k", KEY_A, alice_record(), generation=cache.generation, now=NOW)
    cache.set_live(turn_to)
    cache.set_live(True)
    assert cache.get("k", KEY_A, NOW) is None and len(cache) == 0


def test_a_cache_that_is_not_live_serves_and_keeps_nothing() -> None:
    cache = SessionCache(max_age=10.0)
    assert not cache.live
    assert not cache.put("k", KEY_A, alice_record(), generation=cache.generation, now=NOW)
    assert cache.get("k", KEY_A, NOW) is None


def test_the_least_recently_used_entry_goes_first() -> None:
    cache = _live_cache(max_entries=2)
    for key in ("a", "b"):
        cache.put(key, KEY_A, alice_record(), generation=cache.generation, now=NOW)
    cache.get("a", KEY_A, NOW)
    cache.put("c", KEY_A, alice_record(), generation=cache.generation, now=NOW)
    assert [key for key in ("a", "b", "c") if cache.get(key, KEY_A, NOW)] == ["a", "c"]


def test_expired_entries_leave_when_new_ones_come_not_only_when_the_cache_is_full() -> None:
    # a burst of sign-ins puts every new session in; an hour later they must not still be held
    cache = _live_cache(max_age=10.0, max_entries=100)
    for index in range(50):
        cache.put(f"burst-{index}", KEY_A, alice_record(), generation=cache.generation, now=NOW)
    cache.put("recent", KEY_A, alice_record(), generation=cache.generation, now=NOW + 5)
    assert len(cache) == 51
    cache.put("later", KEY_A, alice_record(), generation=cache.generation, now=NOW + 10)
    assert len(cache) == 2
    assert cache.get("recent", KEY_A, NOW + 10) is not None and cache.get("later", KEY_A, NOW + 10) is not None


@pytest.mark.parametrize(
    ("args", "wire"),
    [
        pytest.param(("PING",), b"*1\r\n$4\r\nPING\r\n", id="ping"),
        pytest.param(("SUBSCRIBE", "p:ch"), b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\np:ch\r\n", id="subscribe"),
        pytest.param(("AUTH", "p\r\nw"), b"*2\r\n$4\r\nAUTH\r\n$4\r\np\r\nw\r\n", id="binary-safe"),
    ],
)
def test_commands_are_resp_arrays_of_bulk_strings(args: tuple[str, ...], wire: bytes) -> None:
    assert encode_command(*args) == wire


def test_one_message_may_name_several_keys() -> None:
    assert read_message(b"session:a session:b")[1] == ["session:a", "session:b"]
    assert read_message(b"")[1] == []


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        pytest.param("redis://127.0.0.1:6390/2", Endpoint(host="127.0.0.1", port=6390, database=2), id="plain"),
        pytest.param("rediss://r.example:6380", Endpoint(host="r.example", port=6380, tls=True), id="tls"),
        pytest.param("redis://:p%40ss@h/0", Endpoint(host="h", port=6379, password="p@ss"), id="password"),
        pytest.param("redis://u:pw@h:1", Endpoint(host="h", port=1, username="u", password="pw"), id="acl-user"),
        pytest.param("unix:///run/redis.sock", Endpoint(path="/run/redis.sock"), id="unix"),
    ],
)
def test_subscriber_endpoint_from_the_store_url(url: str, endpoint: Endpoint) -> None:
    assert Endpoint.from_url(url) == endpoint


def test_an_endpoint_never_shows_its_password() -> None:
    assert "sekrit" not in repr(Endpoint.from_url("redis://u:sekrit@127.0.0.1:6379/0"))


@pytest.mark.parametrize(
    ("endpoint", "first"),
    [
        pytest.param(Endpoint(host="h"), b"*2\r\n$9\r\nSUBSCRIBE", id="no-auth"),
        pytest.param(Endpoint(host="h", password="pw"), b"*2\r\n$4\r\nAUTH\r\n$2\r\npw", id="password"),
        pytest.param(Endpoint(host="h", username="u", password="pw"), b"*3\r\n$4\r\nAUTH\r\n$1\r\nu", id="acl"),
    ],
)
def test_the_handshake_authenticates_before_it_subscribes(endpoint: Endpoint, first: bytes) -> None:
    wire = subscribe_handshake(endpoint, "c")
    assert wire.startswith(first) and wire.endswith(encode_command("SUBSCRIBE", "c"))


def test_the_cache_is_on_unless_disabled() -> None:
    assert create_cache(SessionConfig.model_validate({"cache": {"enabled": False}}), MemoryStore()) is None
    default = create_cache(SessionConfig(), MemoryStore())
    assert default is not None and default[0].max_age == 10.0
    tuned = SessionConfig.model_validate({"cache": {"max_age": "3s"}})
    made = create_cache(tuned, MemoryStore())
    assert made is not None and made[0].max_age == 3.0 and isinstance(made[1], LocalFeed)


async def test_without_a_cache_only_a_process_on_redis_publishes_its_invalidations() -> None:
    # replicas on Redis that keep a cache must hear of sessions this one ended; on the memory
    # store there is no other process to tell
    off = SessionConfig.model_validate({"cache": {"enabled": False}})
    assert create_publisher(off, MemoryStore()) is None
    store = RedisStore("redis://127.0.0.1:1", key_prefix=PREFIX)
    try:
        assert isinstance(create_publisher(off, store), PublishOnlyFeed)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("cache", "problem"),
    [
        pytest.param("{enabled: true, max_age: 0s}", "session.cache.max_age", id="zero-max-age"),
        pytest.param("{enabled: true, max_entries: 0}", "session.cache.max_entries", id="no-entries"),
        pytest.param("{enable: true}", "session.cache.enable", id="typo"),
    ],
)
def test_cache_settings_are_checked_with_their_yaml_path(cache: str, problem: str) -> None:
    text = f"server: {{public_url: https://a.example.com}}\nsession: {{secrets: ['{SECRET}'], cache: {cache}}}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, {})
    assert any(line.startswith(problem) for line in info.value.problems), info.value.problems


# ---------------------------------------------------------------------------------------------- two replicas


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Replica:
    store: RedisStore
    cache: SessionCache
    feed: RedisFeed
    sessions: SessionManager


async def _replica(
    url: str, clock: Callable[[], float], *, timeout: float = 2.0, cluster: bool = False, prefix: str = PREFIX
) -> Replica:
    store = RedisStore(url, cluster=cluster, key_prefix=prefix, timeout=timeout)
    cache = SessionCache(max_age=60.0)
    feed = RedisFeed(cache, channel=channel_name(prefix), endpoint=store.subscriber_endpoint, publish=store.publish)
    sessions = SessionManager(
        store,
        secrets=[SECRET],
        cookie=CookieConfig(),
        idle_timeout=3600.0,
        absolute_timeout=86400.0,
        clock=clock,
        cache=cache,
        feed=feed,
    )
    await feed.start()
    return Replica(store, cache, feed, sessions)


async def _until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[tuple[Replica, Replica]]:
    clock = Clock()
    pair = (await _replica(redis_server.url, clock, timeout=0.5), await _replica(redis_server.url, clock, timeout=0.5))
    try:
        for replica in pair:
            assert await _until(lambda r=replica: r.cache.live, 5.0), "the feed never subscribed"
        yield pair
    finally:
        for replica in pair:
            await replica.feed.close()
            await replica.store.close()


async def _answer_reaches_the_next_request() -> None:
    """The time between one replica's answer and the browser's next request reaching another.

    Both replicas share this test's event loop, so that request/response round trip (at least
    a couple of loopback hops in reality) is stood in for by a pause of one such round trip.
    """
    await asyncio.sleep(0.002)


async def _cached_everywhere(pair: tuple[Replica, Replica], cookie: str) -> None:
    for replica in pair:
        for _ in range(2):  # the first load reads the store and fills the cache
            assert await replica.sessions.load(cookie) is not None
        assert len(replica.cache) == 1


async def test_repeat_loads_are_served_from_memory(
    replicas: tuple[Replica, Replica], redis_server: RedisServer
) -> None:
    a, _ = replicas
    _, cookie = await a.sessions.create(alice_record(last_seen_at=time.time(), created_at=time.time()))
    first = await a.sessions.load(cookie)
    redis_server.freeze()
    try:
        # the store hangs, but the feed was live a moment ago: the cached record answers at once
        again = await a.sessions.load(cookie)
        assert first is not None and again is not None and again.record is first.record
    finally:
        redis_server.thaw()


async def test_the_replica_that_created_a_session_serves_its_first_request_from_memory(
    replicas: tuple[Replica, Replica], redis_server: RedisServer
) -> None:
    a, b = replicas
    _, cookie = await a.sessions.create(alice_record(last_seen_at=time.time(), created_at=time.time()))
    redis_server.freeze()
    try:
        # the redirect after sign-in: no store read needed where the session was created
        assert await a.sessions.load(cookie) is not None
        with pytest.raises(StoreUnavailable):
            await b.sessions.load(cookie)  # another replica has to read it, and the store hangs
    finally:
        redis_server.thaw()


async def test_a_logout_on_one_replica_ends_the_session_on_the_other_at_once(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    session, cookie = await a.sessions.create(alice_record(last_seen_at=time.time(), created_at=time.time()))
    await _cached_everywhere(replicas, cookie)
    await b.sessions.delete(session)
    await _answer_reaches_the_next_request()
    assert await a.sessions.load(cookie) is None
    assert await b.sessions.load(cookie) is None


async def test_ending_a_users_sessions_on_one_replica_ends_them_on_the_other_at_once(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    _, cookie = await a.sessions.create(alice_record(sid="op-sid", last_seen_at=time.time(), created_at=time.time()))
    await _cached_everywhere(replicas, cookie)
    assert await b.sessions.end_sessions(sid="op-sid") == 1  # what a back-channel logout does
    await _answer_reaches_the_next_request()
    assert await a.sessions.load(cookie) is None


async def test_a_refresh_on_one_replica_is_seen_by_the_other_at_once(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    session, cookie = await a.sessions.create(alice_record(last_seen_at=time.time(), created_at=time.time()))
    await _cached_everywhere(replicas, cookie)
    session.record = replace(session.record, access_token="at-2", version=2)
    assert await b.sessions.save(session, only_if_present=True)
    await _answer_reaches_the_next_request()
    loaded = await a.sessions.load(cookie)
    assert loaded is not None and loaded.record.access_token == "at-2"


async def test_the_replica_that_refreshed_serves_the_new_tokens_from_memory_and_others_read_them(
    replicas: tuple[Replica, Replica], redis_server: RedisServer
) -> None:
    a, b = replicas
    session, cookie = await a.sessions.create(alice_record(last_seen_at=time.time(), created_at=time.time()))
    await _cached_everywhere(replicas, cookie)
    session.record = replace(session.record, access_token="at-2", version=2)
    assert await a.sessions.save(session, only_if_present=True)
    await asyncio.sleep(0.05)  # a's own announcement has come back to it by now, and was skipped
    redis_server.freeze()
    try:
        loaded = await a.sessions.load(cookie)
        assert loaded is not None and loaded.record.access_token == "at-2"
        with pytest.raises(StoreUnavailable):
            await b.sessions.load(cookie)  # b dropped its copy and must read the store
    finally:
        redis_server.thaw()


async def test_a_write_elsewhere_after_a_refresh_still_reaches_the_replica_that_refreshed(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    session, cookie = await a.sessions.create(alice_record(last_seen_at=time.time(), created_at=time.time()))
    session.record = replace(session.record, access_token="at-2", version=2)
    assert await a.sessions.save(session, only_if_present=True)
    session.record = replace(session.record, access_token="at-3", version=3)
    assert await b.sessions.save(session, only_if_present=True)
    await _answer_reaches_the_next_request()
    loaded = await a.sessions.load(cookie)
    assert loaded is not None and loaded.record.access_token == "at-3"


async def test_a_logout_while_the_channels_cluster_node_is_down_still_reaches_the_other_replicas_cache(
    tmp_path: Path,
) -> None:
    # under Redis Cluster a PUBLISH reaches the subscribers of every node, whichever node takes
    # it: the node serving the channel's slot being down must not keep a logout from the caches
    cluster = start_redis_cluster(tmp_path / "cluster")
    pair: list[Replica] = []
    try:
        subscribed_on = cluster.nodes[0]  # the URL's node
        # the channel on another node than the subscriptions and than alice's index
        prefix = next(
            candidate
            for candidate in (f"cachetest-{n}:" for n in range(100))
            if cluster.node_of(channel_name(candidate))
            not in (subscribed_on, cluster.node_of(candidate + sub_index("alice")))
        )
        channel_node = cluster.node_of(channel_name(prefix))
        clock = Clock()
        for _ in range(2):
            pair.append(await _replica(cluster.url, clock, timeout=0.5, cluster=True, prefix=prefix))
            assert await _until(lambda r=pair[-1]: r.cache.live, 5.0), "the feed never subscribed"
        a, b = pair
        session, cookie = await a.sessions.create(alice_record(last_seen_at=time.time(), created_at=time.time()))
        while cluster.node_of(prefix + session.store_key) is channel_node:
            await a.sessions.delete(session)  # wanted: a session kept on another node than the channel's
            session, cookie = await a.sessions.create(alice_record(last_seen_at=time.time(), created_at=time.time()))
        await _cached_everywhere((a, b), cookie)
        channel_node.stop()
        await b.sessions.delete(session)  # the session's own node is up: the sign-out succeeds
        await _answer_reaches_the_next_request()
        assert await a.sessions.load(cookie) is None
        assert await b.sessions.load(cookie) is None
    finally:
        for replica in pair:
            await replica.feed.close()
            await replica.store.close()
        cluster.kill()


async def test_under_cluster_invalidations_are_published_on_the_node_the_replicas_subscribe_on(
    tmp_path: Path,
) -> None:
    # another node passes a PUBLISH on over the cluster bus, at times tens of milliseconds
    # late: a browser's next request could still find the ended session in another cache
    cluster = start_redis_cluster(tmp_path / "cluster")
    replica: Replica | None = None
    try:
        subscribed_on = cluster.nodes[0]  # the URL's node
        prefix = next(
            candidate
            for candidate in (f"cachetest-{n}:" for n in range(100))
            if cluster.node_of(channel_name(candidate)) is not subscribed_on
        )
        replica = await _replica(cluster.url, Clock(), timeout=0.5, cluster=True, prefix=prefix)
        session, _ = await replica.sessions.create(alice_record(last_seen_at=time.time(), created_at=time.time()))
        before = publishes_taken(subscribed_on.port)
        await replica.sessions.delete(session)
        session.record = replace(session.record, version=2)
        assert not await replica.sessions.save(session, only_if_present=True)  # announced with the write
        assert publishes_taken(subscribed_on.port) - before == 2
    finally:
        if replica is not None:
            await replica.feed.close()
            await replica.store.close()
        cluster.kill()


def test_a_message_names_its_sender_and_older_messages_name_none() -> None:
    assert read_message(write_message("p1", ["session:a", "session:b"]).encode()) == ("p1", ["session:a", "session:b"])
    assert read_message(b"session:a session:b") == (None, ["session:a", "session:b"])
    assert read_message(write_message("p1", ["session:a"]).encode())[1] == ["session:a"]


async def test_a_hung_store_switches_the_cache_off_and_requests_fail_closed(
    replicas: tuple[Replica, Replica], redis_server: RedisServer
) -> None:
    a, _ = replicas
    _, cookie = await a.sessions.create(alice_record(last_seen_at=time.time(), created_at=time.time()))
    assert await a.sessions.load(cookie) is not None
    redis_server.freeze()
    try:
        assert await _until(lambda: not a.cache.live, LIVENESS_TIMEOUT + PING_INTERVAL + 2.0)
        assert len(a.cache) == 0
        with pytest.raises(StoreUnavailable):
            await a.sessions.load(cookie)
    finally:
        redis_server.thaw()
    # the feed resubscribes by itself, and the session is served again
    assert await _until(lambda: a.cache.live, 5.0)
    assert await a.sessions.load(cookie) is not None


async def test_a_restarted_store_resubscribes_and_forgets_what_was_cached(
    replicas: tuple[Replica, Replica], redis_server: RedisServer
) -> None:
    a, _ = replicas
    _, cookie = await a.sessions.create(alice_record(last_seen_at=time.time(), created_at=time.time()))
    assert await a.sessions.load(cookie) is not None
    assert len(a.cache) == 1
    redis_server.stop()
    assert await _until(lambda: not a.cache.live, 3.0)
    redis_server.start()
    assert await _until(lambda: a.cache.live, 5.0)
    # nothing persisted: the session is gone, and no cached copy outlived it
    assert await a.sessions.load(cookie) is None


async def test_the_feed_keeps_trying_while_sentinel_names_no_master(redis_server: RedisServer) -> None:
    # during a Sentinel failover the subscriber's address cannot be had for a while: the feed
    # must keep asking and go live once a master is named, not end with the first refusal
    store = RedisStore(redis_server.url, key_prefix=PREFIX, timeout=0.5)
    cache = SessionCache(max_age=60.0)
    refusals = 2

    async def endpoint() -> Endpoint:
        nonlocal refusals
        if refusals > 0:
            refusals -= 1
            raise StoreUnavailable("no master for mymaster (test)")
        return await store.subscriber_endpoint()

    feed = RedisFeed(cache, channel=channel_name(PREFIX), endpoint=endpoint, publish=store.publish)
    await feed.start()
    try:
        assert await _until(lambda: cache.live, 10.0), "the feed gave up"
        assert refusals == 0
    finally:
        await feed.close()
        await store.close()


async def test_a_sign_out_whose_delete_timed_out_is_served_by_no_cache_meanwhile(
    replicas: tuple[Replica, Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a paused or hung Redis: the delete's answer comes too late (StoreUnavailable), the delete
    # itself lands; no replica's cache may keep serving the session
    a, b = replicas
    session, cookie = await a.sessions.create(alice_record(last_seen_at=time.time(), created_at=time.time()))
    await _cached_everywhere(replicas, cookie)
    delete = b.store.delete

    async def delete_answered_too_late(*keys: str) -> None:
        await delete(*keys)
        raise StoreUnavailable("timed out")

    monkeypatch.setattr(b.store, "delete", delete_answered_too_late)
    with pytest.raises(StoreUnavailable):
        await b.sessions.delete(session)
    await _answer_reaches_the_next_request()
    assert await a.sessions.load(cookie) is None
    assert await b.sessions.load(cookie) is None


async def test_a_retried_logout_reaches_the_caches_of_sessions_already_gone_from_the_store(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    session, cookie = await a.sessions.create(
        alice_record(sid="op-sid", last_seen_at=time.time(), created_at=time.time())
    )
    await _cached_everywhere(replicas, cookie)
    await b.store.delete(session.store_key)  # an earlier delete that landed and reached no cache
    assert await b.sessions.end_sessions(sid="op-sid") == 0  # the provider's retried back-channel logout
    await _answer_reaches_the_next_request()
    assert await a.sessions.load(cookie) is None


def test_the_cache_goes_live_as_soon_as_the_subscription_is_confirmed(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # on uvloop, the proxy's loop, the confirmation often arrives before the feed first waits
    # for it: the cache must go live then too, not a ping interval later (meanwhile a replica
    # serves from the store what it could serve from memory, and a Redis pause is a 503)
    monkeypatch.setattr(invalidation, "PING_INTERVAL", 30.0)
    monkeypatch.setattr(invalidation, "LIVENESS_TIMEOUT", 90.0)

    async def subscribe_again_and_again() -> None:
        store = RedisStore(redis_server.url, key_prefix=PREFIX, timeout=0.5)
        try:
            for _ in range(10):
                cache = SessionCache(max_age=60.0)
                feed = RedisFeed(
                    cache, channel=channel_name(PREFIX), endpoint=store.subscriber_endpoint, publish=store.publish
                )
                await feed.start()
                try:
                    assert await _until(lambda c=cache: c.live, 5.0), "live only after a ping interval"
                finally:
                    await feed.close()
        finally:
            await store.close()

    uvloop.run(subscribe_again_and_again())


@pytest.mark.parametrize(
    ("host", "live"),
    [
        pytest.param("127.0.0.1", True, id="the-certificates-name"),
        pytest.param("localhost", False, id="another-name"),
    ],
)
async def test_the_feed_trusts_the_ca_the_store_url_names_and_nothing_more(
    tmp_path: Path, host: str, live: bool
) -> None:
    # rediss:// with ?ssl_ca_certs= for a private CA: the store's connections trust it, and so
    # must the feed's, or the cache stays off for good with only a warning in the log; the
    # certificate's name is still checked
    cert, key = self_signed(tmp_path)
    tls_port = free_port()
    server = start_redis_server(
        tmp_path / "redis",
        *("--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)),
        *("--tls-auth-clients", "no"),
    )
    replica = await _replica(f"rediss://{host}:{tls_port}/0?ssl_ca_certs={cert}", Clock(), timeout=1.0)
    try:
        assert await _until(lambda: replica.cache.live, 3.0) is live
    finally:
        await replica.feed.close()
        await replica.store.close()
        server.kill()
