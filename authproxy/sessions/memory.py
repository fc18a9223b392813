"""The one-process session store (SPEC section 5: ``session.store: memory``).

A dict of entries with expiry times on an injectable monotonic clock. Expired entries are
dropped when read, and a min-heap of expiry times lets every operation sweep a bounded batch of
expired ones, so entries nobody reads again do not pile up. Each method runs to completion
without awaiting, so on one event loop every operation (``take`` included) is atomic.

It is not shared between processes: ``--workers`` > 1 is refused with this store (config.py).
"""

from __future__ import annotations

import builtins
import heapq
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from authproxy.errors import StoreError, StoreUnavailable
from authproxy.sessions.store import Lock, check_ttl

# expired entries removed per operation at most: keeps every call O(batch log n)
SWEEP_BATCH: Final = 64
# the heap holds one item per write; stale items (overwritten, deleted) are dropped when it grows
# past this many plus twice the live entries, keeping memory proportional to what is stored
HEAP_SLACK: Final = 1024
LOCK_TOKEN_BYTES: Final = 16
# a hard bound on what anonymous traffic (login flows, rate-limit counters) can make this process
# hold; past it new keys are refused (503, fail closed) rather than evicting live sessions
MAX_ENTRIES: Final = 200_000


@dataclass(slots=True)
class _Entry:
    value: bytes | set[str]
    expires_at: float


def _wrong_type(key_kind: str) -> StoreError:
    # the same misuse Redis reports as WRONGTYPE: a programming error, never a user's
    return StoreError(f"the key holds {key_kind}, not what this operation expects")


