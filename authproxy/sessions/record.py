"""Session records and their encryption at rest (SPEC section 5).

A record is sealed with AES-256-GCM (NIST SP 800-38D; RFC 5116 AEAD interface) under a key
derived with HKDF-SHA256 (RFC 5869) from the record key in the session's cookie ticket. The
store therefore only ever holds ciphertext it cannot open. Each seal draws a fresh random
96-bit nonce (SP 800-38D section 8.2.2); with one key per session and a few writes each, the
random-nonce bound is nowhere near. The session id is the associated data, so a record copied
under another session's key does not open.

Blob format: ``version (1) || nonce (12) || ciphertext || tag (16)``.

Expiry (pure, ``now`` passed in): a record lives ``idle_timeout`` past its last use and never
past ``absolute_expires_at``.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authproxy.json_codec import dumps_sorted, loads
from authproxy.sessions.ticket import Ticket, derive_key

RECORD_VERSION: Final = 1
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
_VERSION_BYTE: Final = bytes([RECORD_VERSION])
_RECORD_KEY_PURPOSE: Final = "record-aes-256-gcm"
_AAD_LABEL: Final = b"authproxy record v1\x00"


@functools.lru_cache(maxsize=4096)
def _cipher_for(ticket_key: bytes) -> AESGCM:
    # a session's record is opened and sealed again on every refresh and cache miss: derive its
    # key once per process (the tickets it comes from are kept in memory anyway)
    return AESGCM(derive_key(ticket_key, _RECORD_KEY_PURPOSE))


def _cipher(ticket: Ticket) -> AESGCM:
    return _cipher_for(ticket.key)


def _associated_data(ticket: Ticket) -> bytes:
    # binds the blob to this format version and to the session id it is stored for
    return _AAD_LABEL + _VERSION_BYTE + ticket.id


def seal_record(plaintext: bytes, ticket: Ticket) -> bytes:
    """``plaintext`` encrypted and authenticated for the session of ``ticket``."""
    nonce = os.urandom(NONCE_BYTES)
    return _VERSION_BYTE + nonce + _cipher(ticket).encrypt(nonce, plaintext, _associated_data(ticket))


def open_record(blob: bytes, ticket: Ticket) -> bytes | None:
    """The plaintext of ``blob``, or None if it is not a record of this session, or was altered."""
    if len(blob) < 1 + NONCE_BYTES + TAG_BYTES or blob[:1] != _VERSION_BYTE:
        return None
    nonce, sealed = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
    try:
        return _cipher(ticket).decrypt(nonce, sealed, _associated_data(ticket))
    except InvalidTag:
        return None


@dataclass(kw_only=True)
class SessionRecord:
    """What the store keeps about one session; times are Unix seconds.

    Tokens are left out of ``repr`` so a record that reaches a log line or a traceback does not
    carry them along.
    """

    sub: str
    claims: dict[str, Any] = field(default_factory=dict)
    sid: str | None = None
    id_token: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    access_expires_at: float | None = None
    created_at: float
    last_seen_at: float
    absolute_expires_at: float
    version: int = 1

    def to_bytes(self) -> bytes:
        """Compact JSON (the plaintext to seal)."""
        # the fields as they are: no nested dataclasses to convert, and the encoder copies nothing
        return dumps_sorted(vars(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionRecord:
        """The record in ``data``; ValueError if it is not one.

        Unknown fields are ignored, so during a rolling upgrade an older replica can still read
        a record written by a newer one.
        """
        try:
            raw = loads(data)
        except (ValueError, TypeError, RecursionError) as e:
            raise ValueError("a session record is not JSON") from e
        if not isinstance(raw, dict):
            raise ValueError("a session record is not a JSON object")
        claims = raw.get("claims", {})
        if not isinstance(claims, dict):
            raise ValueError("session record field claims: expected an object")
        return cls(
            sub=_text(raw, "sub"),
            claims=claims,
            sid=_optional_text(raw, "sid"),
            id_token=_optional_text(raw, "id_token"),
            access_token=_optional_text(raw, "access_token"),
            refresh_token=_optional_text(raw, "refresh_token"),
            access_expires_at=_optional_time(raw, "access_expires_at"),
            created_at=_time(raw, "created_at"),
            last_seen_at=_time(raw, "last_seen_at"),
            absolute_expires_at=_time(raw, "absolute_expires_at"),
            version=_integer(raw, "version", default=1),
        )


def open_session_record(blob: bytes | None, ticket: Ticket) -> SessionRecord | None:
    """The session record sealed in ``blob`` for ``ticket``; None when absent, altered or not one."""
    plaintext = open_record(blob, ticket) if blob is not None else None
    if plaintext is None:
        return None
    try:
        return SessionRecord.from_bytes(plaintext)
    except ValueError:
        return None


def _text(raw: dict[str, Any], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str):
        raise ValueError(f"session record field {name}: expected a string")
    return value


def _optional_text(raw: dict[str, Any], name: str) -> str | None:
    return None if raw.get(name) is None else _text(raw, name)


def _time(raw: dict[str, Any], name: str) -> float:
    value = raw.get(name)
    # bool is an int in Python, and never a time
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"session record field {name}: expected a number")
    return float(value)


def _optional_time(raw: dict[str, Any], name: str) -> float | None:
    return None if raw.get(name) is None else _time(raw, name)


def _integer(raw: dict[str, Any], name: str, *, default: int) -> int:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"session record field {name}: expected an integer")
    return value


def expires_at(record: SessionRecord, idle_timeout: float) -> float:
    """When the record ends if it is not used again (Unix seconds): idle or absolute, earlier first."""
    return min(record.last_seen_at + idle_timeout, record.absolute_expires_at)


def ends_at(record: SessionRecord, idle_timeout: float) -> float:
    """When the session ends if it is not used again: :func:`expires_at`, or sooner when the
    access token expires first and there is no refresh token to renew it (SPEC section 5)."""
    end = expires_at(record, idle_timeout)
    if record.refresh_token is None and record.access_expires_at is not None:
        return min(end, record.access_expires_at)
    return end


def is_expired(record: SessionRecord, idle_timeout: float, now: float) -> bool:
    """Whether the session is over: unused for ``idle_timeout``, or past its absolute expiry."""
    return now >= expires_at(record, idle_timeout)


def idle_ttl(record: SessionRecord, idle_timeout: float, now: float) -> float:
    """Seconds the store entry should live from ``now``; 0 when the record is already over.

    At most ``idle_timeout`` (a ``last_seen_at`` ahead of ``now``, from another replica's clock,
    cannot stretch it) and never past the absolute expiry; measured from ``last_seen_at`` so the
    entry goes when :func:`is_expired` would say so.
    """
    return max(0.0, min(idle_timeout, expires_at(record, idle_timeout) - now))
