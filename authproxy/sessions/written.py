"""The session records this process wrote last, to read them back without opening them (pure).

A refresh reads its session's record under the session's lock before spending the refresh
token, and so does a waiter that polls for another worker's result. Most of the time what it
reads is exactly what this process wrote at the previous refresh (or at sign-in). The sealed
bytes identify a write: every write is sealed under a fresh random AES-GCM nonce, so the same
bytes mean the same write, and the record that write sealed is handed back instead of
decrypting and parsing it again (tens of microseconds on a refresh's critical path). Other bytes
are opened as usual.

Entries are keyed by store key and remember the ticket's record key, so a record only ever goes
to the ticket whose key sealed it, and the sealed bytes themselves: comparing a few kilobytes
costs a tenth of a microsecond, where a digest of them (BLAKE2b) took ~7 µs, twice per refresh.
The bytes are ciphertext the store holds anyway; an entry's record is larger. Records handed out
are the remembered objects themselves: callers treat them as read-only, as they do the session
cache's. Bounded, least recently written first out.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from typing import Final, NamedTuple

from authproxy.sessions.record import SessionRecord

DEFAULT_MAX_ENTRIES: Final = 1024


class _Write(NamedTuple):
    ticket_key: bytes
    sealed: bytes
    record: SessionRecord


class RecentWrites:
    """The last record written under each store key, with its sealed bytes."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries <= 0:
            raise ValueError("RecentWrites needs a positive max_entries")
        self.max_entries = max_entries
        self._writes: OrderedDict[str, _Write] = OrderedDict()

    def __len__(self) -> int:
        return len(self._writes)

    def remember(self, key: str, ticket_key: bytes, sealed: bytes, record: SessionRecord) -> None:
        """``record`` was just stored under ``key`` as ``sealed`` (sealed for ``ticket_key``)."""
        writes = self._writes
        writes[key] = _Write(ticket_key, sealed, record)
        writes.move_to_end(key)
        while len(writes) > self.max_entries:
            writes.popitem(last=False)

    def recall(self, key: str, ticket_key: bytes, sealed: bytes) -> SessionRecord | None:
        """The record this process sealed into ``sealed`` for ``ticket_key``, or None if it did not."""
        write = self._writes.get(key)
        if write is None or not hmac.compare_digest(write.ticket_key, ticket_key):
            return None
        if write.sealed != sealed:
            return None
        return write.record

    def forget(self, key: str) -> None:
        self._writes.pop(key, None)
