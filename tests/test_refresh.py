"""Proactive refresh (SPEC section 5): exactly one refresh grant per session, everywhere.

The provider stub rotates refresh tokens and revokes the grant when a rotated one is used again,
so any double refresh shows up as a reuse. The races run over MemoryStore and a real Redis, over
several Refresher/SessionManager pairs on one Redis (replicas), and over separate OS processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from authproxy.config import CookieConfig
from authproxy.errors import ProviderUnavailable, SessionEnded, StoreUnavailable, TokenEndpointError, TokenInvalid
from authproxy.sessions.manager import Session, SessionManager, sub_index
from authproxy.sessions.memory import MemoryStore
from authproxy.sessions.record import SessionRecord
from authproxy.sessions.redis import RedisStore
from authproxy.sessions.refresh import (
    LOCK_PREFIX,
    SAVE_ATTEMPTS,
    Refresher,
    build_refreshed_record,
    is_access_valid,
    is_refresh_due,
    is_refreshed_since,
)
from authproxy.sessions.store import Lock, SessionStore
from tests.support.net import free_port
from tests.support.ops import login, start_ops_stack
from tests.support.proxy_process import start_proxy
from tests.support.refresh_race import (
    ABSOLUTE,
    FIRST_REFRESH_TOKEN,
    IDLE,
    RotatingProvider,
    TokenSet,
    access_token_for,
    fingerprint,
    http_refresher,
    serve_provider,
)

SECRET = "s" * 40
KEY_PREFIX = "test:"
BEFORE = 60.0  # refresh_before_expiry
T0 = 1_800_000_000.0
REPO = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        backend: SessionStore = MemoryStore()
    else:
        backend = RedisStore(request.getfixturevalue("redis_url"), key_prefix=KEY_PREFIX)
    yield backend
    await backend.close()


@pytest.fixture
async def redis_stores(redis_url: str) -> AsyncIterator[list[RedisStore]]:
    """Four clients of one Redis: one per simulated replica."""
    stores = [RedisStore(redis_url, key_prefix=KEY_PREFIX) for _ in range(4)]
    yield stores
    for backend in stores:
        await backend.close()


def manager(store: SessionStore, clock: Clock) -> SessionManager:
    return SessionManager(
        store,
        secrets=[SECRET],
        cookie=CookieConfig(secure=False),
        idle_timeout=IDLE,
        absolute_timeout=ABSOLUTE,
        clock=clock,
    )


def make_record(
    now: float, *, expires_in: float | None = 30.0, refresh_token: str | None = FIRST_REFRESH_TOKEN
) -> SessionRecord:
    """A session whose access token expires ``expires_in`` from ``now`` (30 s: due)."""
    return SessionRecord(
        sub="alice",
        claims={"sub": "alice", "email": "alice@example.com"},
        sid="provider-sid",
        id_token="id-0",
        access_token=access_token_for(0),
        refresh_token=refresh_token,
        access_expires_at=None if expires_in is None else now + expires_in,
        created_at=now,
        last_seen_at=now,
        absolute_expires_at=now + ABSOLUTE,
    )


async def stored(sessions: SessionManager, cookie: str) -> SessionRecord | None:
    session = await sessions.load(cookie)
    return None if session is None else session.record


# ---------------------------------------------------------------------- pure decisions


@pytest.mark.parametrize(
    ("expires_in", "valid"),
    [
        pytest.param(None, True, id="unknown-lifetime"),
        pytest.param(0.001, True, id="just-before-expiry"),
        pytest.param(0.0, False, id="at-expiry"),
        pytest.param(-1.0, False, id="expired"),
    ],
)
def test_an_access_token_is_forwarded_only_before_its_expiry(expires_in: float | None, valid: bool) -> None:
    # after a refresh that could not happen, the old token is forwarded only while this holds
    assert is_access_valid(make_record(T0, expires_in=expires_in), T0) is valid


def test_a_session_without_an_access_token_has_none_to_forward() -> None:
    assert is_access_valid(replace(make_record(T0, expires_in=None), access_token=None), T0) is False


@pytest.mark.parametrize(
    ("expires_in", "before", "due"),
    [
        pytest.param(None, BEFORE, False, id="unknown-lifetime-never-due"),
        pytest.param(3600.0, BEFORE, False, id="far-from-expiry"),
        pytest.param(BEFORE + 0.001, BEFORE, False, id="just-outside-window"),
        pytest.param(BEFORE, BEFORE, True, id="window-boundary"),
        pytest.param(30.0, BEFORE, True, id="inside-window"),
        pytest.param(0.0, BEFORE, True, id="expiring-now"),
        pytest.param(-10.0, BEFORE, True, id="already-expired"),
        pytest.param(1.0, 0.0, False, id="no-window-still-valid"),
        pytest.param(0.0, 0.0, True, id="no-window-expired"),
    ],
)
def test_refresh_is_due_within_window_of_expiry(expires_in: float | None, before: float, due: bool) -> None:
    record = make_record(T0, expires_in=expires_in)
    assert is_refresh_due(record, before, T0) is due
    assert (
        Refresher(manager(MemoryStore(), Clock()), RotatingProvider().refresh, refresh_before_expiry=before).is_due(
            record, T0
        )
        is due
    )


@pytest.mark.parametrize(
    ("current_changes", "settled"),
    [
        pytest.param({}, False, id="unchanged-still-due"),
        pytest.param({"access_expires_at": T0 + 3600}, True, id="not-due-any-more"),
        pytest.param({"version": 2, "access_token": "at-1"}, True, id="refreshed-since-and-valid"),
        pytest.param(
            {"version": 2, "access_token": "at-1", "access_expires_at": T0 - 1}, False, id="refreshed-expired"
        ),
    ],
)
def test_refreshed_since_decides_whether_a_waiter_reuses_the_stored_result(
    current_changes: dict[str, Any], settled: bool
) -> None:
    seen = make_record(T0)
    current = make_record(T0)
    for name, value in current_changes.items():
        setattr(current, name, value)
    assert is_refreshed_since(seen, current, BEFORE, T0) is settled


@pytest.mark.parametrize(
    ("tokens", "refresh_token", "id_token"),
    [
        pytest.param(TokenSet("at-1", T0 + 300, "rt-1", "id-1"), "rt-1", "id-1", id="rotated-with-id-token"),
        pytest.param(TokenSet("at-1", T0 + 300, None, None), FIRST_REFRESH_TOKEN, "id-0", id="not-rotated-kept"),
    ],
)
def test_refreshed_record_stores_new_tokens_and_keeps_claims(
    tokens: TokenSet, refresh_token: str, id_token: str
) -> None:
    record = make_record(T0)
    refreshed = build_refreshed_record(record, tokens)
    assert (refreshed.access_token, refreshed.access_expires_at) == ("at-1", T0 + 300)
    assert (refreshed.refresh_token, refreshed.id_token) == (refresh_token, id_token)
    assert refreshed.version == record.version + 1
    assert refreshed.claims == record.claims and refreshed.sub == record.sub and refreshed.sid == record.sid
    assert record.access_token == access_token_for(0), "the input record is left alone"


# ---------------------------------------------------------------------- one process


async def test_not_due_returns_session_without_provider_call(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    provider = RotatingProvider(clock=clock)
    session, _ = await sessions.create(make_record(clock.now, expires_in=3600))
    refresher = Refresher(sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock)
    assert await refresher.ensure_fresh(session) is session
    assert provider.calls == 0


async def test_concurrent_requests_in_one_process_cause_one_refresh(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    provider = RotatingProvider(clock=clock, delay=1.0)
    results: list[str] = []
    session, cookie = await sessions.create(make_record(clock.now))
    refresher = Refresher(
        sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock, on_result=results.append
    )

    calls = [asyncio.create_task(refresher.ensure_fresh(session)) for _ in range(50)]
    await asyncio.sleep(0.2)
    assert refresher.in_flight == 1, "all 50 callers share one flight"
    fresh = await asyncio.gather(*calls)

    assert (provider.calls, provider.grants, provider.reuses) == (1, 1, 0)
    assert {s.record.access_token for s in fresh} == {access_token_for(1)}
    assert results == ["ok"]
    record = await stored(sessions, cookie)
    assert record is not None
    assert (record.access_token, record.refresh_token, record.id_token) == (access_token_for(1), "rt-1", "id-1")
    assert record.version == session.record.version + 1
    assert record.claims == session.record.claims
    assert refresher.in_flight == 0, "the single-flight entry is removed when the refresh is done"


class LockCountingStore(MemoryStore):
    """The memory store, counting attempts to take a lock."""

    def __init__(self) -> None:
        super().__init__()
        self.lock_attempts = 0

    async def acquire_lock(self, name: str, lease: float, *, read: str | None = None) -> Lock | None:
        self.lock_attempts += 1
        return await super().acquire_lock(name, lease, read=read)


async def test_callers_in_one_process_share_one_flight_and_one_lock_attempt() -> None:
    clock = Clock()
    store = LockCountingStore()
    sessions = manager(store, clock)
    provider = RotatingProvider(clock=clock, delay=0.5)
    session, _ = await sessions.create(make_record(clock.now))
    refresher = Refresher(sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock)

    await asyncio.gather(*(refresher.ensure_fresh(session) for _ in range(20)))

    # without single flight the other 19 would each poll the store lock until the holder is done
    assert store.lock_attempts == 1
    assert provider.calls == 1


async def test_cancelled_caller_does_not_abandon_the_refresh(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    provider = RotatingProvider(clock=clock, delay=0.3)
    session, cookie = await sessions.create(make_record(clock.now))
    refresher = Refresher(sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock)

    first = asyncio.create_task(refresher.ensure_fresh(session))
    second = asyncio.create_task(refresher.ensure_fresh(session))
    await asyncio.sleep(0.1)
    first.cancel()
    # the provider has already rotated the token: giving up now would lose the new one
    assert (await second).record.access_token == access_token_for(1)
    with pytest.raises(asyncio.CancelledError):
        await first
    record = await stored(sessions, cookie)
    assert record is not None and record.refresh_token == "rt-1"
    assert (provider.calls, provider.reuses) == (1, 0)


async def test_refresh_completes_when_its_only_caller_is_cancelled(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    provider = RotatingProvider(clock=clock, delay=0.3)
    session, cookie = await sessions.create(make_record(clock.now))
    refresher = Refresher(sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock)

    only = asyncio.create_task(refresher.ensure_fresh(session))
    await asyncio.sleep(0.1)
    only.cancel()
    with pytest.raises(asyncio.CancelledError):
        await only
    # a later request with the same (old) session joins or reuses that refresh
    assert (await refresher.ensure_fresh(session)).record.access_token == access_token_for(1)
    assert (provider.calls, provider.reuses) == (1, 0)
    record = await stored(sessions, cookie)
    assert record is not None and record.refresh_token == "rt-1"


async def test_every_caller_of_a_failed_flight_gets_its_error_and_the_next_request_flies_again() -> None:
    clock = Clock()
    sessions = manager(MemoryStore(), clock)
    provider = RotatingProvider(clock=clock, delay=0.1, down=True)
    session, _ = await sessions.create(make_record(clock.now, expires_in=-1))
    refresher = Refresher(sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock)

    outcomes = await asyncio.gather(*(refresher.ensure_fresh(session) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(outcome, ProviderUnavailable) for outcome in outcomes)
    assert (provider.calls, refresher.in_flight) == (1, 0)
    provider.down = False
    assert (await refresher.ensure_fresh(session)).record.access_token == access_token_for(1)


async def test_a_flight_cancelled_at_shutdown_leaves_no_caller_waiting() -> None:
    clock = Clock()
    sessions = manager(MemoryStore(), clock)
    provider = RotatingProvider(clock=clock, delay=10.0)
    session, _ = await sessions.create(make_record(clock.now))
    refresher = Refresher(sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock)

    callers = [asyncio.create_task(refresher.ensure_fresh(session)) for _ in range(3)]
    await asyncio.sleep(0.05)
    (flight,) = [task for task in asyncio.all_tasks() if "_fly_and_deliver" in repr(task.get_coro())]
    flight.cancel()
    for caller in callers:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(caller, 2.0)
    assert refresher.in_flight == 0


async def test_late_request_with_pre_refresh_session_reuses_the_result(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    provider = RotatingProvider(clock=clock)
    old, _ = await sessions.create(make_record(clock.now))
    refresher = Refresher(sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock)
    await refresher.ensure_fresh(old)

    late = await refresher.ensure_fresh(old)

    assert late.record.access_token == access_token_for(1)
    assert (provider.calls, provider.reuses) == (1, 0)


async def test_provider_without_rotation_keeps_the_refresh_token(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    provider = RotatingProvider(clock=clock, rotate=False, id_tokens=False)
    session, cookie = await sessions.create(make_record(clock.now))
    refresher = Refresher(sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock)
    await refresher.ensure_fresh(session)
    record = await stored(sessions, cookie)
    assert record is not None
    assert (record.access_token, record.refresh_token, record.id_token) == ("at-1", FIRST_REFRESH_TOKEN, "id-0")


# ---------------------------------------------------------------------- failures


class StoreThatCannotWrite(MemoryStore):
    """A store that reads, and locks, but fails every write of a session that exists."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    async def set_if_present(self, key: str, value: bytes, ttl: float, **options: Any) -> bool:
        self.writes += 1
        raise StoreUnavailable("the store is down")


