"""The session cookie's ticket (SPEC section 5): opaque random values, sealed.

A session is named by a random 256-bit id and has its own random 256-bit record key (the
design of oauth2-proxy's ticket). The cookie carries ``id || key`` sealed with AES-SIV (RFC
5297, ``cryptography``'s ``AESSIV``): authenticated, so no one can make a ticket, and encrypted,
so its holder never learns the record key. Signed only, it would show the key: whoever can write
to the store, holding any cookie the proxy hands out (a login flow's, given to anyone), could
seal a record of their choosing under that key and be signed in as anyone. The store never
holds what is needed to read a record, and the store key is a one-way hash of the id, so a copy
of the store yields no usable cookie.

Wire format: ``v1.`` + base64url without padding (RFC 4648 section 5) of the 80 sealed bytes
(synthetic IV 16, ciphertext 64), 107 characters, in their one canonical spelling; the version
is authenticated as associated data. The SIV key is derived with HKDF-SHA256 (RFC 5869) from a
session secret with a purpose label of its own, never used raw: the same secret may key other
things. The first secret seals, every secret opens, so secrets rotate without logging everyone
out. Opening never raises: a cookie is attacker-controlled input.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from secrets import token_bytes
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ID_BYTES: Final = 32
KEY_BYTES: Final = 32
TICKET_VERSION: Final = "v1"
TICKET_PREFIX: Final = TICKET_VERSION + "."
# the version, authenticated with every ticket, so a future format cannot be confused with this one
_ASSOCIATED: Final = [TICKET_PREFIX.encode()]
# 80 sealed bytes: 107 base64url characters, the last carrying 2 spare bits (zero when canonical)
_ENCODED_LENGTH: Final = 107
_ENCODED_RE: Final = re.compile(r"[A-Za-z0-9_-]{107}")
# fixed HKDF salt: domain separation from any other use of the same secrets (RFC 5869 section 3.1)
_HKDF_SALT: Final = b"authproxy session v1"
_TICKET_SIV_PURPOSE: Final = "ticket-aes-siv"
# AES-SIV with AES-256: two 256-bit keys (RFC 5297 section 2.2)
_SIV_KEY_BYTES: Final = 64
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
def _siv(secret: bytes) -> AESSIV:
    return AESSIV(derive_key(secret, _TICKET_SIV_PURPOSE, _SIV_KEY_BYTES))


def seal_ticket(ticket: Ticket, secret: bytes) -> str:
    """The cookie value for ``ticket``, sealed with ``secret`` (ASCII, cookie-safe)."""
    sealed = _siv(secret).encrypt(ticket.id + ticket.key, _ASSOCIATED)
    return TICKET_PREFIX + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")


def open_ticket(value: str, secrets: Sequence[bytes]) -> Ticket | None:
    """The ticket in a cookie value, or None if it is malformed or sealed by none of ``secrets``."""
    if not isinstance(value, str) or not value.startswith(TICKET_PREFIX):
        return None
    encoded = value[len(TICKET_PREFIX) :]
    # checked before decoding: b64decode would skip foreign characters instead of refusing them
    if len(encoded) != _ENCODED_LENGTH or not _ENCODED_RE.fullmatch(encoded):
        return None
    try:
        sealed = base64.urlsafe_b64decode(encoded + "=")
    except (binascii.Error, ValueError):
        return None
    if base64.urlsafe_b64encode(sealed)[:-1] != encoded.encode("ascii"):
        return None  # spare bits set: one ticket has one spelling
    # every secret is tried even after a match, so timing tells nothing about which one sealed
    opened = None
    for secret in secrets:
        try:
            opened = _siv(secret).decrypt(sealed, _ASSOCIATED)
        except InvalidTag:
            continue
    if opened is None or len(opened) != ID_BYTES + KEY_BYTES:
        return None
    return Ticket(opened[:ID_BYTES], opened[ID_BYTES:])


def store_key_for(ticket_id: bytes) -> str:
    """The store key of a session: a one-way hash of its id, so a store dump yields no cookie."""
    digest = hashlib.sha256(_STORE_KEY_LABEL + ticket_id).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