class MemoryStore:
    """:class:`~authproxy.sessions.store.SessionStore` in this process's memory."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_entries: int = MAX_ENTRIES) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        self._expiries: list[tuple[float, str]] = []

    def __len__(self) -> int:
        """Entries held right now, expired ones not yet swept included."""
        return len(self._entries)

    # ------------------------------------------------------------------ internals

    def _now(self) -> float:
        now = self._clock()
        self._sweep(now)
        return now

    def _sweep(self, now: float) -> None:
        heap = self._expiries
        for _ in range(SWEEP_BATCH):
            if not heap or heap[0][0] > now:
                return
            _, key = heapq.heappop(heap)
            entry = self._entries.get(key)
            # a later write may have given the key a new expiry: only drop it if it is due
            if entry is not None and entry.expires_at <= now:
                del self._entries[key]

    def _put(self, key: str, value: bytes | set[str], expires_at: float) -> _Entry:
        if key not in self._entries and len(self._entries) >= self._max_entries:
            now = self._clock()
            for k in [k for k, e in self._entries.items() if e.expires_at <= now]:
                del self._entries[k]
            if len(self._entries) >= self._max_entries:
                raise StoreUnavailable(f"the memory store is full ({self._max_entries} entries)")
        entry = _Entry(value, expires_at)
        self._entries[key] = entry
        self._schedule(key, expires_at)
        return entry

    def _schedule(self, key: str, expires_at: float) -> None:
        heapq.heappush(self._expiries, (expires_at, key))
        if len(self._expiries) > 2 * len(self._entries) + HEAP_SLACK:
            self._expiries = [(entry.expires_at, k) for k, entry in self._entries.items()]
            heapq.heapify(self._expiries)

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at <= now:
            del self._entries[key]
            return None
        return entry

    def _bytes(self, key: str, now: float) -> bytes | None:
        entry = self._live(key, now)
        if entry is None:
            return None
        if not isinstance(entry.value, bytes):
            raise _wrong_type("an index")
        return entry.value

    def _index(self, key: str, now: float) -> tuple[_Entry, set[str]] | None:
        entry = self._live(key, now)
        if entry is None:
            return None
        if not isinstance(entry.value, set):
            raise _wrong_type("a value")
        return entry, entry.value

    # ------------------------------------------------------------------ SessionStore

    async def get(self, key: str) -> bytes | None:
        return self._bytes(key, self._now())

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._put(key, bytes(value), self._now() + check_ttl(ttl))

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        check_ttl(ttl)
        now = self._now()
        if self._live(key, now) is not None:
            return False
        self._put(key, bytes(value), now + ttl)
        return True

    async def set_if_present(
        self,
        key: str,
        value: bytes,
        ttl: float,
        *,
        publish: tuple[str, str] | None = None,
        release: Lock | None = None,
    ) -> bool:
        # ``publish``: one process has nobody to tell (its cache is invalidated by the caller)
        check_ttl(ttl)
        now = self._now()
        stored = self._bytes(key, now) is not None
        if stored:
            self._put(key, bytes(value), now + ttl)
        if release is not None:
            await release.release()
        return stored

    async def take(self, key: str) -> bytes | None:
        value = self._bytes(key, self._now())
        if value is not None:
            del self._entries[key]
        return value

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._entries.pop(key, None)

    async def increment(self, key: str, window: float) -> int:
        check_ttl(window)
        now = self._now()
        current = self._bytes(key, now)
        if current is None:
            self._put(key, b"1", now + window)
            return 1
        try:
            count = int(current) + 1
        except ValueError as e:
            raise _wrong_type("a non-counter value") from e
        # the window is fixed at the first increment: the expiry stays as it is
        self._entries[key].value = str(count).encode()
        return count

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
        await self.set(key, value, ttl)
        for index in indexes:
            await self.index_add(index, key, index_ttl)
        await self.delete(*forget)

    async def increment_all(self, counters: Sequence[tuple[str, float]]) -> list[int]:
        return [await self.increment(key, window) for key, window in counters]

    async def increment_all_and_set(
        self, counters: Sequence[tuple[str, float]], key: str, value: bytes, ttl: float
    ) -> list[int]:
        counts = await self.increment_all(counters)
        await self.set(key, value, ttl)
        return counts

    async def increment_and_take(self, counter: tuple[str, float], key: str) -> tuple[int, bytes | None]:
        count = await self.increment(*counter)
        return count, await self.take(key)

    async def index_add(self, index: str, member: str, ttl: float) -> None:
        check_ttl(ttl)
        now = self._now()
        found = self._index(index, now)
        if found is None:
            self._put(index, {member}, now + ttl)
            return
        entry, members = found
        members.add(member)
        if now + ttl > entry.expires_at:
            entry.expires_at = now + ttl
            self._schedule(index, entry.expires_at)

    async def index_members(self, index: str) -> builtins.set[str]:
        found = self._index(index, self._now())
        return set() if found is None else set(found[1])

    async def index_remove(self, index: str, *members: str) -> None:
        found = self._index(index, self._now())
        if found is None:
            return
        found[1].difference_update(members)
        if not found[1]:
            del self._entries[index]

    async def acquire_lock(self, name: str, lease: float, *, read: str | None = None) -> Lock | None:
        check_ttl(lease)
        now = self._now()
        if self._live(name, now) is not None:
            return None
        token = secrets.token_bytes(LOCK_TOKEN_BYTES)
        self._put(name, token, now + lease)
        return _MemoryLock(self, name, token, self._bytes(read, now) if read is not None else None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()
        self._expiries.clear()

    # ------------------------------------------------------------------ for _MemoryLock

    def _extend_lock(self, name: str, token: bytes, lease: float) -> bool:
        now = self._now()
        entry = self._live(name, now)
        if entry is None or entry.value != token:
            return False
        entry.expires_at = now + lease
        self._schedule(name, entry.expires_at)
        return True

    def _release_lock(self, name: str, token: bytes) -> None:
        entry = self._live(name, self._now())
        if entry is not None and entry.value == token:
            del self._entries[name]


class _MemoryLock:
    """A lock of :class:`MemoryStore`: its name and the random token that proves ownership."""

    def __init__(self, store: MemoryStore, name: str, token: bytes, value: bytes | None) -> None:
        self._store = store
        self._name = name
        self._token = token
        self.value = value
        self._released = False

    async def extend(self, lease: float) -> bool:
        return self._store._extend_lock(self._name, self._token, check_ttl(lease))

    async def release(self) -> None:
        if not self._released:
            self._released = True
            self._store._release_lock(self._name, self._token)
