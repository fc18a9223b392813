"""What the fast path takes, and how it frames its answers (pure; see :mod:`authproxy.fast_path`).

- :func:`parse_head`: a request head as llhttp reads it (RFC 9112 sections 2-5), or None for
  anything unusual (refused by llhttp, non-ASCII, a body, an upgrade, too big).
- :func:`simple_path`: an origin-form target (RFC 9112 section 3.2.1) whose raw path is also its
  decoded path, outside the auth prefix.
- :func:`answer_head`: the status line and fields of an answer,
  completed the way aiohttp completes them (RFC 9112 section 6: Content-Length or chunked; no
  body for HEAD, 1xx, 204 and 304; ``Date`` per RFC 9110 section 6.6.1).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Final, Generic, TypeVar

import httptools
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_parser import SINGLETON_HEADERS

from authproxy.headers import HOP_BY_HOP, connection_listed
from authproxy.proxy import has_dot_segments, under_auth_prefix
from authproxy.sessions.record import SessionRecord

# aiohttp's own request-line and field-line limit: a head above it goes to aiohttp, which answers it
MAX_HEAD: Final = 8190
MAX_FIELDS: Final = 100
EMPTY_BODY_STATUSES: Final = frozenset({204, 304, *range(100, 200)})
_NO_BODY_FIELDS: Final = frozenset({"content-length", "transfer-encoding", "upgrade", "expect"})
V = TypeVar("V")


@dataclass
class RequestHead:
    """What llhttp read from one request head."""

    method: str
    target: str
    version: str
    fields: list[tuple[str, str]]
    keep_alive: bool


class _HeadCollector:
    """httptools callbacks for one head (the parser calls these by name)."""

    __slots__ = ("complete", "fields", "url")

    def __init__(self) -> None:
        self.url = b""
        # decoded as they come: parse_head has checked that the head is ASCII
        self.fields: list[tuple[str, str]] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp leaves trailing whitespace on a value, which is not part of it (RFC 9112 section 5.1)
        self.fields.append((name.decode("ascii"), value.decode("ascii").rstrip(" \t")))

    def on_headers_complete(self) -> None:
        self.complete = True


def parse_head(head: bytes) -> RequestHead | None:
    """The request in ``head`` (request line and fields up to the blank line), or None if not simple.

    None for anything llhttp refuses, a protocol switch, non-ASCII bytes, too many fields: such
    requests are for aiohttp to judge.
    """
    if len(head) > MAX_HEAD or not head.isascii():
        return None
    collector = _HeadCollector()
    parser = httptools.HttpRequestParser(collector)
    try:
        parser.feed_data(head)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return None
    fields = collector.fields
    if not collector.complete or len(fields) > MAX_FIELDS:
        return None
    close = False
    singletons: set[str] = set()
    for name, value in fields:
        lower = name.lower()
        if lower in _NO_BODY_FIELDS:
            return None
        if lower in SINGLETON_HEADERS:
            # a field that may appear once (User-Agent, Content-Type...) given twice: aiohttp's
            # parser refuses it (400), and both paths must answer a request alike
            if lower in singletons:
                return None
            singletons.add(lower)
        # a browser's "keep-alive" is not split into tokens: only a value that could say close
        if lower == "connection" and not close and "close" in value.lower():
            close = any(token.strip().lower() == "close" for token in value.split(","))
    version = parser.get_http_version()
    # RFC 9112 section 9.3: HTTP/1.1 persists unless either side says close
    return RequestHead(
        parser.get_method().decode("ascii"),
        collector.url.decode("ascii"),
        version,
        fields,
        version == "1.1" and not close,
    )


def simple_path(target: str, auth_prefix: str) -> tuple[str, str] | None:
    """``(path, query)`` of an origin-form target the fast path may route on, or None.

    Without ``%`` the decoded path (what routes and the dot-segment check see on the aiohttp
    path) is the raw one, byte for byte. A path with ``;parameters`` (``;jsessionid=...``) is
    taken too: whoever routes it must still check that dropping them keeps the route
    (:func:`authproxy.proxy.another_route_once_normalised`), as aiohttp's path does.
    """
    if not target.startswith("/") or target.startswith("//"):
        return None
    path, _, query = target.partition("?")
    if "%" in path or "\\" in path or "#" in target or "//" in path or has_dot_segments(path):
        return None
    if path == auth_prefix or under_auth_prefix(path, auth_prefix):
        return None
    return path, query


def answer_head(
    method: str, status: int, reason: str, fields: Mapping[str, str], *, keep_alive: bool, date: str
) -> tuple[bytes, bool]:
    """The status line and field lines of an answer, and whether its body goes chunked.

    ``fields`` (the upstream's, or an error page's) lose their hop-by-hop members (RFC 9110
    section 7.6.1) and are completed as aiohttp completes a response: ``Content-Length`` dropped
    for 1xx, 204 and 304; chunked when a body has no length; a default ``Content-Type`` for a
    body; ``Date`` and ``Server`` unless given; ``Connection: close`` when the connection ends.
    One pass over the fields: this runs for every answer of the fast path.
    """
    listed = connection_listed(fields)
    drop = HOP_BY_HOP | listed if listed else HOP_BY_HOP
    no_body_status = status in EMPTY_BODY_STATUSES
    lines = [f"HTTP/1.1 {status} {reason}\r\n"]
    length: str | None = None
    typed = dated = named = False
    for name, value in fields.items():
        lower = name.lower()
        if lower in drop:
            continue
        if lower == "content-length":
            if no_body_status:
                continue
            if length is None:
                length = value
        elif lower == "content-type":
            typed = True
        elif lower == "date":
            dated = True
        elif lower == "server":
            named = True
        lines.append(f"{name}: {value}\r\n")
    chunked = False
    if not (method == "HEAD" or no_body_status):
        if length is None:
            chunked = True
            lines.append("Transfer-Encoding: chunked\r\n")
        if length != "0" and not typed:
            lines.append("Content-Type: application/octet-stream\r\n")
    if not dated:
        lines.append(f"Date: {date}\r\n")
    if not named:
        lines.append(f"Server: {SERVER_SOFTWARE}\r\n")
    if not keep_alive:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape"), chunked


class RecordMemo(Generic[V]):
    """Values derived from one session record for one route, kept while that record stands.

    A session's record is replaced, never changed in place, whenever the session changes
    (refresh, last use, new claims; see :mod:`authproxy.sessions.cache`): another record object
    is another key, so whatever was derived from the old one is derived again. A lookup also
    requires the record's claims and tokens to be the very objects seen when the value was
    derived. Records are held weakly: an entry goes when its record does (a session that ended
    leaves nothing here), and an id reused by a later object never matches. Bounded: emptied
    when full.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[int, int], _MemoEntry[V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, record: SessionRecord, route: object) -> V | None:
        """The value derived from ``record`` for ``route``, or None when there is none (any more)."""
        entry = self._entries.get((id(record), id(route)))
        if (
            entry is None
            or entry.record() is not record
            or entry.route is not route
            or entry.claims is not record.claims
            or entry.access_token is not record.access_token
            or entry.id_token is not record.id_token
        ):
            return None
        return entry.value

    def put(self, record: SessionRecord, route: object, value: V) -> None:
        entries = self._entries
        if len(entries) >= self.max_entries:
            entries.clear()
        key = (id(record), id(route))

        def forget(ref: weakref.ref[SessionRecord]) -> None:
            entry = entries.get(key)
            if entry is not None and entry.record is ref:
                del entries[key]

        reference = weakref.ref(record, forget)
        entries[key] = _MemoEntry(reference, route, record.claims, record.access_token, record.id_token, value)


@dataclass(frozen=True, slots=True)
class _MemoEntry(Generic[V]):
    record: weakref.ref[SessionRecord]
    route: object
    claims: object
    access_token: str | None
    id_token: str | None
    value: V


class _Clock:
    """The HTTP ``Date`` value, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def http_date(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True)
        return self._value


CLOCK: Final = _Clock()
