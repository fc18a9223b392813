"""Route choice (SPEC section 2): host exact > wildcard > absent, then longest path prefix.

File order never matters. A path prefix matches on segment boundaries: ``/api`` matches
``/api`` and ``/api/x`` but not ``/apix``; a prefix ending in ``/`` matches everything below it.
Pure: the table is built once from the configuration and consulted per request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar


class Matchable(Protocol):
    @property
    def host(self) -> str | None: ...

    @property
    def path_prefix(self) -> str: ...


R = TypeVar("R")

_EXACT, _WILDCARD, _ANY = 0, 1, 2


def path_matches(prefix: str, path: str) -> bool:
    """True when ``path`` lies under ``prefix`` on a segment boundary."""
    if prefix == "/" or prefix == path:
        return True
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path.startswith(prefix) and path[len(prefix)] == "/"


def host_rank(pattern: str | None, host: str) -> tuple[int, int] | None:
    """How specifically ``pattern`` matches ``host`` (lower is better), or None.

    The longer of two matching wildcards is the more specific one.
    """
    if pattern is None:
        return (_ANY, 0)
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com"
        if host.endswith(suffix) and len(host) > len(suffix):
            return (_WILDCARD, -len(suffix))
        return None
    return (_EXACT, 0) if host == pattern else None


def normalize_host(host_header: str | None) -> str:
    """Lower-case host without port; IPv6 literals keep their brackets."""
    if not host_header:
        return ""
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    # the port first, then the root's dot: "admin.example.com.:80" names admin.example.com
    return (host.rsplit(":", 1)[0] if ":" in host else host).rstrip(".")


# Host = uri-host [ ":" port ] (RFC 9110 section 7.2): an IP literal or a reg-name (RFC 3986
# unreserved, percent-encoded and sub-delims characters), then digits
_VALID_HOST: Final = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")


def is_valid_host(value: str) -> bool:
    """Whether a ``Host`` field value is well formed; any other gets a 400 (RFC 9112 section 3.2)."""
    return _VALID_HOST.fullmatch(value) is not None


def target_host_disagrees(raw_target: str, host_fields: Sequence[str]) -> bool:
    """Whether an absolute-form request target (``GET http://a.example/x``) names another host
    than the ``Host`` field.

    aiohttp takes the request's host from such a target (RFC 9112 section 3.2.2) while the
    ``Host`` field goes upstream as it came: the route and its sign-in would be chosen for one
    host and the upstream would serve another. Origin-form targets (``/x``) never disagree.
    """
    if raw_target.startswith("/") or "://" not in raw_target:
        return False
    authority = raw_target.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    return len(host_fields) != 1 or normalize_host(authority) != normalize_host(host_fields[0])


@dataclass(frozen=True)
class RouteTable(Generic[R]):
    """Routes with their match rules, pre-sorted so the first match is the best."""

    entries: tuple[tuple[str | None, str, R], ...]

    @classmethod
    def build(cls, routes: Sequence[tuple[Matchable, R]]) -> RouteTable[R]:
        return cls(tuple((m.host, m.path_prefix, value) for m, value in routes))

    def choose(self, host_header: str | None, path: str) -> R | None:
        """The route for a request, or None (404)."""
        host = normalize_host(host_header)
        best: tuple[tuple[int, int], int] | None = None
        chosen: R | None = None
        for pattern, prefix, value in self.entries:
            rank = host_rank(pattern, host)
            if rank is None or not path_matches(prefix, path):
                continue
            key = (rank, -len(prefix))
            if best is None or key < best:
                best, chosen = key, value
        return chosen
