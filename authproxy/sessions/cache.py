"""An in-process cache of decoded session records, for the authenticated hot path (pure).

Reading a session from Redis costs a round trip, an AES-GCM open and a JSON parse on every
request. With ``session.cache.enabled`` each process keeps the records it decoded recently and
serves repeat requests of a session from memory. What makes that safe:

- **Invalidation at once, everywhere.** Every write or delete of a session record (refresh,
  last-use, logout, back-channel logout, refused refresh) is followed by an invalidation of its
  store key, locally and on every replica (:mod:`authproxy.sessions.invalidation`), before the
  request that caused it is answered.
- **No stale insert.** An entry read from the store is kept only if no invalidation of any key
  arrived while it was being read (``generation``): a logout that lands between a replica's GET
  and its insert would otherwise be forgotten by that replica.
- **Fail closed.** While the invalidation feed is not known to be live (not yet subscribed,
  disconnected, no answer to its pings) the cache is emptied and not used: every request reads
  the store, so a store outage is a 503 and a missed invalidation cannot keep a session alive.
- **Bounded.** Entries live at most ``max_age`` seconds (a backstop for anything unforeseen) and
  at most ``max_entries`` are kept, least recently used first out.

Entries are keyed by the store key and remember the ticket's record key, so a cookie can only
ever get the record its own (authenticated) ticket would open from the store. Records handed out
are the cached objects themselves: callers treat them as read-only and replace, never mutate,
``Session.record``.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from authproxy.sessions.record import SessionRecord

DEFAULT_MAX_ENTRIES: Final = 100_000


@dataclass(frozen=True, slots=True)
class _Entry:
    ticket_key: bytes
    record: SessionRecord
    loaded_at: float


class SessionCache:
    """Decoded records by store key; ``now`` is always passed in."""

    def __init__(self, *, max_age: float, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_age <= 0 or max_entries <= 0:
            raise ValueError("a session cache needs a positive max_age and max_entries")
        self.max_age = max_age
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._live = False
        # bumped by every invalidation: an insert that started before one is refused
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def live(self) -> bool:
        """Whether the cache may be used: the invalidation feed is known to be delivering."""
        return self._live

    def set_live(self, live: bool) -> None:
        """Switch use on or off; either way everything cached so far is dropped.

        Turning off: invalidations may be missed from now on. Turning on: some may have been
        missed while it was off, so nothing cached before may be trusted.
        """
        self._live = live
        self.clear()

    def get(self, key: str, ticket_key: bytes, now: float) -> SessionRecord | None:
        """The cached record of ``key`` for this ticket, or None (not cached, too old, or not live)."""
        if not self._live:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now - entry.loaded_at >= self.max_age or not hmac.compare_digest(entry.ticket_key, ticket_key):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.record

    def put(self, key: str, ticket_key: bytes, record: SessionRecord, *, generation: int, now: float) -> bool:
        """Keep ``record`` if nothing was invalidated since ``generation`` was read; True if kept."""
        if not self._live or generation != self.generation:
            return False
        self._entries[key] = _Entry(ticket_key, record, now)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        # expired entries at the least recently used end go too, so what a burst of sign-ins
        # put in (every new session is) leaves after max_age, not only under max_entries' pressure
        entries = self._entries
        while entries and now - next(iter(entries.values())).loaded_at >= self.max_age:
            entries.popitem(last=False)
        return True

    def invalidate(self, key: str) -> None:
        """Forget ``key`` (written or deleted somewhere) and refuse inserts read before now."""
        self.generation += 1
        self._entries.pop(key, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
