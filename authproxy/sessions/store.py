"""The session store seam (SPEC section 5): opaque string keys, bytes values, TTLs on everything.

One small interface serves every piece of shared state the proxy keeps: encrypted session
records, single-use login flow state, the back-channel logout ``jti`` replay cache (OpenID
Back-Channel Logout 1.0 section 2.6), refresh locks, rate-limit counters and the sub/sid
indexes. It knows nothing about what it stores: encryption lives above it (``record.py``), so no
backend ever needs ``cryptography`` and a copy of the store holds only ciphertext.

Every method raises :class:`authproxy.errors.StoreUnavailable` when the backend cannot be
reached or times out, and :class:`authproxy.errors.StoreError` for any other backend failure
(for example a key used as a value and as an index).

``hold_lock`` keeps a lock alive while a block runs: a fixed short lease is a known cause of
double refreshes (the lease ends mid-refresh, a second worker takes the lock and reuses the
rotated refresh token), so the lease is extended every third of itself until the block ends.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import Final, Protocol

from authproxy.errors import StoreError

log = logging.getLogger(__name__)

# how often hold_lock polls a busy lock when asked to wait for it
LOCK_POLL_INTERVAL: Final = 0.05


# the longest TTL a store takes, a century: far beyond any session, and far below what Redis can
# expire (2**63 ms) or a float can count in milliseconds
MAX_TTL_DAYS: Final = 36500
MAX_TTL: Final = MAX_TTL_DAYS * 86400.0


def check_ttl(ttl: float) -> float:
    """``ttl`` itself when it is a usable lifetime in seconds; ValueError otherwise.

    A zero, negative, infinite or longer than ``MAX_TTL`` TTL is a bug in the caller: it would
    either store nothing or store something (as good as) forever, which some stores refuse
    outright, and the store promises that nothing outlives its TTL.
    """
    if not math.isfinite(ttl) or ttl <= 0 or ttl > MAX_TTL:
        raise ValueError(f"a store TTL must be a positive number of seconds up to {MAX_TTL:g}, not {ttl!r}")
    return ttl


class Lock(Protocol):
    """A lock taken with :meth:`SessionStore.acquire_lock`: a random token with a lease.

    ``value`` is what the key named by ``acquire_lock``'s ``read`` held right after the lock was
    taken (None without ``read``, or when the key was absent).
    """

    value: bytes | None

    async def extend(self, lease: float) -> bool:
        """Make the lease end ``lease`` seconds from now; False if the lock was lost meanwhile."""
        ...

    async def release(self) -> None:
        """Release the lock if it is still ours (a lock that expired and was retaken is left alone).

        Releasing a lock a second time (or after ``set_if_present(release=...)``) does nothing.
        """
        ...


class SessionStore(Protocol):
    """Keys are strings, values bytes, every TTL in seconds and > 0."""

    async def get(self, key: str) -> bytes | None:
        """The value under ``key``, or None when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, replacing any value and TTL."""
        ...

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
        """``set`` plus ``index_add(index, key, index_ttl)`` for each of ``indexes`` (a new session
        and its sub/sid indexes) and ``delete(*forget)``, in one round trip where the backend can."""
        ...

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` only if ``key`` holds nothing; True if it was stored (replay caches)."""
        ...

    async def set_if_present(
        self,
        key: str,
        value: bytes,
        ttl: float,
        *,
        publish: tuple[str, str] | None = None,
        release: Lock | None = None,
    ) -> bool:
        """Overwrite ``key`` only if it still exists; False when it is gone (a session ended meanwhile).

        Then, in this order and whatever the write's outcome: publish ``publish`` (channel,
        message) to other processes, and release ``release``. A backend that can sends all of it
        in one round trip; the write always takes effect before the lock is free.
        """
        ...

    async def take(self, key: str) -> bytes | None:
        """Atomically read and delete ``key``: of concurrent takers, exactly one gets the value."""
        ...

    async def delete(self, *keys: str) -> None:
        """Delete the keys; absent ones are ignored."""
        ...

    async def increment(self, key: str, window: float) -> int:
        """Add one to the counter under ``key`` and return the new count.

        The window is fixed: it starts at the first increment (count 1) and the counter vanishes
        ``window`` seconds later, however often it is incremented meanwhile.
        """
        ...

    async def increment_all(self, counters: Sequence[tuple[str, float]]) -> list[int]:
        """``increment(key, window)`` for each of ``counters``, in one round trip where the backend can."""
        ...

    async def increment_all_and_set(
        self, counters: Sequence[tuple[str, float]], key: str, value: bytes, ttl: float
    ) -> list[int]:
        """``increment_all(counters)``, then ``set(key, value, ttl)``, in one round trip where the backend can."""
        ...

    async def increment_and_take(self, counter: tuple[str, float], key: str) -> tuple[int, bytes | None]:
        """``increment(*counter)``, then ``take(key)``, in one round trip where the backend can."""
        ...

    async def index_add(self, index: str, member: str, ttl: float) -> None:
        """Add ``member`` to the set ``index``; the set lives at least ``ttl`` more seconds.

        An index's expiry is only ever lengthened, never shortened, so adding a short-lived
        member cannot cut off the long-lived ones already in it.
        """
        ...

    async def index_members(self, index: str) -> builtins.set[str]:
        """The members of ``index`` (empty when it is absent or expired)."""
        ...

    async def index_remove(self, index: str, *members: str) -> None:
        """Remove members from ``index``; an index left empty disappears."""
        ...

    async def acquire_lock(self, name: str, lease: float, *, read: str | None = None) -> Lock | None:
        """Take the lock ``name`` for ``lease`` seconds, or None if someone else holds it.

        With ``read``, the lock's ``value`` is that key's value as it stood after the lock was
        taken (what the previous holder wrote before releasing is seen); one round trip where the
        backend can.
        """
        ...

    async def ping(self) -> None:
        """Return when the backend answers; raise StoreUnavailable otherwise (readiness)."""
        ...

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


