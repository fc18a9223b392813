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
from collections.abc import AsyncIterator
from typing import Final, Protocol

from authproxy.errors import StoreError

log = logging.getLogger(__name__)

# how often hold_lock polls a busy lock when asked to wait for it
LOCK_POLL_INTERVAL: Final = 0.05


def check_ttl(ttl: float) -> float:
    """``ttl`` itself when it is a usable lifetime in seconds; ValueError otherwise.

    A zero, negative or infinite TTL is a bug in the caller: it would either store nothing or
    store something forever, and the store promises that nothing outlives its TTL.
    """
    if not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"a store TTL must be a positive number of seconds, not {ttl!r}")
    return ttl


class Lock(Protocol):
    """A lock taken with :meth:`SessionStore.acquire_lock`: a random token with a lease."""

    async def extend(self, lease: float) -> bool:
        """Make the lease end ``lease`` seconds from now; False if the lock was lost meanwhile."""
        ...

    async def release(self) -> None:
        """Release the lock if it is still ours (a lock that expired and was retaken is left alone)."""
        ...


class SessionStore(Protocol):
    """Keys are strings, values bytes, every TTL in seconds and > 0."""

    async def get(self, key: str) -> bytes | None:
        """The value under ``key``, or None when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, replacing any value and TTL."""
        ...

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` only if ``key`` holds nothing; True if it was stored (replay caches)."""
        ...

    async def set_if_present(self, key: str, value: bytes, ttl: float) -> bool:
        """Overwrite ``key`` only if it still exists; False when it is gone (a session ended meanwhile)."""
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

    async def acquire_lock(self, name: str, lease: float) -> Lock | None:
        """Take the lock ``name`` for ``lease`` seconds, or None if someone else holds it."""
        ...

    async def ping(self) -> None:
        """Return when the backend answers; raise StoreUnavailable otherwise (readiness)."""
        ...

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


async def _keep_lease(lock: Lock, lease: float) -> None:
    """Extend ``lock`` every ``lease / 3`` until cancelled or until the lock turns out lost."""
    interval = lease / 3
    while True:
        await asyncio.sleep(interval)
        try:
            if not await lock.extend(lease):
                # someone else holds it now: extending further could only steal it back
                log.warning("a held store lock was lost before its block ended")
                return
        except StoreError as e:
            # the lease may still be running; try again on the next tick rather than give up
            log.warning("could not extend a held store lock: %s", type(e).__name__)


@contextlib.asynccontextmanager
async def hold_lock(store: SessionStore, name: str, lease: float, *, wait: float = 0.0) -> AsyncIterator[Lock | None]:
    """Hold the lock ``name`` for the duration of an ``async with`` block.

    Yields the lock, or None when it is held by someone else for longer than ``wait`` seconds
    (the caller decides what to do then, e.g. reload state written by the holder). While the
    block runs the lease is extended every ``lease / 3`` seconds; afterwards the extender is
    cancelled and the lock released, also when the block raises or is cancelled.
    """
    check_ttl(lease)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    lock = await store.acquire_lock(name, lease)
    while lock is None and loop.time() < deadline:
        await asyncio.sleep(min(LOCK_POLL_INTERVAL, max(0.0, deadline - loop.time())))
        lock = await store.acquire_lock(name, lease)
    if lock is None:
        yield None
        return
    keeper = asyncio.create_task(_keep_lease(lock, lease))
    try:
        yield lock
    finally:
        keeper.cancel()
        try:
            # asyncio.wait never raises the keeper's CancelledError, so a cancellation of
            # *this* task is not swallowed here by mistake
            await asyncio.wait([keeper])
        finally:
            if keeper.done() and not keeper.cancelled() and keeper.exception() is not None:
                log.warning("the lock lease keeper failed: %s", type(keeper.exception()).__name__)
            try:
                await lock.release()
            except StoreError as e:
                # the lease ends by itself; failing the block over it would hide its own outcome
                log.warning("could not release a held store lock: %s", type(e).__name__)
