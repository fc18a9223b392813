"""The post-login redirect target (``rd``): only local paths, never an open redirect.

``rd`` comes from the query string of ``/oauth2/start`` and ``/oauth2/sign_out``, so anyone can
craft it (OWASP "Unvalidated Redirects and Forwards"; RFC 9700 section 4.11 on open redirectors).
The value is accepted only if it is a path on our own origin, as RFC 3986 section 4.2 calls an
"absolute-path reference": exactly one ``/`` and then something that is neither ``/`` nor ``\\``
(``//host`` is a network-path reference, and browsers read ``\\`` as ``/`` in http(s) URLs,
WHATWG URL Standard "special authority slashes state").

Every layer of percent-decoding is checked the same way (``/%2F%2Fevil.com``, double encoding),
because upstreams and frameworks decode paths before they build their own redirects, and the
NFKC form of each layer too (U+FF0F FULLWIDTH SOLIDUS folds to ``/``). Control characters,
whitespace other than a plain space, and invisible format characters are refused in every
layer: browsers silently drop tabs and newlines from URLs (``/\\t/evil.com`` becomes
``//evil.com``). Anything doubtful becomes ``/``: a user landing on the home page is a far
smaller failure than a phishing redirect.

Pure: no I/O.
"""

from __future__ import annotations

import unicodedata
from typing import Final
from urllib.parse import quote, unquote

FALLBACK: Final = "/"
# a redirect target longer than this is not a page anyone bookmarked
MAX_LENGTH: Final = 4096
# more layers of encoding than this is an attack, not a URL
MAX_DECODE_ROUNDS: Final = 4
# printable ASCII stays as it is (including existing %XX escapes); everything else is escaped
_KEEP_AS_IS: Final = "".join(chr(code) for code in range(0x21, 0x7F))
# Unicode categories never legitimate in a path: controls, invisible formatting, separators
_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})


def sanitize_redirect(rd: str | None) -> str:
    """``rd`` if it is a safe local path (plus query), else ``"/"``; the fragment is dropped."""
    if not rd or len(rd) > MAX_LENGTH:
        return FALLBACK
    # the fragment never reaches a server and the provider's redirect may not keep it; escaping
    # everything outside printable ASCII makes the value fit for a Location header, and the
    # escaped control characters and whitespace are then refused by the decoded-layer checks
    try:
        candidate = quote(rd.split("#", 1)[0], safe=_KEEP_AS_IS)
    except UnicodeEncodeError:  # a header value whose bytes were not UTF-8 (read as surrogates)
        return FALLBACK
    if not _is_local(candidate):
        return FALLBACK
    layer = candidate
    for _ in range(MAX_DECODE_ROUNDS):
        decoded = unquote(layer)
        if decoded == layer:
            return candidate
        if not (_is_local(decoded) and _is_local(unicodedata.normalize("NFKC", decoded))):
            return FALLBACK
        layer = decoded
    return FALLBACK


def _is_local(value: str) -> bool:
    """One decoding layer: an absolute-path reference to our own origin, nothing invisible."""
    if any(unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in value):
        return False
    if any(char.isspace() and char != " " for char in value):
        return False
    path = value.split("?", 1)[0]
    if not path.startswith("/") or path[1:2] in ("/", "\\"):
        return False
    if "\\" in path:
        return False
    # "/..//evil.com" and "/.//evil.com" collapse to "//evil.com" once dot segments go
    return not _remove_dot_segments(path).startswith("//")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 for an absolute path (the trailing-slash detail does not matter here)."""
    output: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    return "/" + "/".join(output)
