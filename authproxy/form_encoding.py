"""``application/x-www-form-urlencoded`` serialisation, as ``urllib.parse.urlencode`` does it.

The authorization request's query and the token request's body are built on every login (and
every refresh) from a dozen names and values, most of which are plain tokens (the state, nonce,
PKCE challenge and verifier, the code, names like ``grant_type``). ``urlencode`` runs each of
them through ``quote_plus`` in Python; here a value made only of characters ``quote_plus``
never changes (RFC 3986 section 2.3 unreserved) is taken as it is, and only the rest is quoted,
by ``quote_plus`` itself, so the output is ``urlencode``'s, byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote_plus

_UNCHANGED: Final = re.compile(r"[A-Za-z0-9_.~-]*")


def form_urlencode(pairs: Mapping[str, str]) -> str:
    """``urlencode(pairs)`` for string names and values."""
    return "&".join(f"{_quoted(name)}={_quoted(value)}" for name, value in pairs.items())


def _quoted(value: str) -> str:
    return value if _UNCHANGED.fullmatch(value) else quote_plus(value)
