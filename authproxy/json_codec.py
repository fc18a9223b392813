"""JSON on the request paths, with orjson where it gives exactly what the standard library gives.

Session records, token endpoint answers and JWT segments are read and written on every sign-in
and refresh, and the standard ``json`` module is a large share of their cost. orjson does the
same work several times faster, with two differences that matter here, both handled:

- **Reading:** orjson refuses what ``json.loads`` accepts beyond RFC 8259 (``NaN``,
  ``Infinity``, numbers too large for a double, unpaired surrogate escapes, a BOM, UTF-16), and
  reads an integer literal too large for 64 bits as a float where ``json.loads`` keeps the
  integer. :func:`loads` therefore gives text with a run of 19 or more digits (a possible
  integer outside orjson's range; a string holding such digits costs only the slower path) and
  anything orjson refuses to ``json.loads``. Its result and its errors are ``json.loads``'s.
- **Writing:** :func:`dumps_sorted` is compact JSON with sorted keys, UTF-8 (``json.dumps``
  escapes non-ASCII; the value read back is the same). What orjson cannot write (integers
  beyond 64 bits, strings with unpaired surrogates, keys that are not strings) is written by
  ``json.dumps``. orjson writes a non-finite float as ``null``.
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson

# a run of digits that may be an integer beyond 64 bits (the largest, 2**64 - 1, has 20 digits;
# from 19 on, orjson may read a float where json.loads reads an integer), found by mapping every
# digit to "0" and everything else to "." (a regular expression takes 20 times as long)
_LONG_RUN: Final = b"0" * 19
_DIGITS_AS_ZEROS: Final = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x2E for byte in range(256))


def loads(data: bytes) -> Any:
    """``json.loads(data)``, faster: the same value, or the same ``ValueError``."""
    if _LONG_RUN not in data.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


def dumps_sorted(value: Any) -> bytes:
    """Compact JSON of ``value`` with sorted keys, as UTF-8 bytes."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
