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
    attributes = (  # a morsel's order: sorted by attribute name; empty ones left out
        "Domain=" + domain if domain else "",
        "expires=" + expires if expires else "",
        "HttpOnly" if httponly else "",
        f"Max-Age={max_age}" if max_age is not None else "",
        "Path=" + path if path else "",
        "SameSite=" + samesite if samesite else "",
        "Secure" if secure else "",
    )
    return "; ".join([name + "=" + coded, *filter(None, attributes)])


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
    given = {
        "expires": expires,
        "domain": domain,
        "max-age": None if max_age is None else str(max_age),
        "path": path,
        "secure": secure,
        "httponly": httponly,
        "samesite": samesite,
    }
    for attribute, setting in given.items():
        if setting is not None:
            morsel[attribute] = setting
    return morsel.output(header="")[1:]