async def _keep_lease(lock: Lock, lease: float) -> None:
    """Extend ``lock`` now and every ``lease / 3`` after, until cancelled or the lock turns out lost."""
    while True:
        try:
            if not await lock.extend(lease):
                # someone else holds it now: extending further could only steal it back
                log.warning("a held store lock was lost before its block ended")
                return
        except StoreError as e:
            # the lease may still be running; try again on the next tick rather than give up
            log.warning("could not extend a held store lock: %s", type(e).__name__)
        await asyncio.sleep(lease / 3)


@contextlib.asynccontextmanager
async def hold_lock(
    store: SessionStore, name: str, lease: float, *, wait: float = 0.0, read: str | None = None
) -> AsyncIterator[Lock | None]:
    """Hold the lock ``name`` for the duration of an ``async with`` block.

    Yields the lock (with ``value`` read from ``read`` once it was taken), or None when it is held
    by someone else for longer than ``wait`` seconds (the caller decides what to do then, e.g.
    reload state written by the holder). From ``lease / 3`` into the block on, the lease is
    extended every ``lease / 3`` seconds; afterwards the extender is stopped and the lock
    released (unless the block already released it), also when the block raises or is cancelled.
    """
    check_ttl(lease)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    lock = await store.acquire_lock(name, lease, read=read)
    while lock is None and loop.time() < deadline:
        await asyncio.sleep(min(LOCK_POLL_INTERVAL, max(0.0, deadline - loop.time())))
        lock = await store.acquire_lock(name, lease, read=read)
    if lock is None:
        yield None
        return
    # most blocks end well within a third of the lease: start the extender only for those that
    # do not, rather than a task per block
    keepers: list[asyncio.Task[None]] = []
    held = lock
    timer = loop.call_later(lease / 3, lambda: keepers.append(asyncio.create_task(_keep_lease(held, lease))))
    try:
        yield lock
    finally:
        timer.cancel()
        try:
            for keeper in keepers:
                keeper.cancel()
            if keepers:
                # asyncio.wait never raises the keeper's CancelledError, so a cancellation of
                # *this* task is not swallowed here by mistake
                await asyncio.wait(keepers)
        finally:
            for keeper in keepers:
                if keeper.done() and not keeper.cancelled() and keeper.exception() is not None:
                    log.warning("the lock lease keeper failed: %s", type(keeper.exception()).__name__)
            try:
                await lock.release()
            except StoreError as e:
                # the lease ends by itself; failing the block over it would hide its own outcome
                log.warning("could not release a held store lock: %s", type(e).__name__)