async def test_refreshed_tokens_that_cannot_be_stored_fail_the_request_rather_than_being_used_unsaved() -> None:
    # the provider has spent (and may have rotated) the refresh token: tokens the store never
    # saw must not be forwarded as if the refresh had worked
    clock = Clock()
    store = StoreThatCannotWrite()
    sessions = manager(store, clock)
    provider = RotatingProvider(clock=clock)
    session, _ = await sessions.create(make_record(clock.now))
    refresher = Refresher(sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock)
    with pytest.raises(StoreUnavailable):
        await refresher.ensure_fresh(session)
    assert provider.calls == 1 and store.writes == SAVE_ATTEMPTS


async def test_invalid_grant_ends_and_deletes_the_session(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    provider = RotatingProvider(clock=clock, current="some-other-token")
    results: list[str] = []
    session, cookie = await sessions.create(make_record(clock.now))
    refresher = Refresher(
        sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock, on_result=results.append
    )
    with pytest.raises(SessionEnded):
        await refresher.ensure_fresh(session)
    assert await store.get(session.store_key) is None
    assert session.store_key not in await store.index_members(sub_index("alice"))
    assert await sessions.load(cookie) is None
    assert results == ["invalid_grant"]


async def test_refreshed_tokens_failing_validation_end_the_session(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    session, _ = await sessions.create(make_record(clock.now))

    async def refresh_with_bad_id_token(refresh_token: str, record: SessionRecord) -> TokenSet:
        raise TokenInvalid("id_token: bad signature")

    refresher = Refresher(sessions, refresh_with_bad_id_token, refresh_before_expiry=BEFORE, clock=clock)
    with pytest.raises(SessionEnded):
        await refresher.ensure_fresh(session)
    assert await store.get(session.store_key) is None


async def test_a_refresh_is_logged_with_its_user_and_without_its_tokens(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    provider = RotatingProvider(clock=clock)
    session, _ = await sessions.create(make_record(clock.now))
    refresher = Refresher(sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock)
    with caplog.at_level("INFO", logger="authproxy.auth"):
        fresh = await refresher.ensure_fresh(session)
        await asyncio.sleep(0)  # the line follows the callers' wake-up
    (line,) = [record for record in caplog.records if record.getMessage() == "refresh ok"]
    assert line.fields == {"event": "refresh", "result": "ok", "user": "alice"}  # type: ignore[attr-defined]
    assert fresh.record.refresh_token is not None and fresh.record.refresh_token not in caplog.text


async def test_the_refresh_is_bound_to_the_record_stored_when_the_lock_was_taken(store: SessionStore) -> None:
    # a new ID token must match the session's current one (Core 1.0 section 12.2): the provider
    # function gets the record read under the lock, not the one the request loaded earlier
    clock = Clock()
    sessions = manager(store, clock)
    provider = RotatingProvider(clock=clock)
    session, cookie = await sessions.create(make_record(clock.now))
    stored_now = await stored(sessions, cookie)
    assert stored_now is not None
    stored_now.id_token = "id-stored-meanwhile"
    await sessions.save(Session(session.ticket, stored_now, session.cookie))
    seen: list[SessionRecord] = []

    async def refresh(refresh_token: str, record: SessionRecord) -> TokenSet:
        seen.append(record)
        return await provider.refresh(refresh_token, record)

    refresher = Refresher(sessions, refresh, refresh_before_expiry=BEFORE, clock=clock)
    await refresher.ensure_fresh(session)
    assert [(record.sub, record.id_token) for record in seen] == [("alice", "id-stored-meanwhile")]


async def test_the_refresh_token_spent_is_the_one_stored_when_the_lock_was_taken_not_the_one_loaded(
    store: SessionStore,
) -> None:
    # the request loaded the session holding rt-0; meanwhile another worker refreshed it (rt-0
    # spent, rt-1 stored) and that access token has expired too, so a refresh is due again: it
    # must spend rt-1, as spending the rotated rt-0 again would make the provider revoke the grant
    clock = Clock()
    provider = RotatingProvider(clock=clock)
    loaded_by_request, cookie = await manager(store, clock).create(make_record(clock.now))
    other_worker = Refresher(manager(store, clock), provider.refresh, refresh_before_expiry=BEFORE, clock=clock)
    await other_worker.ensure_fresh(loaded_by_request)
    clock.now += provider.lifetime + 1
    spent: list[str] = []

    async def refresh(refresh_token: str, record: SessionRecord) -> TokenSet:
        spent.append(refresh_token)
        return await provider.refresh(refresh_token, record)

    sessions = manager(store, clock)
    fresh = await Refresher(sessions, refresh, refresh_before_expiry=BEFORE, clock=clock).ensure_fresh(
        loaded_by_request
    )

    assert spent == ["rt-1"]
    assert (provider.reuses, provider.revoked) == (0, False)
    assert fresh.record.access_token == access_token_for(2)
    record = await stored(sessions, cookie)
    assert record is not None and record.refresh_token == "rt-2"


@pytest.mark.parametrize("failure", ["unavailable", "server_error"])
async def test_provider_failure_with_valid_access_token_proceeds_on_old_session(
    store: SessionStore, failure: str
) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    results: list[str] = []
    session, cookie = await sessions.create(make_record(clock.now, expires_in=30))

    async def failing(refresh_token: str, record: SessionRecord) -> TokenSet:
        if failure == "unavailable":
            raise ProviderUnavailable("connection refused")
        raise TokenEndpointError("server_error")

    refresher = Refresher(sessions, failing, refresh_before_expiry=BEFORE, clock=clock, on_result=results.append)
    kept = await refresher.ensure_fresh(session)
    assert kept.record.access_token == access_token_for(0)
    assert await stored(sessions, cookie) == session.record
    assert results == ["unavailable"]


async def test_provider_failure_with_expired_access_token_is_unavailable_then_recovers(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    provider = RotatingProvider(clock=clock, down=True)
    results: list[str] = []
    session, cookie = await sessions.create(make_record(clock.now, expires_in=-1))
    refresher = Refresher(
        sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock, on_result=results.append
    )

    with pytest.raises(ProviderUnavailable):
        await refresher.ensure_fresh(session)
    assert await stored(sessions, cookie) == session.record, "the session is kept for a later retry"

    provider.down = False
    fresh = await refresher.ensure_fresh(session)
    assert fresh.record.access_token == access_token_for(1)
    assert results == ["unavailable", "ok"]


async def test_slow_provider_that_lets_the_token_expire_meanwhile_is_unavailable(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    session, _ = await sessions.create(make_record(clock.now, expires_in=5))

    async def slow_then_timeout(refresh_token: str, record: SessionRecord) -> TokenSet:
        clock.now += 10  # the provider's timeout outlasted the access token
        raise ProviderUnavailable("timed out")

    refresher = Refresher(sessions, slow_then_timeout, refresh_before_expiry=BEFORE, clock=clock)
    with pytest.raises(ProviderUnavailable):
        await refresher.ensure_fresh(session)
    assert await store.get(session.store_key) is not None


async def test_no_refresh_token_and_expired_access_token_ends_the_session(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    provider = RotatingProvider(clock=clock)
    results: list[str] = []
    session, _ = await sessions.create(make_record(clock.now, expires_in=-1, refresh_token=None))
    refresher = Refresher(
        sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock, on_result=results.append
    )
    with pytest.raises(SessionEnded):
        await refresher.ensure_fresh(session)
    assert await store.get(session.store_key) is None
    assert (provider.calls, results) == (0, ["ended"])


async def test_no_refresh_token_but_valid_access_token_is_returned_unchanged(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    provider = RotatingProvider(clock=clock)
    session, cookie = await sessions.create(make_record(clock.now, expires_in=30, refresh_token=None))
    refresher = Refresher(sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock)
    kept = await refresher.ensure_fresh(session)
    assert kept.record == session.record
    assert provider.calls == 0
    assert await stored(sessions, cookie) == session.record


async def test_waiter_ends_when_the_holder_deletes_the_session(store: SessionStore) -> None:
    clock = Clock()
    provider = RotatingProvider(clock=clock, delay=0.3, current="some-other-token")
    holder_sessions, waiter_sessions = manager(store, clock), manager(store, clock)
    session, _ = await holder_sessions.create(make_record(clock.now))
    holder = Refresher(holder_sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock)
    waiter = Refresher(waiter_sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock)

    outcomes = await asyncio.gather(holder.ensure_fresh(session), waiter.ensure_fresh(session), return_exceptions=True)
    assert all(isinstance(outcome, SessionEnded) for outcome in outcomes)
    assert provider.calls == 1, "the waiter learnt the outcome from the store, not from the provider"


# ---------------------------------------------------------------------- across instances


async def test_lease_is_extended_while_a_slow_refresh_runs(store: SessionStore) -> None:
    clock = Clock()
    provider = RotatingProvider(clock=clock, delay=2.0)
    first_sessions, second_sessions = manager(store, clock), manager(store, clock)
    session, cookie = await first_sessions.create(make_record(clock.now))
    first = Refresher(first_sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock, lease=0.5)
    second = Refresher(second_sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock, lease=0.5)

    first_call = asyncio.create_task(first.ensure_fresh(session))
    await asyncio.sleep(0.1)
    second_call = asyncio.create_task(second.ensure_fresh(session))
    # well past the 0.5 s lease, while the provider is still answering: the lock is still held
    for _ in range(3):
        await asyncio.sleep(0.5)
        assert await store.acquire_lock(LOCK_PREFIX + session.store_key, 5.0) is None
        assert provider.calls == 1
    results = await asyncio.gather(first_call, second_call)

    assert {r.record.access_token for r in results} == {access_token_for(1)}
    assert (provider.calls, provider.grants, provider.reuses) == (1, 1, 0)
    record = await stored(first_sessions, cookie)
    assert record is not None and record.refresh_token == "rt-1"


async def test_replicas_on_one_redis_cause_exactly_one_refresh(redis_stores: list[RedisStore]) -> None:
    clock = Clock()
    provider = RotatingProvider(clock=clock, delay=3.0)
    replicas = [manager(backend, clock) for backend in redis_stores]
    old, cookie = await replicas[0].create(make_record(clock.now))
    refreshers = [
        Refresher(sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock) for sessions in replicas
    ]
    # each replica loads the session from the cookie itself, as a request would
    loaded = [await sessions.load(cookie) for sessions in replicas]
    calls = [
        refresher.ensure_fresh(session)
        for refresher, session in zip(refreshers, loaded, strict=True)
        if session is not None
        for _ in range(10)
    ]
    assert len(calls) == 40

    results = await asyncio.gather(*calls)

    assert {r.record.access_token for r in results} == {access_token_for(1)}
    assert (provider.calls, provider.grants, provider.reuses, provider.revoked) == (1, 1, 0, False)
    # a late request on another replica still holding the pre-refresh session
    late = await refreshers[3].ensure_fresh(Session(old.ticket, old.record, old.cookie))
    assert late.record.access_token == access_token_for(1)
    assert provider.calls == 1
    for sessions in replicas:
        record = await stored(sessions, cookie)
        assert record is not None and (record.refresh_token, record.version) == ("rt-1", 2)


async def test_separate_processes_on_one_redis_cause_exactly_one_refresh(redis_url: str) -> None:
    provider = RotatingProvider(delay=3.0)  # real clock: the helper processes use one too
    backend = RedisStore(redis_url, key_prefix=KEY_PREFIX)
    processes: list[asyncio.subprocess.Process] = []
    try:
        sessions = SessionManager(
            backend, secrets=[SECRET], cookie=CookieConfig(secure=False), idle_timeout=IDLE, absolute_timeout=ABSOLUTE
        )
        _, cookie = await sessions.create(make_record(sessions.clock()))
        async with serve_provider(provider, free_port()) as url:
            for _ in range(2):
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "tests.support.refresh_race",
                    redis_url,
                    KEY_PREFIX,
                    url,
                    SECRET,
                    "10",
                    cwd=REPO,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
                processes.append(process)
                assert process.stdin is not None
                process.stdin.write(cookie.encode() + b"\n")
                await process.stdin.drain()
            for process in processes:
                assert process.stdout is not None
                assert await asyncio.wait_for(process.stdout.readline(), 20) == b"ready\n"
            for process in processes:
                assert process.stdin is not None
                process.stdin.write(b"go\n")
                await process.stdin.drain()
            outputs = [await asyncio.wait_for(process.communicate(), 30) for process in processes]

        assert [process.returncode for process in processes] == [0, 0]
        outcomes = [outcome for stdout, _ in outputs for outcome in json.loads(stdout)]
        assert outcomes == [fingerprint(access_token_for(1))] * 20
        assert (provider.calls, provider.grants, provider.reuses, provider.revoked) == (1, 1, 0, False)
        record = await stored(sessions, cookie)
        assert record is not None and (record.refresh_token, record.version) == ("rt-1", 2)
    finally:
        for process in processes:
            if process.returncode is None:
                os.kill(process.pid, signal.SIGKILL)
                await process.wait()
        await backend.close()


async def test_http_refresher_maps_provider_answers() -> None:
    # the helper processes' refresh function must report refusals and outages like the real client
    provider = RotatingProvider(current="other")
    async with serve_provider(provider, free_port()) as url, aiohttp.ClientSession() as client:
        refresh = http_refresher(client, url)
        with pytest.raises(TokenEndpointError) as refused:
            await refresh("rt-0")
        assert refused.value.error == "invalid_grant"
        provider.down = True
        with pytest.raises(ProviderUnavailable):
            await refresh("other")


async def test_a_logout_during_a_refresh_is_not_undone_by_the_refresh(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    provider = RotatingProvider(clock=clock, delay=0.5)
    session, cookie = await sessions.create(make_record(clock.now))
    refresher = Refresher(sessions, provider.refresh, refresh_before_expiry=BEFORE, clock=clock)
    refreshing = asyncio.create_task(refresher.ensure_fresh(session))
    await asyncio.sleep(0.2)  # the token request is out
    assert await sessions.end_sessions(sub=session.record.sub) == 1  # back-channel logout meanwhile
    with pytest.raises(SessionEnded):
        await refreshing
    assert await stored(sessions, cookie) is None
    assert await sessions.load(cookie) is None


async def test_a_refresh_still_at_the_provider_when_the_shutdown_deadline_passes_is_stored(
    tmp_path: Path, redis_url: str
) -> None:
    # the request waiting for it is cut at the deadline, but the provider rotates the refresh
    # token anyway: closing the provider client and the store under the refresh lost the new
    # one, and the next refresh (another replica, the restarted process) was a reuse that
    # revoked the grant and signed the user out
    config = {
        "session": {"refresh_before_expiry": "60s", "store": "redis", "redis": {"url": redis_url}},
        "server": {"shutdown_timeout": "1s"},
    }
    with start_ops_stack(tmp_path, config=config, access_token_ttl=30) as stack:
        async with stack.browser() as b:
            await login(b, stack, "/app/")  # every request refreshes (tokens live 30 s)
            cookie = b.cookies.header_for(stack.url + "/app/")
        assert cookie is not None
        grants = stack.provider.stats.refresh_grants
        stack.provider.set_fault("token_endpoint_slow", delay=2.5)
        refreshing = asyncio.create_task(_get(stack.url + "/app/", cookie))
        await asyncio.sleep(0.5)  # the token request is out
        stack.proxy.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(stack.proxy.process.wait, 30) == 0, stack.proxy.logs()
        await asyncio.gather(refreshing, return_exceptions=True)
        for _ in range(100):  # the provider rotates the refresh token whether or not anyone waits
            if stack.provider.stats.refresh_grants > grants:
                break
            await asyncio.sleep(0.05)
        assert stack.provider.stats.refresh_grants == grants + 1
        stack.provider.set_fault(None)
        config = yaml.safe_load(stack.proxy.config_path.read_text())
        restarted = start_proxy(config, tmp_path / "restarted")
        try:
            assert await _get(restarted.url + "/app/", cookie) == 200, restarted.logs()
        finally:
            restarted.kill()
    assert stack.provider.stats.refresh_reuses == 0


async def _get(url: str, cookie: str) -> int:
    async with (
        aiohttp.ClientSession() as client,
        client.get(url, headers={"Cookie": cookie, "Accept": "application/json"}, allow_redirects=False) as answer,
    ):
        return answer.status
