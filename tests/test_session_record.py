"""SPEC section 5: stored records are encrypted, authenticated and bound to their session.

A copy of the store reveals no token; a record moved under another session's id does not
open; records end ``idle_timeout`` after their last use and never outlive their absolute expiry.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authproxy.sessions.record import (
    SessionRecord,
    expires_at,
    idle_ttl,
    is_expired,
    open_record,
    seal_record,
)
from authproxy.sessions.ticket import Ticket, new_ticket

TICKET = Ticket(b"i" * 32, b"k" * 32)
ACCESS_TOKEN = "eyJhbGciOiJSUzI1NiJ9.access-token-that-must-not-leak.c2ln"
REFRESH_TOKEN = "refresh-token-that-must-not-leak"
ID_TOKEN = "eyJhbGciOiJSUzI1NiJ9.id-token-that-must-not-leak.c2ln"


def make_record(**changes: Any) -> SessionRecord:
    record = SessionRecord(
        sub="user-1",
        claims={
            "sub": "user-1",
            "email": "alice@example.com",
            "preferred_username": "alice",
            "name": "Alice Ä",
            "groups": ["admins", "eng"],
            "department": {"nested": [1, 2.5, None, True]},
        },
        sid="provider-session",
        id_token=ID_TOKEN,
        access_token=ACCESS_TOKEN,
        refresh_token=REFRESH_TOKEN,
        access_expires_at=1_700_000_300.0,
        created_at=1_700_000_000.0,
        last_seen_at=1_700_000_100.0,
        absolute_expires_at=1_700_604_800.0,
        version=3,
    )
    return replace(record, **changes)


# ---------------------------------------------------------------------------- encryption


def test_record_round_trips() -> None:
    plaintext = make_record().to_bytes()
    assert open_record(seal_record(plaintext, TICKET), TICKET) == plaintext


def test_empty_plaintext_round_trips() -> None:
    assert open_record(seal_record(b"", TICKET), TICKET) == b""


def test_sealed_record_has_its_version_first_and_a_fresh_nonce() -> None:
    plaintext = b"same plaintext"
    first, second = seal_record(plaintext, TICKET), seal_record(plaintext, TICKET)
    assert first[0] == 1
    assert len(first) == 1 + 12 + len(plaintext) + 16
    assert first[1:13] != second[1:13]
    assert first != second


def test_sealed_record_contains_no_token() -> None:
    blob = seal_record(make_record().to_bytes(), TICKET)
    for secret in (ACCESS_TOKEN, REFRESH_TOKEN, ID_TOKEN, "access-token-that-must-not-leak", "alice@example.com"):
        assert secret.encode() not in blob
    assert TICKET.key not in blob


def test_record_does_not_open_under_another_sessions_id() -> None:
    # the same record key under another id: a blob copied to another store key
    moved = Ticket(b"j" * 32, TICKET.key)
    assert open_record(seal_record(b"record", TICKET), moved) is None


def test_record_does_not_open_with_another_key() -> None:
    assert open_record(seal_record(b"record", TICKET), Ticket(TICKET.id, b"x" * 32)) is None
    assert open_record(seal_record(b"record", TICKET), new_ticket()) is None


BLOB = seal_record(b"a session record", TICKET)


@pytest.mark.parametrize(
    "position",
    [0, 1, 12, 13, len(BLOB) - 17, len(BLOB) - 16, len(BLOB) - 1],
    ids=["version", "nonce-first", "nonce-last", "ciphertext-first", "ciphertext-last", "tag-first", "tag-last"],
)
def test_a_flipped_bit_anywhere_is_refused(position: int) -> None:
    tampered = bytearray(BLOB)
    tampered[position] ^= 0x01
    assert open_record(bytes(tampered), TICKET) is None


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x01", BLOB[:28], BLOB[:-1], BLOB + b"\x00", b"\x02" + BLOB[1:], b"\x00" * 64, b"not a record at all"],
    ids=[
        "empty",
        "version-only",
        "shorter-than-nonce-and-tag",
        "truncated",
        "extended",
        "unknown-version",
        "zeros",
        "text",
    ],
)
def test_malformed_blobs_are_refused(blob: bytes) -> None:
    assert open_record(blob, TICKET) is None


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_open(blob: bytes) -> None:
    assert open_record(blob, TICKET) is None


# ---------------------------------------------------------------------------- the record


def test_session_record_round_trips_through_bytes() -> None:
    record = make_record()
    assert SessionRecord.from_bytes(record.to_bytes()) == record


def test_session_record_defaults() -> None:
    record = SessionRecord(sub="s", created_at=1.0, last_seen_at=1.0, absolute_expires_at=2.0)
    assert (record.claims, record.sid, record.access_token, record.refresh_token, record.version) == (
        {},
        None,
        None,
        None,
        1,
    )
    assert SessionRecord.from_bytes(record.to_bytes()) == record


def test_session_record_repr_hides_the_tokens() -> None:
    text = repr(make_record())
    assert "user-1" in text
    for secret in (ACCESS_TOKEN, REFRESH_TOKEN, ID_TOKEN):
        assert secret not in text


def test_session_record_ignores_unknown_fields() -> None:
    data = json.loads(make_record().to_bytes())
    data["added_by_a_newer_version"] = {"x": 1}
    assert SessionRecord.from_bytes(json.dumps(data).encode()) == make_record()


def _with(**fields: Any) -> bytes:
    data = json.loads(make_record().to_bytes())
    for name, value in fields.items():
        if value is _MISSING:
            del data[name]
        else:
            data[name] = value
    return json.dumps(data).encode()


_MISSING = object()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"null",
        b'"string"',
        _with(sub=_MISSING),
        _with(sub=42),
        _with(sub=None),
        _with(claims=["a"]),
        _with(created_at=_MISSING),
        _with(created_at="1700000000"),
        _with(last_seen_at=True),
        _with(absolute_expires_at=None),
        _with(access_expires_at="soon"),
        _with(access_token=123),
        _with(refresh_token=["r"]),
        _with(sid={"a": 1}),
        _with(version="2"),
        _with(version=2.5),
        _with(version=False),
        b'{"sub": "s", "created_at": NaN, "last_seen_at": 1, "absolute_expires_at": 2}',
        b'{"sub": "s", "created_at": 1, "last_seen_at": Infinity, "absolute_expires_at": 2}',
    ],
    ids=[
        "empty",
        "not-json",
        "not-utf8",
        "array",
        "null",
        "string",
        "no-sub",
        "sub-number",
        "sub-null",
        "claims-array",
        "no-created-at",
        "created-at-string",
        "last-seen-bool",
        "absolute-null",
        "access-expiry-string",
        "access-token-number",
        "refresh-token-array",
        "sid-object",
        "version-string",
        "version-float",
        "version-bool",
        "nan-time",
        "infinite-time",
    ],
)
def test_malformed_records_are_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        SessionRecord.from_bytes(data)


# ---------------------------------------------------------------------------- expiry

IDLE = 8 * 3600.0
T0 = 1_700_000_000.0


@pytest.mark.parametrize(
    ("last_seen", "absolute", "now", "expired", "ttl"),
    [
        (T0, T0 + 7 * 86400, T0, False, IDLE),
        (T0, T0 + 7 * 86400, T0 + IDLE - 1, False, 1.0),
        (T0, T0 + 7 * 86400, T0 + IDLE, True, 0.0),
        (T0, T0 + 7 * 86400, T0 + IDLE + 5, True, 0.0),
        (T0, T0 + 3600, T0, False, 3600.0),
        (T0, T0 + 3600, T0 + 3600, True, 0.0),
        (T0 + 7 * 86400 - 10, T0 + 7 * 86400, T0 + 7 * 86400 - 10, False, 10.0),
        (T0 - 600, T0 + 7 * 86400, T0, False, IDLE - 600),
        (T0 + 120, T0 + 7 * 86400, T0, False, IDLE),
    ],
    ids=[
        "fresh",
        "one-second-of-idle-left",
        "idle-reached",
        "idle-passed",
        "absolute-sooner-than-idle",
        "absolute-reached",
        "used-just-before-absolute",
        "last-use-ten-minutes-ago",
        "last-use-ahead-of-this-clock",
    ],
)
def test_expiry_decisions(last_seen: float, absolute: float, now: float, expired: bool, ttl: float) -> None:
    record = make_record(created_at=min(last_seen, now), last_seen_at=last_seen, absolute_expires_at=absolute)
    assert is_expired(record, IDLE, now) is expired
    assert math.isclose(idle_ttl(record, IDLE, now), ttl)
    assert math.isclose(expires_at(record, IDLE), min(last_seen + IDLE, absolute))
