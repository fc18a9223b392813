"""Sessions over both stores (SPEC section 5): cookies, expiry, rotation, nothing usable at rest."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from aiohttp import web

from authproxy.config import CookieConfig
from authproxy.sessions.manager import LOCK_PREFIX, SESSION_KEY_PREFIX, TOUCH_INTERVAL, SessionManager
from authproxy.sessions.memory import MemoryStore
from authproxy.sessions.record import SessionRecord, seal_record
from authproxy.sessions.redis import RedisStore
from authproxy.sessions.store import Lock, SessionStore
from authproxy.sessions.ticket import Ticket, new_ticket, open_ticket, store_key_for

OLD_SECRET = "o" * 40
NEW_SECRET = "n" * 40
IDLE = 3600.0
ABSOLUTE = 86400.0
ACCESS_TOKEN = "access-token-value-that-must-never-be-stored-in-plaintext"
REFRESH_TOKEN = "refresh-token-value-that-must-never-be-stored-in-plaintext"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        backend: SessionStore = MemoryStore()
    else:
        url = request.getfixturevalue("redis_url")
        backend = RedisStore(url, key_prefix="test:")
    yield backend
    await backend.close()


def manager(store: SessionStore, clock: Clock, secrets: list[str] | None = None) -> SessionManager:
    return SessionManager(
        store,
        secrets=secrets or [NEW_SECRET],
        cookie=CookieConfig(),
        idle_timeout=IDLE,
        absolute_timeout=ABSOLUTE,
        clock=clock,
    )


def record(clock: Clock, **extra: Any) -> SessionRecord:
    return SessionRecord(
        sub="alice",
        claims={"sub": "alice", "email": "alice@example.com"},
        sid="provider-sid-1",
        access_token=ACCESS_TOKEN,
        refresh_token=REFRESH_TOKEN,
        id_token="id.token.value",
        access_expires_at=clock.now + 300,
        created_at=clock.now,
        last_seen_at=clock.now,
        absolute_expires_at=clock.now + ABSOLUTE,
        **extra,
    )


async def test_created_session_loads_from_its_cookie(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    _, cookie = await sessions.create(record(clock))
    loaded = await sessions.load(cookie)
    assert loaded is not None and loaded.record.access_token == ACCESS_TOKEN


def flip(value: str, index: int) -> str:
    replacement = "A" if value[index] != "A" else "B"
    return value[:index] + replacement + value[index + 1 :]


async def test_tampered_or_unknown_cookie_is_no_session(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    _, cookie = await sessions.create(record(clock))
    for bad in (
        flip(cookie, 5),
        flip(cookie, len(cookie) // 2),
        flip(cookie, -2),
        cookie[:-1],
        "",
        "v1.",
        "garbage",
        cookie + "x",
    ):
        assert await sessions.load(bad) is None, bad
    other = manager(MemoryStore(), clock)
    _, foreign = await other.create(record(clock))
    assert await sessions.load(foreign) is None  # signed by us, but no such session here


async def test_a_store_writer_cannot_sign_in_as_anyone_with_a_cookie_of_their_own(store: SessionStore) -> None:
    # whoever can write to the store can delete sessions (docs/security.md), but must not be able
    # to make one: a login flow's cookie is handed to anyone at /oauth2/start, without a login
    clock = Clock()
    sessions = manager(store, clock)
    cookie = sessions.seal(new_ticket())
    encoded = cookie.removeprefix("v1.")
    shown = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    forged = record(clock)
    forged.sub, forged.claims = "root", {"sub": "root", "groups": ["admins"]}
    # the id and record key, wherever the cookie would show them
    for at in range(len(shown) - 63):
        guessed = Ticket(shown[at : at + 32], shown[at + 32 : at + 64])
        await store.set(SESSION_KEY_PREFIX + store_key_for(guessed.id), seal_record(forged.to_bytes(), guessed), IDLE)
    assert await sessions.load(cookie) is None


async def test_every_login_gets_a_new_cookie(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    _, first = await sessions.create(record(clock))
    _, second = await sessions.create(record(clock))
    assert first != second
    assert open_ticket(first, [NEW_SECRET.encode()]) != open_ticket(second, [NEW_SECRET.encode()])


async def test_idle_timeout_slides_and_ends_unused_sessions(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    _, cookie = await sessions.create(record(clock))
    for _ in range(5):  # used every 50 minutes: stays alive well past one idle timeout
        clock.now += IDLE - 600
        assert await sessions.load(cookie) is not None
    clock.now += IDLE + 1
    assert await sessions.load(cookie) is None


@pytest.mark.parametrize("idle", [30.0, 90.0])
async def test_a_short_idle_timeout_slides_with_every_use_too(store: SessionStore, idle: float) -> None:
    # used every two thirds of idle_timeout: alive long past it (the last use was never older)
    clock = Clock()
    sessions = SessionManager(
        store, secrets=[NEW_SECRET], cookie=CookieConfig(), idle_timeout=idle, absolute_timeout=ABSOLUTE, clock=clock
    )
    _, cookie = await sessions.create(record(clock))
    for _ in range(6):
        clock.now += idle * 2 / 3
        assert await sessions.load(cookie) is not None
    clock.now += idle + 1
    assert await sessions.load(cookie) is None


async def test_sliding_the_idle_expiry_leaves_the_session_lock_free(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    session, cookie = await sessions.create(record(clock))
    clock.now += TOUCH_INTERVAL + 1  # the next load writes the last use back, under the lock
    loaded = await sessions.load(cookie)
    assert loaded is not None and loaded.record.last_seen_at == clock.now
    # the write released the lock: a refresh (or the next touch) can take it at once
    assert await store.acquire_lock(LOCK_PREFIX + session.store_key, 5.0) is not None


async def test_the_last_use_write_never_brings_back_a_session_ended_meanwhile(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    session, cookie = await sessions.create(record(clock))
    clock.now += TOUCH_INTERVAL + 1  # the next load writes the last use back
    take_lock = store.acquire_lock

    async def lock_then_logout_elsewhere(name: str, lease: float, *, read: str | None = None) -> Lock | None:
        # the last-use write has read the record; a back-channel logout on another replica ends
        # the session before the write lands
        lock = await take_lock(name, lease, read=read)
        assert await manager(store, clock).end_sessions(sub="alice") == 1
        return lock

    store.acquire_lock = lock_then_logout_elsewhere  # type: ignore[method-assign]
    await sessions.load(cookie)
    store.acquire_lock = take_lock  # type: ignore[method-assign]

    assert await store.get(session.store_key) is None
    assert await sessions.load(cookie) is None


async def test_absolute_timeout_is_hard(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    _, cookie = await sessions.create(record(clock))
    while clock.now + IDLE / 2 < record(Clock()).absolute_expires_at:
        clock.now += IDLE / 2
        assert await sessions.load(cookie) is not None
    clock.now += IDLE / 2
    assert await sessions.load(cookie) is None


async def test_a_session_past_its_deadline_is_deleted_not_written_back(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    session, cookie = await sessions.create(record(clock))
    clock.now += ABSOLUTE + 1  # a write that comes after the absolute expiry (a slow refresh, say)
    assert await sessions.save(session) is False
    assert await store.get(session.store_key) is None
    clock.now = Clock().now  # even read at a time the record was still valid
    assert await sessions.load(cookie) is None


async def test_secret_rotation_keeps_old_sessions_readable(store: SessionStore) -> None:
    clock = Clock()
    _, cookie = await manager(store, clock, [OLD_SECRET]).create(record(clock))
    assert await manager(store, clock, [NEW_SECRET, OLD_SECRET]).load(cookie) is not None
    assert await manager(store, clock, [NEW_SECRET]).load(cookie) is None


async def test_end_sessions_by_sid_and_by_sub(store: SessionStore) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    _, first = await sessions.create(record(clock))
    _, second = await sessions.create(
        record(
            clock,
        )
    )
    assert await sessions.end_sessions(sid="provider-sid-1") == 2
    assert await sessions.load(first) is None and await sessions.load(second) is None
    _, third = await sessions.create(record(clock))
    assert await sessions.end_sessions(sub="alice") == 1
    assert await sessions.load(third) is None


async def test_redis_holds_no_plaintext_token_and_no_session_id(redis_url: str) -> None:
    clock = Clock()
    store = RedisStore(redis_url, key_prefix="authproxy:")
    sessions = manager(store, clock)
    _, cookie = await sessions.create(record(clock))
    ticket = open_ticket(cookie, [NEW_SECRET.encode()])
    assert ticket is not None
    id_forms = {
        ticket.id.hex(),
        base64.urlsafe_b64encode(ticket.id).rstrip(b"=").decode(),
        base64.b64encode(ticket.id).decode().rstrip("="),
    }
    raw = redis.asyncio.Redis.from_url(redis_url)
    try:
        keys = [k.decode() for k in await raw.keys("*")]
        assert keys
        for key in keys:
            assert not any(form in key for form in id_forms), key
            assert "alice" not in key and "provider-sid-1" not in key
            if await raw.type(key) == b"string":
                value = await raw.get(key)
                assert ACCESS_TOKEN.encode() not in value and REFRESH_TOKEN.encode() not in value
                assert b"alice@example.com" not in value
    finally:
        await raw.aclose()
        await store.close()


def test_a_response_sets_each_cookie_once_the_last_way_it_was_set() -> None:
    sessions = manager(MemoryStore(), Clock())
    response = web.Response()
    sessions.set_cookie(response, "authproxy_session_flow", "first", 600)
    sessions.set_cookie(response, "authproxy_session", "session", 3600)
    sessions.clear_cookie(response, "authproxy_session_flow")
    fields = response.headers.getall("Set-Cookie")
    assert [field.split(";")[0] for field in fields] == ["authproxy_session=session", 'authproxy_session_flow=""']
    assert "Max-Age=0" in fields[1] and "expires=Thu, 01 Jan 1970 00:00:00 GMT" in fields[1]
