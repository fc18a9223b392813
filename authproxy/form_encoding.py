"""``application/x-www-form-urlencoded`` serialisation, as ``urllib.parse.urlencode`` does it.

The authorization request's query and the token request's body are built on every login (and
every refresh) from a dozen names and values, most of which are plain tokens (the state, nonce,
PKCE challenge and verifier, the code, names like ``grant_type``). ``urlencode`` runs each of
them through ``quote_plus`` in Python; here a value made only of characters ``quote_plus``
never changes (RFC 3986 section 2.3 unreserved) is taken as it is, and only the rest is quoted,
by ``quote_plus`` itself, so the output is ``urlencode``'s, byte for byte.

The names, and the values of the parameters that come from the configuration (the redirect URI
and the scope above all, which ``quote_plus`` walks character by character), are the same on
every login: they are quoted once and remembered. Per-login values (state, code, tokens) are
never remembered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote_plus

_UNCHANGED: Final = re.compile(r"[A-Za-z0-9_.~-]*")

# parameters whose value is configuration, the same for every login, and no secret
CONSTANT_VALUED: Final = frozenset(
    {"response_type", "client_id", "redirect_uri", "scope", "code_challenge_method", "grant_type"}
)
# quoted names and constant values; a bound for callers with many different ones
_KNOWN_MAX: Final = 256
_known: dict[str, str] = {}


def form_urlencode(pairs: Mapping[str, str]) -> str:
    """``urlencode(pairs)`` for string names and values."""
    return "&".join(
        f"{_remembered(name)}={_remembered(value) if name in CONSTANT_VALUED else _quoted(value)}"
        for name, value in pairs.items()
    )


def _quoted(value: str) -> str:
    return value if _UNCHANGED.fullmatch(value) else quote_plus(value)


def _remembered(text: str) -> str:
    """``_quoted(text)`` for a name or constant value, quoted once."""
    quoted = _known.get(text)
    if quoted is None:
        if len(_known) >= _KNOWN_MAX:
            _known.clear()
        quoted = _known[text] = _quoted(text)
    return quoted
