"""SPEC section 5: the cookie carries only opaque random values, sealed (authenticated and encrypted).

A tampered, truncated, foreign or garbage cookie is no session (None, never an exception); the
first secret signs and every secret verifies (rotation); the store key is a one-way function of
the session id, so a copy of the store yields no usable cookie.
"""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from hypothesis import given
from hypothesis import strategies as st

from authproxy.sessions.ticket import Ticket, derive_key, new_ticket, open_ticket, seal_ticket, store_key_for

OLD = b"o" * 32
NEW = b"n" * 32
TICKET = Ticket(bytes(range(32)), bytes(range(100, 132)))
SEALED = seal_ticket(TICKET, NEW)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(sealed: str) -> bytearray:
    return bytearray(base64.urlsafe_b64decode(sealed.removeprefix("v1.") + "="))


def _reseal(raw: bytes) -> str:
    return "v1." + _b64(raw)


def test_ticket_round_trips() -> None:
    assert open_ticket(SEALED, [NEW]) == TICKET


def test_sealed_ticket_is_a_cookie_safe_versioned_string() -> None:
    assert SEALED.startswith("v1.")
    assert re.fullmatch(r"v1\.[A-Za-z0-9_-]+", SEALED)
    assert len(SEALED) == 3 + 107


def test_the_cookie_shows_neither_the_session_id_nor_its_record_key() -> None:
    # its holder must not be able to seal a record the proxy would open for it
    shown = bytes(_raw(SEALED))
    assert TICKET.id not in shown and TICKET.key not in shown
    assert TICKET.id[:8] not in shown and TICKET.key[:8] not in shown


def test_new_tickets_are_random_and_full_size() -> None:
    tickets = [new_ticket() for _ in range(50)]
    assert len({t.id for t in tickets}) == 50
    assert len({t.key for t in tickets}) == 50
    assert all(len(t.id) == 32 and len(t.key) == 32 and t.id != t.key for t in tickets)


def test_ticket_repr_shows_neither_half() -> None:
    text = repr(TICKET) + str(TICKET)
    assert TICKET.id.hex() not in text
    assert repr(TICKET.id) not in text
    assert repr(TICKET.key) not in text


@pytest.mark.parametrize(
    ("id_size", "key_size"), [(31, 32), (32, 31), (0, 0), (33, 32)], ids=["short-id", "short-key", "empty", "long-id"]
)
def test_ticket_refuses_wrong_sizes(id_size: int, key_size: int) -> None:
    with pytest.raises(ValueError):
        Ticket(b"i" * id_size, b"k" * key_size)


# ---------------------------------------------------------------------------- rotation


@pytest.mark.parametrize(
    ("signed_with", "verify_with", "opens"),
    [
        (OLD, [NEW, OLD], True),
        (NEW, [NEW, OLD], True),
        (OLD, [NEW], False),
        (NEW, [OLD], False),
        (NEW, [], False),
    ],
    ids=["old-secret-still-verifies", "new-secret-signs", "retired-secret-refused", "foreign-secret", "no-secrets"],
)
def test_secret_rotation(signed_with: bytes, verify_with: list[bytes], opens: bool) -> None:
    assert (open_ticket(seal_ticket(TICKET, signed_with), verify_with) == TICKET) is opens


def test_the_sealing_key_is_derived_not_the_raw_secret() -> None:
    raw_key = AESSIV(NEW + NEW).encrypt(TICKET.id + TICKET.key, [b"v1."])
    assert open_ticket(_reseal(raw_key), [NEW]) is None


def test_a_ticket_is_sealed_for_its_version_alone() -> None:
    # the version is authenticated: the same bytes sealed without it (or for another) do not open
    siv = AESSIV(derive_key(NEW, "ticket-aes-siv", 64))
    assert open_ticket(_reseal(siv.encrypt(TICKET.id + TICKET.key, [b"v1."])), [NEW]) == TICKET
    assert open_ticket(_reseal(siv.encrypt(TICKET.id + TICKET.key, [b"v2."])), [NEW]) is None
    assert open_ticket(_reseal(siv.encrypt(TICKET.id + TICKET.key, None)), [NEW]) is None


