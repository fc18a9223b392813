"""``Set-Cookie`` field values (RFC 6265 section 4.1), written as aiohttp writes them.

aiohttp's ``StreamResponse.set_cookie`` keeps each cookie as an ``http.cookies.Morsel`` and
formats it when the answer is prepared; making and formatting a morsel costs more than the rest
of a sign-in's redirect, and a login sets three cookies. :func:`set_cookie_field` writes the
same text directly for the cookies this proxy sets: a name and a value made only of the
characters ``http.cookies`` leaves unquoted (an empty value as ``""``), then the attributes in
the order a morsel prints them (sorted by attribute name). Anything else (a name or value that
needs quoting or is refused, a reserved name) is formatted by ``http.cookies`` itself, so it is
never spelt differently from aiohttp's own output.
"""

from __future__ import annotations

import re
import string
from http.cookies import SimpleCookie
from typing import Final

# http.cookies' legal characters: what a morsel writes without quoting
_UNQUOTED: Final = re.escape(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~:")
_PLAIN: Final = re.compile(f"[{_UNQUOTED}]+")
# names a morsel keeps for attributes (refused as cookie names, by some Python versions)
_ATTRIBUTE_NAMES: Final = frozenset(
    {"expires", "path", "comment", "domain", "max-age", "secure", "httponly", "version", "samesite", "partitioned"}
)


def set_cookie_field(
    name: str,
    value: str,
    *,
    path: str = "/",
    domain: str | None = None,
    max_age: int | None = None,
    expires: str | None = None,
    secure: bool = False,
    httponly: bool = False,
    samesite: str | None = None,
) -> str:
    """The value of the ``Set-Cookie`` field aiohttp writes for ``set_cookie(name, value, ...)``."""
    if value == "":
        coded = '""'  # as http.cookies writes an empty value
    elif _PLAIN.fullmatch(value):
        coded = value
    else:
        coded = None
    if coded is None or not _PLAIN.fullmatch(name) or name.lower() in _ATTRIBUTE_NAMES:
        return _by_morsel(name, value, path, domain, max_age, expires, secure, httponly, samesite)
    parts = [name + "=" + coded]
    if domain:
        parts.append("Domain=" + domain)
    if expires:
        parts.append("expires=" + expires)
    if httponly:
        parts.append("HttpOnly")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if path:
        parts.append("Path=" + path)
    if samesite:
        parts.append("SameSite=" + samesite)
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def _by_morsel(
    name: str,
    value: str,
    path: str,
    domain: str | None,
    max_age: int | None,
    expires: str | None,
    secure: bool,
    httponly: bool,
    samesite: str | None,
) -> str:
    """What aiohttp's ``set_cookie`` and ``_prepare_headers`` make of the same arguments."""
    cookies: SimpleCookie = SimpleCookie()
    cookies[name] = value
    morsel = cookies[name]
    if expires is not None:
        morsel["expires"] = expires
    if domain is not None:
        morsel["domain"] = domain
    if max_age is not None:
        morsel["max-age"] = str(max_age)
    morsel["path"] = path
    morsel["secure"] = secure
    morsel["httponly"] = httponly
    if samesite is not None:
        morsel["samesite"] = samesite
    return morsel.output(header="")[1:]
