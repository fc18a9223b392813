"""Header rules of the proxy (SPEC section 4), pure: values in, values out, no I/O.

- Hop-by-hop fields (RFC 9110 section 7.6.1): ``Connection`` and every field it names, plus
  the fixed set of RFC 9110 section 7.6.1 / RFC 9112 (``Keep-Alive``, ``TE``, ``Transfer-Encoding``,
  ``Upgrade``, ``Proxy-*``, ``Trailer``), are consumed by each hop and never forwarded.
- Anti-spoofing: every header the proxy itself could set is removed from the client's request,
  case-insensitively, all repeated copies, and in the underscore spelling too: CGI/WSGI-style
  upstreams map ``X-Forwarded-User`` and ``X_Forwarded_User`` to one variable
  (RFC 3875 section 4.1.18), so leaving either spelling would let a client choose its identity.
- ``X-Forwarded-For`` / ``-Proto`` / ``-Host`` (the de facto form of RFC 7239's ``Forwarded``):
  values from peers inside ``trusted_proxies`` are kept (For is appended to); anything else is
  replaced by what the proxy saw on the connection. ``Forwarded`` and the other forwarding
  variants are dropped from untrusted peers, so an upstream cannot be fooled through them.
- Identity headers: claim values, lists comma-joined, never with CR, LF, NUL or other control
  characters (RFC 9110 section 5.5: such field values are invalid and enable header injection),
  nor with whitespace around them, which parsers strip (the upstream would read another value);
  a list entry holding a comma is left out (it would be read as two), and so are lone surrogates,
  which a JSON claim can hold but no field value can carry. A header whose field line
  (``Name: value``) would exceed ``MAX_IDENTITY_FIELD`` bytes is not sent at all, never cut
  short: a shortened group list, or a last entry cut in two, would be another identity.

This module is on the hot path of every proxied request: names are lower-cased and the sets are
frozen once, at import.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

from multidict import CIMultiDict, MultiMapping

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 9110 section 7.6.1 and RFC 9112 section 7; Proxy-Connection is the pre-standard
# spelling still sent by some clients, and equally hop-by-hop.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

DEFAULT_IDENTITY_HEADERS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "X-Forwarded-User": "sub",
        "X-Forwarded-Email": "email",
        "X-Forwarded-Preferred-Username": "preferred_username",
        "X-Forwarded-Groups": "groups",
    }
)

# Whole families of names that only the proxy may set (normalised: lower case, "-" for "_").
SPOOFABLE_PREFIXES: Final = ("x-auth-request-", "x-authproxy-")

# Set by the proxy on every request, so a client's copies (any spelling) are always dropped.
SET_BY_PROXY: Final = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"})

# Other forwarding fields upstream frameworks read; believed only from trusted proxies.
_FORWARDING_VARIANTS: Final = frozenset(
    {
        "forwarded",
        "x-real-ip",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-ssl",
        "x-forwarded-scheme",
        "x-client-ip",
    }
)

# The longest identity field line (``Name: value``, UTF-8) sent. nginx (a field line must fit one
# of its 8 KiB large_client_header_buffers), Apache (LimitRequestFieldSize), gunicorn and aiohttp
# (limit_request_field_size, max_field_size) refuse longer ones by default with 400 or 431.
MAX_IDENTITY_FIELD: Final = 8190

_FORWARDED_PROTOS: Final = frozenset({"http", "https"})
_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._:+/=@-]{1,128}")
_HOST_RE: Final = re.compile(r"[A-Za-z0-9.:\[\]_-]{1,255}")
# RFC 9110 section 5.5: CR, LF and NUL are never valid; other controls (except HTAB) are
# obsolete and rejected by many parsers, so a value containing any of them is not emitted.
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A claim value is emitted only if the upstream reads back exactly that value: RFC 9110 section
# 5.5 has parsers strip whitespace around a field value, so " alice" would arrive as "alice".
# Lone surrogates (JSON's "\ud800", not Unicode text) have no UTF-8 bytes at all.
_UNSAFE_CLAIM_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
_AROUND: Final = " \t"


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-")


@functools.lru_cache(maxsize=256)
def _normalized_set(names: frozenset[str]) -> frozenset[str]:
    # Callers pass the same few per-route frozensets on every request: normalise each once.
    return frozenset(_normalize(n) for n in names)


# end-to-end fields a client's Connection header cannot have dropped on the way upstream
_NEVER_CONNECTION_OPTIONS: Final = frozenset({"host"})


def field_tokens(values: Iterable[str]) -> list[str]:
    """The lower-case tokens of comma-separated field values, in order, empty list elements
    left out (RFC 9110 section 5.6.1): ``Connection``, ``Transfer-Encoding``, ``Upgrade``."""
    return [token for token in (part.strip().lower() for value in values for part in value.split(",")) if token]


def connection_listed(headers: Mapping[str, str]) -> frozenset[str]:
    """Lower-case field names listed in every ``Connection`` header (RFC 9110 section 7.6.1)."""
    if isinstance(headers, MultiMapping):
        values: list[str] = headers.getall("Connection", [])
    else:
        single = headers.get("Connection")
        values = [single] if single else []
    return frozenset(field_tokens(values)) if values else frozenset()


def strip_hop_by_hop(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """A copy of ``headers`` without hop-by-hop fields, including those named in ``Connection``."""
    listed = connection_listed(headers)
    drop = HOP_BY_HOP | listed if listed else HOP_BY_HOP
    return CIMultiDict([(name, value) for name, value in headers.items() if name.lower() not in drop])


def without_own_cookies(headers: CIMultiDict[str], names: frozenset[str]) -> CIMultiDict[str] | None:
    """``headers`` less the ``Set-Cookie`` fields that name one of the proxy's own cookies
    (``names`` and their ``<name>_*`` flow cookies); None when there is none to remove.

    An upstream setting the proxy's session cookie would sign its user in as whoever that cookie
    names (or out): the session cookie is the proxy's, as the identity headers are.
    """
    values = headers.getall("Set-Cookie", ())
    if not values or not any(_is_named(value.split("=", 1)[0].strip(), names) for value in values):
        return None
    return CIMultiDict(
        (name, value)
        for name, value in headers.items()
        if name.lower() != "set-cookie" or not _is_named(value.split("=", 1)[0].strip(), names)
    )


def is_spoofable(normalized: str, names: frozenset[str]) -> bool:
    """True for a normalised name the proxy could set: in ``names`` or in a reserved family."""
    return normalized in names or normalized.startswith(SPOOFABLE_PREFIXES)


def strip_spoofable(headers: Mapping[str, str], names: frozenset[str]) -> CIMultiDict[str]:
    """A copy without any header the proxy could set (``names``, ``X-Auth-Request-*``, ``X-Authproxy-*``).

    Comparison is case-insensitive with ``_`` treated as ``-``; every repeated copy goes.
    """
    wanted = _normalized_set(names)
    return CIMultiDict((name, value) for name, value in headers.items() if not is_spoofable(_normalize(name), wanted))


def remove_cookie(cookie_header: str | None, names: frozenset[str]) -> str | None:
    """``cookie_header`` without the cookies in ``names`` nor their ``<name>_*`` variants (flow cookies).

    Other cookies are kept byte for byte, in order. None when nothing is left (drop the header).
    A pair holding such a cookie after whitespace (``theme=dark authproxy_session=...``) goes
    whole: aiohttp's parser, which reads the session cookie, takes whitespace as a separator too.
    """
    if not cookie_header:
        return None
    if not any(name in cookie_header for name in names):
        return cookie_header
    kept: list[str] = []
    for pair in cookie_header.split(";"):
        pair = pair.strip()
        if not pair:
            continue
        if any(_is_named(word.split("=", 1)[0], names) for word in pair.split()):
            continue
        kept.append(pair)
    return "; ".join(kept) if kept else None


def _is_named(cookie_name: str, names: frozenset[str]) -> bool:
    """Whether ``cookie_name`` is one of ``names`` or a ``<name>_*`` variant of one."""
    return cookie_name in names or any(cookie_name.startswith(n + "_") for n in names)


def peer_is_trusted(peer_ip: str | None, trusted_proxies: Sequence[IPNetwork]) -> bool:
    """True when the connection's peer address lies in one of ``trusted_proxies``."""
    if not peer_ip or not trusted_proxies:
        return False
    try:
        address = ipaddress.ip_address(peer_ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d
        return any(address in net or address.ipv4_mapped in net for net in trusted_proxies)
    return any(address in net for net in trusted_proxies)


def client_address(
    peer_ip: str | None, forwarded_for: Sequence[str], trusted_proxies: Sequence[IPNetwork]
) -> str | None:
    """The client's address: the peer's, or behind ``trusted_proxies`` the one the nearest of them
    saw (the rightmost ``X-Forwarded-For`` entry that is not itself a trusted proxy).

    Entries left of that one are the client's to write and never believed. A trusted proxy that
    wrote no usable entry leaves the peer's address.
    """
    if not forwarded_for or not peer_is_trusted(peer_ip, trusted_proxies):
        return peer_ip
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop.split("%", 1)[0])
        except ValueError:
            return peer_ip
        if not peer_is_trusted(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer_ip


def _first_token(value: str | None) -> str:
    if not value:
        return ""
    return value.split(",", 1)[0].strip()


def _believed_forwarded_host(existing_host: str | None, *, peer_trusted: bool) -> str | None:
    """The first ``X-Forwarded-Host`` when a trusted peer sent it and it is a well-formed host."""
    forwarded_host = _first_token(existing_host) if peer_trusted else ""
    return forwarded_host if forwarded_host and _HOST_RE.fullmatch(forwarded_host) else None


def original_host(host: str | None, existing_host: str | None, *, peer_trusted: bool) -> str | None:
    """The host a request was first sent to: a trusted proxy's ``X-Forwarded-Host``, else ``host``.

    Forward-auth sub-requests (Traefik ``forwardAuth``, Envoy ``ext_authz``) reach the proxy
    with its own address as ``Host`` and the visitor's host in ``X-Forwarded-Host``; only a
    peer in ``trusted_proxies`` is believed, and only a well-formed host.
    """
    return _believed_forwarded_host(existing_host, peer_trusted=peer_trusted) or host


def forwarded_values(
    peer_ip: str | None,
    existing_xff: str | None,
    existing_proto: str | None,
    existing_host: str | None,
    scheme: str,
    host: str | None,
    *,
    peer_trusted: bool,
) -> dict[str, str]:
    """``X-Forwarded-For/Proto/Host`` for a peer already judged trusted or not."""
    values: dict[str, str] = {}
    chain = existing_xff.strip() if peer_trusted and existing_xff else ""
    if peer_ip:
        values["X-Forwarded-For"] = f"{chain}, {peer_ip}" if chain else peer_ip
    elif chain:
        values["X-Forwarded-For"] = chain
    proto = _first_token(existing_proto).lower() if peer_trusted else ""
    values["X-Forwarded-Proto"] = proto if proto in _FORWARDED_PROTOS else scheme
    forwarded_host = _believed_forwarded_host(existing_host, peer_trusted=peer_trusted)
    if forwarded_host:
        values["X-Forwarded-Host"] = forwarded_host
    elif host and not _CONTROL_RE.search(host):
        values["X-Forwarded-Host"] = host
    return values


def forwarded_headers(
    peer_ip: str | None,
    existing_xff: str | None,
    existing_proto: str | None,
    existing_host: str | None,
    scheme: str,
    host: str | None,
    trusted_proxies: Sequence[IPNetwork],
) -> dict[str, str]:
    """``X-Forwarded-For`` (appended for trusted peers, replaced otherwise), ``-Proto`` and ``-Host``.

    Proto and Host come from the request when the peer is trusted and sent them, else from the
    connection itself (``scheme``, the ``Host`` the client used).
    """
    trusted = peer_is_trusted(peer_ip, trusted_proxies)
    return forwarded_values(peer_ip, existing_xff, existing_proto, existing_host, scheme, host, peer_trusted=trusted)


def request_id(existing: str | None, trusted: bool) -> str:
    """The request id: a trusted peer's sane ``X-Request-Id`` (<= 128 safe characters), else a new one.

    Ids from untrusted peers are not believed, so a client cannot make its requests look like
    someone else's in the logs.
    """
    if trusted and existing and _REQUEST_ID_RE.fullmatch(existing):
        return existing
    return _REQUEST_IDS.new()


class _RandomIds:
    """128-bit random ids as hex, from the OS's CSPRNG read in blocks rather than per id.

    One ``getrandom`` call per request is a measurable part of the fast path; one per 256 ids
    is not. The block is read with ``secrets.token_bytes``; ids are never reused. Used from the
    event loop's thread (request handling), so the offset needs no lock.
    """

    ID_BYTES: Final = 16
    BLOCK_IDS: Final = 256

    def __init__(self) -> None:
        self._block = b""
        self._offset = 0

    def new(self) -> str:
        offset = self._offset
        if offset >= len(self._block):
            self._block, offset = secrets.token_bytes(self.ID_BYTES * self.BLOCK_IDS), 0
        self._offset = offset + self.ID_BYTES
        return self._block[offset : offset + self.ID_BYTES].hex()

    def forget(self) -> None:
        """Drop the unused part of the block (a forked child must not repeat its parent's ids)."""
        self._block, self._offset = b"", 0


_REQUEST_IDS: Final = _RandomIds()
os.register_at_fork(after_in_child=_REQUEST_IDS.forget)


def _claim_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        text = str(value)
        # the ends by hand: an anchored alternative would cost the regex a try at every position
        if text and (text[0] in _AROUND or text[-1] in _AROUND):
            return None
        return None if _UNSAFE_CLAIM_RE.search(text) else text
    return None


def field_size(name: str, value: str) -> int:
    """Bytes of the field line ``name: value`` as sent (UTF-8), without its CRLF."""
    return len(name) + 2 + (len(value) if value.isascii() else len(value.encode()))


def identity_header_values(
    claims: Mapping[str, Any], mapping: Mapping[str, str], too_large: list[tuple[str, int]] | None = None
) -> dict[str, str]:
    """Header name -> value for each claim present; lists comma-joined; unsafe values never emitted.

    In a list, an unsafe entry, or one holding a comma, is left out and the others are kept. A
    header longer than ``MAX_IDENTITY_FIELD`` is left out whole, and ``(name, size)`` appended to
    ``too_large``.
    """
    values: dict[str, str] = {}
    for header, claim in mapping.items():
        value = claims.get(claim)
        if value is None:
            continue
        if isinstance(value, list | tuple):
            # an entry holding a comma would be read as several by whoever splits the list
            parts = [text for text in (_claim_text(item) for item in value) if text and "," not in text]
            text = ",".join(parts) if parts else None
        else:
            text = _claim_text(value)
        if not text:
            continue
        # a UTF-8 character is at most 4 bytes: most values are measured by their length alone
        if len(text) * 4 + len(header) + 2 > MAX_IDENTITY_FIELD:
            size = field_size(header, text)
            if size > MAX_IDENTITY_FIELD:
                if too_large is not None:
                    too_large.append((header, size))
                continue
        values[header] = text
    return values


def build_upstream_headers(
    incoming: Mapping[str, str],
    *,
    peer_ip: str | None,
    peer_trusted: bool,
    scheme: str,
    request_id: str,
    strip_names: frozenset[str] = frozenset(),
    strip_cookies: frozenset[str] = frozenset(),
    add: Mapping[str, str] = MappingProxyType({}),
    keep_host: bool = True,
    drop: frozenset[str] = frozenset(),
) -> CIMultiDict[str]:
    """The request headers the upstream receives, in one pass over the client's.

    Drops hop-by-hop fields (and those ``Connection`` names), everything the proxy could set
    (``strip_names`` plus the reserved families, any spelling), forwarding fields the proxy sets
    or does not believe, the cookies in ``strip_cookies`` and any lower-case name in ``drop``;
    ``Host`` only when ``keep_host`` is false (the HTTP client then names the upstream). Then
    sets ``X-Forwarded-*``, ``X-Request-Id`` and ``add`` (identity headers), replacing copies.
    """
    # a Connection option never removes Host: the route was chosen by it (RFC 9110 section 7.6.1
    # lets a proxy ignore options that name end-to-end fields)
    hop = HOP_BY_HOP | (connection_listed(incoming) - _NEVER_CONNECTION_OPTIONS)
    wanted = _normalized_set(strip_names)
    untrusted_forwarding = frozenset() if peer_trusted else _FORWARDING_VARIANTS
    client_host: str | None = None
    xff: list[str] = []
    proto: str | None = None
    fwd_host: str | None = None
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        if lower in hop or lower in drop:
            continue
        normalized = lower.replace("_", "-")
        if normalized in SET_BY_PROXY:
            # only the canonical spellings from a trusted peer feed the new values
            if peer_trusted and lower == normalized:
                if lower == "x-forwarded-for":
                    xff.append(value)
                elif lower == "x-forwarded-proto" and proto is None:
                    proto = value
                elif lower == "x-forwarded-host" and fwd_host is None:
                    fwd_host = value
            continue
        if is_spoofable(normalized, wanted) or normalized in untrusted_forwarding:
            continue
        if lower == "host":
            client_host = value
            if not keep_host:
                continue
        elif lower == "cookie" and strip_cookies:
            remaining = remove_cookie(value, strip_cookies)
            if remaining is None:
                continue
            value = remaining
        out.add(name, value)
    forwarded = forwarded_values(
        peer_ip, ", ".join(xff) or None, proto, fwd_host, scheme, client_host, peer_trusted=peer_trusted
    )
    for name, value in forwarded.items():
        out[name] = value
    out["X-Request-Id"] = request_id
    for name, value in add.items():
        out[name] = value
    return out