def test_a_ticket_has_one_spelling() -> None:
    # the last character carries 2 spare bits: set, they spell the same bytes another way
    last = SEALED[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    other = alphabet[alphabet.index(last) | 1]
    assert other != last
    assert base64.urlsafe_b64decode(SEALED[3:-1] + other + "=") == base64.urlsafe_b64decode(SEALED[3:] + "=")
    assert open_ticket(SEALED[:-1] + other, [NEW]) is None


# ---------------------------------------------------------------------------- tampering


@pytest.mark.parametrize(
    "position", [0, 15, 16, 47, 48, 79], ids=["iv-first", "iv-last", "id-first", "id-last", "key-first", "key-last"]
)
def test_a_flipped_bit_anywhere_is_refused(position: int) -> None:
    raw = _raw(SEALED)
    raw[position] ^= 0x01
    assert open_ticket(_reseal(bytes(raw)), [NEW]) is None


def test_a_ticket_with_another_tickets_id_is_refused() -> None:
    other = _raw(seal_ticket(new_ticket(), NEW))
    raw = _raw(SEALED)
    raw[16:48] = other[16:48]
    assert open_ticket(_reseal(bytes(raw)), [NEW]) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "v1.",
        "v1",
        SEALED[3:],
        "v2." + SEALED[3:],
        "V1." + SEALED[3:],
        SEALED[:-1],
        SEALED[:-4],
        SEALED + "A",
        SEALED + "AAAA",
        SEALED + "==",
        " " + SEALED,
        SEALED + "\n",
        SEALED[:-1] + "é",
        SEALED[:-1] + "\x00",
        SEALED[:10] + "+" + SEALED[11:],
        SEALED[:10] + "/" + SEALED[11:],
        SEALED[:10] + "=" + SEALED[11:],
        "v1." + "A" * 107,
        "v1." + "-" * 107,
        "v1." + "\udcff" * 107,
        "v1." + "é" * 107,
        "v1." + "A" * 100_000,
        SEALED + "." + SEALED[3:],
    ],
    ids=[
        "empty",
        "prefix-only",
        "no-dot",
        "no-prefix",
        "unknown-version",
        "upper-case-version",
        "truncated-by-one",
        "truncated-by-four",
        "one-extra",
        "four-extra",
        "padding",
        "leading-space",
        "trailing-newline",
        "non-ascii",
        "nul",
        "standard-base64-plus",
        "standard-base64-slash",
        "padding-inside",
        "zeros",
        "all-dashes",
        "lone-surrogates",
        "non-ascii-of-right-length",
        "huge",
        "two-tickets",
    ],
)
def test_malformed_values_are_no_ticket(value: str) -> None:
    assert open_ticket(value, [NEW, OLD]) is None


@pytest.mark.parametrize("value", [None, b"v1.AAAA", 42, ["v1."]], ids=["none", "bytes", "int", "list"])
def test_values_that_are_not_strings_are_no_ticket(value: object) -> None:
    assert open_ticket(value, [NEW]) is None  # type: ignore[arg-type]


@given(st.text())
def test_arbitrary_text_is_no_ticket(value: str) -> None:
    assert open_ticket(value, [NEW]) is None
    assert open_ticket("v1." + value, [NEW]) is None


@given(st.integers(min_value=3, max_value=len(SEALED) - 1), st.characters(codec="ascii"))
def test_any_changed_character_is_refused(position: int, character: str) -> None:
    changed = SEALED[:position] + character + SEALED[position + 1 :]
    if changed != SEALED:
        assert open_ticket(changed, [NEW]) is None


# ---------------------------------------------------------------------------- store key


def test_store_key_is_derived_from_the_id_and_reveals_nothing_of_it() -> None:
    key = store_key_for(TICKET.id)
    assert key == store_key_for(TICKET.id)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", key)
    for encoding in (
        TICKET.id.hex(),
        _b64(TICKET.id),
        base64.b64encode(TICKET.id).decode(),
        TICKET.id.decode("latin-1"),
        SEALED[3:],
    ):
        assert encoding not in key
        assert key not in encoding
    # nor is it a plain hash of the id
    assert key != _b64(hashlib.sha256(TICKET.id).digest())


def test_store_keys_differ_between_sessions() -> None:
    keys = {store_key_for(new_ticket().id) for _ in range(100)}
    assert len(keys) == 100


def test_store_key_does_not_depend_on_the_record_key() -> None:
    assert store_key_for(TICKET.id) == store_key_for(Ticket(TICKET.id, b"x" * 32).id)


# ---------------------------------------------------------------------------- derive_key


def test_derive_key_separates_purposes_and_secrets() -> None:
    keys = {derive_key(NEW, "a"), derive_key(NEW, "b"), derive_key(OLD, "a")}
    assert len(keys) == 3
    assert derive_key(NEW, "a") == derive_key(NEW, "a")
    assert NEW not in keys
    assert len(derive_key(NEW, "a", 16)) == 16
