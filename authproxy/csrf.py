"""The cross-origin (CSRF) guard of a route: may this unsafe request come from where it says?

Modelled on Go 1.25's ``net/http.CrossOriginProtection``, which reads the Fetch Metadata
request header ``Sec-Fetch-Site`` (W3C Fetch Metadata Request Headers, section 2.1) and falls
back to ``Origin`` (RFC 6454 section 7; Fetch Standard, "origin header") for browsers that do
not send it:

1. Safe methods (``GET``, ``HEAD``, ``OPTIONS``; RFC 9110 section 9.2.1) pass, except a WebSocket
   upgrade: it is a ``GET`` whose connection then carries whatever the page sends, and SameSite
   does not stop a same-site sibling host from opening one (cross-site WebSocket hijacking), so it
   is judged like an unsafe method.
2. An ``Origin`` on the route's trusted list passes.
3. ``Sec-Fetch-Site: same-origin`` or ``none`` (the user typed or bookmarked it) passes; any other
   value (``same-site``, ``cross-site``, anything unknown) is refused.
4. Without ``Sec-Fetch-Site``, the ``Origin``'s host (and port) must equal ``Host``; ``Origin:
   null`` (sandboxed frames, some redirects) never does.
5. With neither header, the request passes: it does not come from a browser, so no browser
   carried a victim's cookie into it.

Requests authenticated with a bearer token are exempt; the caller decides that (the token, not
a cookie, is what authenticates them, and a cross-site page cannot set ``Authorization``).

Origins are compared in the normal form of :func:`authproxy.origins.normalize_origin`.

Pure: values in, a verdict out; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from authproxy.origins import normalize_origin

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class CrossOriginVerdict:
    """Whether a request may pass the guard, and why (for the log line)."""

    allowed: bool
    reason: str


def trusted_origin_set(origins: Iterable[str]) -> frozenset[str]:
    """The normalised forms of a route's trusted origins (config validation refuses bad ones)."""
    return frozenset(o for o in (normalize_origin(value) for value in origins) if o is not None)


def _scheme_and_host(origin: str) -> tuple[str, str] | None:
    """The scheme of ``origin`` and the ``Host`` value a browser sends to its server (host, and
    port unless default); None for anything that is not such an origin (``http://[::1`` included)."""
    try:
        parts = urlsplit(origin)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
            return None
        port = parts.port
    except ValueError:  # an unclosed or invalid IPv6 literal, a port out of range
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return scheme, host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"


def _normalize_host(host: str, scheme_hint: str | None) -> str:
    host = host.strip().lower()
    for scheme, port in _DEFAULT_PORTS.items():
        if scheme_hint in (None, scheme) and host.endswith(f":{port}") and not host.endswith("]"):
            return host[: -len(f":{port}")]
    return host


def judge_cross_origin(
    *,
    method: str,
    host: str,
    origin: str | None,
    sec_fetch_site: str | None,
    trusted_origins: frozenset[str] = frozenset(),
    websocket_upgrade: bool = False,
) -> CrossOriginVerdict:
    """The guard's verdict on one request (see the module docstring for the rules, in order)."""
    if method.upper() in SAFE_METHODS and not websocket_upgrade:
        return CrossOriginVerdict(True, "safe method")
    if origin is not None:
        normalized = normalize_origin(origin)
        if normalized is not None and normalized in trusted_origins:
            return CrossOriginVerdict(True, "trusted origin")
    if sec_fetch_site is not None:
        site = sec_fetch_site.strip().lower()
        if site in ("same-origin", "none"):
            return CrossOriginVerdict(True, f"Sec-Fetch-Site {site}")
        # the header's value is the browser's; echo only known tokens into the log
        shown = site if site in ("same-site", "cross-site") else "unknown value"
        return CrossOriginVerdict(False, f"Sec-Fetch-Site {shown}")
    if origin is None:
        return CrossOriginVerdict(True, "no Origin or Sec-Fetch-Site (not a browser)")
    read = _scheme_and_host(origin)
    if read is None:
        return CrossOriginVerdict(False, "Origin is not a tuple origin (null or malformed)")
    scheme, origin_host = read
    if origin_host == _normalize_host(host, scheme):
        return CrossOriginVerdict(True, "Origin matches Host")
    return CrossOriginVerdict(False, "Origin does not match Host")
