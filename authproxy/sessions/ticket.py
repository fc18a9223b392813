"""The session cookie's ticket (SPEC section 5): opaque random values plus a signature.

A session is named by a random 256-bit id and has its own random 256-bit record key (the
design of oauth2-proxy's ticket). The cookie carries ``id || key`` with an HMAC-SHA256 tag
(RFC 2104) over them, so the store never holds what is needed to read a record, and the store
key is a one-way hash of the id, so a copy of the store yields no usable cookie.

``id || key`` is also encrypted in the cookie (AES-256-CTR with the tag as its initial counter
block: the synthetic-IV construction of RFC 5297, with HMAC-SHA256 as its PRF). Its holder
never learns the record key: whoever can write to the store, holding any cookie the proxy
handed out (a login flow's, given to anyone), could otherwise seal a record of their choosing
under that key, and be signed in as anyone.

Wire format: ``v1.`` + base64url without padding (RFC 4648 section 5) of
``encrypted id || key (64) || tag (32)``. The tag and encryption keys are derived with
HKDF-SHA256 (RFC 5869) from a session secret with purpose labels of their own, never used raw:
the same secret may key other things. The first secret seals, every secret opens, so secrets
rotate without logging everyone out. Opening never raises: a cookie is attacker-controlled input.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from secrets import token_bytes
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ID_BYTES: Final = 32
KEY_BYTES: Final = 32
TAG_BYTES: Final = 32
TICKET_VERSION: Final = "v1"
TICKET_PREFIX: Final = TICKET_VERSION + "."
# 96 bytes encode to exactly 128 base64url characters (a multiple of 3 bytes: no padding, and
# no spare bits, so every well-formed value has exactly one encoding)
_ENCODED_LENGTH: Final = 128
_ENCODED_RE: Final = re.compile(r"[A-Za-z0-9_-]{128}")
# fixed HKDF salt: domain separation from any other use of the same secrets (RFC 5869 section 3.1)
_HKDF_SALT: Final = b"authproxy session v1"
_TICKET_MAC_PURPOSE: Final = "ticket-mac"
_TICKET_CIPHER_PURPOSE: Final = "ticket-aes-256-ctr"
_COUNTER_BYTES: Final = 16
_STORE_KEY_LABEL: Final = b"authproxy store key v1\x00"


@dataclass(frozen=True, slots=True)
class Ticket:
    """A session's id and its record key, both random; ``repr`` shows neither."""

    id: bytes
    key: bytes

    def __post_init__(self) -> None:
        if len(self.id) != ID_BYTES or len(self.key) != KEY_BYTES:
            raise ValueError(f"a ticket holds a {ID_BYTES}-byte id and a {KEY_BYTES}-byte key")

    def __repr__(self) -> str:
        # both halves are bearer secrets: keep them out of logs and tracebacks
        return "Ticket(<redacted>)"


def derive_key(secret: bytes, purpose: str, length: int = 32) -> bytes:
    """A key for one ``purpose`` from ``secret`` (HKDF-SHA256 with the purpose as ``info``)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_HKDF_SALT, info=purpose.encode()).derive(secret)


def new_ticket() -> Ticket:
    """A fresh ticket: a new session id and a new record key (fixation defence: one per login)."""
    return Ticket(token_bytes(ID_BYTES), token_bytes(KEY_BYTES))


@functools.lru_cache(maxsize=16)
def _mac_key(secret: bytes) -> bytes:
    # the configured secrets are few and fixed: derive each one's MAC key once, not per request
    return derive_key(secret, _TICKET_MAC_PURPOSE)


@functools.lru_cache(maxsize=16)
def _cipher_key(secret: bytes) -> bytes:
    return derive_key(secret, _TICKET_CIPHER_PURPOSE)


def _tag(payload: bytes, secret: bytes) -> bytes:
    # the version is authenticated too, so a future format cannot be confused with this one
    message = TICKET_PREFIX.encode() + payload
    return hmac.digest(_mac_key(secret), message, "sha256")


def _crypt(data: bytes, tag: bytes, secret: bytes) -> bytes:
    # CTR under the tag of the plaintext: the same operation encrypts and decrypts, and a
    # counter block is never reused for another ticket (ids and keys are random)
    cipher = Cipher(algorithms.AES(_cipher_key(secret)), modes.CTR(tag[:_COUNTER_BYTES])).encryptor()
    return cipher.update(data) + cipher.finalize()


def seal_ticket(ticket: Ticket, signing_secret: bytes) -> str:
    """The cookie value for ``ticket``, sealed with ``signing_secret`` (ASCII, cookie-safe)."""
    payload = ticket.id + ticket.key
    tag = _tag(payload, signing_secret)
    encoded = base64.urlsafe_b64encode(_crypt(payload, tag, signing_secret) + tag)
    return TICKET_PREFIX + encoded.decode("ascii")


def open_ticket(value: str, secrets: Sequence[bytes]) -> Ticket | None:
    """The ticket in a cookie value, or None if it is malformed or sealed by none of ``secrets``."""
    if not isinstance(value, str) or not value.startswith(TICKET_PREFIX):
        return None
    encoded = value[len(TICKET_PREFIX) :]
    # checked before decoding: b64decode would skip foreign characters instead of refusing them
    if len(encoded) != _ENCODED_LENGTH or not _ENCODED_RE.fullmatch(encoded):
        return None
    try:
        raw = base64.urlsafe_b64decode(encoded)
    except (binascii.Error, ValueError):
        return None
    sealed, tag = raw[: ID_BYTES + KEY_BYTES], raw[ID_BYTES + KEY_BYTES :]
    # every secret is tried even after a match, so timing tells nothing about which one sealed
    opened = None
    for secret in secrets:
        payload = _crypt(sealed, tag, secret)
        if hmac.compare_digest(_tag(payload, secret), tag):
            opened = payload
    if opened is None:
        return None
    return Ticket(opened[:ID_BYTES], opened[ID_BYTES:])


def store_key_for(ticket_id: bytes) -> str:
    """The store key of a session: a one-way hash of its id, so a store dump yields no cookie."""
    digest = hashlib.sha256(_STORE_KEY_LABEL + ticket_id).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
