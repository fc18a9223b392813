"""Reading one cookie out of a request's ``Cookie`` field (RFC 6265 section 5.4), as aiohttp reads it.

aiohttp's ``request.cookies`` parses the whole field into an ``http.cookies.Morsel`` per cookie
(~12 µs for a browser's field), where the proxy wants one or two names. :func:`find_cookie`
answers without that, but only when the answer cannot differ from aiohttp's:

- the request has one ``Cookie`` field (aiohttp reads only the first);
- the name does not occur in it at all (every name aiohttp finds is a piece of the field), or
  the field is well formed by RFC 6265 section 4.2.1: each pair a token name with an optional
  ``=`` and a value of cookie-octets, pairs separated by ``;`` and optional spaces or tabs. A
  comma is taken in a value too, as aiohttp takes it (a date's comma is followed by a space,
  which is not). aiohttp's parser splits such a field into the same pairs.

Anything else (a quoted value, which may hold a ``;``; a space inside a pair, which aiohttp takes
as a separator; a date) is left to aiohttp. Of a name given twice aiohttp keeps the last value,
and so does :func:`find_cookie`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from aiohttp import web

# names: RFC 9110 section 5.6.2 token characters; values: RFC 6265 section 4.2.1 cookie-octets
# (%x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E) and the comma (%x2C), which aiohttp takes in a value
_NAME: Final = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE: Final = r"[!#-:<-\[\]-~]*"
_PAIR: Final = f"(?:{_NAME}(?:={_VALUE})?)?"
_WELL_FORMED: Final = re.compile(f"[ \\t]*{_PAIR}(?:[ \\t]*;[ \\t]*{_PAIR})*[ \\t]*")


def find_cookie(cookie_fields: Sequence[str], name: str) -> tuple[bool, str | None]:
    """``(clear, value)`` of cookie ``name`` in a request's ``Cookie`` fields.

    ``clear`` is False when aiohttp's parser might read the fields otherwise (see the module
    docstring); the value is then not looked for. A name without ``=`` has the empty value.
    """
    if not cookie_fields:
        return True, None
    if len(cookie_fields) != 1:
        return False, None
    field = cookie_fields[0]
    if name not in field:
        return True, None
    if _WELL_FORMED.fullmatch(field) is None:
        return False, None
    found: str | None = None
    for pair in field.split(";"):
        key, _, value = pair.strip(" \t").partition("=")
        if key == name:
            found = value
    return True, found


def request_cookie(request: web.BaseRequest, name: str) -> str | None:
    """The value of cookie ``name`` that ``request.cookies`` holds, parsed only when it must be."""
    clear, value = find_cookie(request.headers.getall("Cookie", ()), name)
    if clear:
        return value
    return request.cookies.get(name)
