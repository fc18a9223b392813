"""Session records for tests that need one and do not care whose: alice's, signed in at ``NOW``."""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from authproxy.sessions.record import SessionRecord

NOW: Final = 1_800_000_000.0


def alice_record(**changes: object) -> SessionRecord:
    """Alice's record (an access token valid for an hour, a day to live), with ``changes``."""
    base = SessionRecord(
        sub="alice",
        claims={"sub": "alice"},
        access_token="at-1",
        access_expires_at=NOW + 3600,
        created_at=NOW,
        last_seen_at=NOW,
        absolute_expires_at=NOW + 86400,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def alice_signed_in_now(now: float) -> SessionRecord:
    """Alice's record as signed in at ``now`` (a real clock's time): alive for a day."""
    return alice_record(access_expires_at=now + 3600, created_at=now, last_seen_at=now, absolute_expires_at=now + 86400)
