"""A lean, pooled keep-alive HTTP/1.1 client for forwarding to upstreams (RFC 9112).

The proxy forwards plain HTTP over this client instead of aiohttp's: it does one thing (send a
request the forwarder already built, stream the answer back) on asyncio Protocols, and lets
``httptools`` (llhttp, the C parser Node.js uses) parse responses. Per request that costs a
fraction of a general-purpose client's CPU. WebSockets stay on aiohttp.

What it implements, by RFC 9112 section:

- 3 and 3.2: request line in origin-form (the target exactly as the forwarder encoded it),
  ``Host`` first; the upstream's authority when the route does not pass the client's.
- 5: field lines written as given, repeated fields kept; CR, LF and NUL refused (no injection).
  Response field lines longer than ``max_line`` are a bad response.
- 6.1-6.3 and 7.1: request bodies keep the client's ``Content-Length``, else go chunked;
  ``Content-Length: 0`` for body-less methods that define content (RFC 9110 section 8.6).
  Response body length: none for HEAD, 1xx, 204 and 304; chunked and Content-Length decoded by
  llhttp; otherwise delimited by the connection close. 1xx interim responses are skipped
  (RFC 9110 section 15.2); 101 on a plain request is a bad response.
- 9.3: persistence. HTTP/1.1 connections persist unless either side says ``close``; HTTP/1.0
  only with ``keep-alive``, and never after a response with Transfer-Encoding (6.1). A
  connection goes back to the pool only when both messages were complete; anything unfinished,
  failed or close-delimited is closed.
- 9.3.1: a request that failed on a pooled connection before any response byte (the upstream
  closed it while idle) is retried once on a new connection, when the method is idempotent
  (RFC 9110 section 9.2.2) and there is no body to resend.
- 9.6: idle pooled connections are closed after ``KEEPALIVE_TIMEOUT``, before upstreams
  (commonly 60-75 s) close them under us.

Flow control: the response body is buffered up to ``read_bufsize`` bytes, then the upstream
transport stops reading until the forwarder takes the buffer; a slow client therefore slows the
upstream through TCP, and memory stays flat. Request bodies wait for the upstream socket to drain.

Errors (``UpstreamHTTPError.kind`` is the metrics label); messages never quote the target,
headers or bodies::

    UpstreamHTTPError
    +-- UpstreamConnectError   "refused"       TCP connect, DNS or TLS handshake failed
    +-- UpstreamBadResponse    "bad_response"  unparsable or oversized response head
    +-- UpstreamReset          "reset"         connection closed or reset mid-exchange

Timeouts are the caller's: it wraps ``request()`` and ``read()`` in ``asyncio.timeout``, or
passes ``head_timeout`` (a ``deadline`` in loop time to ``read()``) by which the response head, or
the next body bytes, must have come; past it they raise ``TimeoutError``. A deadline costs no
timer per request: each connection keeps one timer, moved lazily (:mod:`authproxy.deadlines`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, cast

import httptools
from multidict import CIMultiDict
from yarl import URL

from authproxy.deadlines import LazyDeadline

# Upstream keep-alive connections idle longer than this are closed by us first.
KEEPALIVE_TIMEOUT: Final = 30.0
MAX_LINE: Final = 16 * 1024
# A response head (status line and all fields) larger than this is refused whatever its lines.
MAX_HEAD: Final = 64 * MAX_LINE
READ_BUFSIZE: Final = 256 * 1024

# RFC 9110 section 9.2.2: may be repeated without changing the outcome.
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Methods whose requests carry no defined content; all others get "Content-Length: 0" when they
# have no body, as aiohttp did (RFC 9110 section 8.6: a server may otherwise wait or answer 411).
_NO_CONTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "CONNECT", "TRACE"})
_TARGET_UNSAFE: Final = re.compile(r"[\x00-\x20\x7f]")
_REASON_CONTROL: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CHUNK_END: Final = b"\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"


def _tls_context() -> ssl.SSLContext:
    # What aiohttp's default (verified) context is: the system trust store, hostname checks,
    # and ALPN http/1.1 so servers that speak h2 do not pick it. Built at import because loading
    # the trust store blocks.
    context = ssl.create_default_context()
    context.set_alpn_protocols(("http/1.1",))
    return context


TLS_CONTEXT: Final = _tls_context()


class UpstreamHTTPError(Exception):
    """Base of this client's errors; ``kind`` names it for metrics, ``strerror`` for logs."""

    kind = "reset"

    def __init__(self, message: str, *, strerror: str | None = None) -> None:
        super().__init__(message)
        self.strerror = strerror or message


class UpstreamConnectError(UpstreamHTTPError):
    kind = "refused"


class UpstreamBadResponse(UpstreamHTTPError):
    kind = "bad_response"


class UpstreamReset(UpstreamHTTPError):
    """Closed or reset mid-exchange; ``before_response`` when not one response byte had come."""

    kind = "reset"

    def __init__(self, message: str, *, strerror: str | None = None, before_response: bool = False) -> None:
        super().__init__(message, strerror=strerror)
        self.before_response = before_response


# ---------------------------------------------------------------- pure protocol logic


@dataclass(frozen=True)
class Endpoint:
    """Where an origin's connections go, and the ``Host`` value naming it (RFC 9112 section 3.2)."""

    host: str
    port: int
    tls: bool
    authority: str

    @classmethod
    def parse(cls, origin: str) -> Endpoint:
        url = URL(origin)
        if url.scheme not in ("http", "https") or not url.host or url.port is None:
            raise ValueError("upstream origin must be http:// or https:// with a host")
        # host_port_subcomponent drops the scheme's default port and brackets IPv6, as clients do
        return cls(url.host, url.port, url.scheme == "https", url.host_port_subcomponent or url.host)


class RequestFraming(enum.Enum):
    NONE = "none"  # no body and none expected
    EMPTY = "empty"  # no body, announced as Content-Length: 0
    LENGTH = "length"  # the client's Content-Length, bytes passed as they come
    CHUNKED = "chunked"  # unknown length: chunked transfer coding


class ResponseFraming(enum.Enum):
    NO_BODY = "no-body"
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until-close"


def request_framing(method: str, headers: Mapping[str, str], *, has_body: bool) -> RequestFraming:
    """How the request body is delimited upstream (RFC 9112 section 6.1-6.2)."""
    if "Content-Length" in headers:
        return RequestFraming.LENGTH if has_body else RequestFraming.NONE
    if has_body:
        return RequestFraming.CHUNKED
    return RequestFraming.NONE if method in _NO_CONTENT_METHODS else RequestFraming.EMPTY


def request_head(
    method: str, target: str, headers: Mapping[str, str], *, authority: str, framing: RequestFraming
) -> bytes:
    """Request line and field lines (RFC 9112 sections 3 and 5), ``Host`` first.

    ``headers`` are sent as given, repeated ones included; ``authority`` is the ``Host`` when
    ``headers`` has none. Values decoded from the client with surrogateescape go back byte for
    byte. Raises ``ValueError`` for CR, LF or NUL anywhere, or whitespace in the target.
    """
    if _TARGET_UNSAFE.search(target) or _TARGET_UNSAFE.search(method):
        raise ValueError("request target or method holds whitespace or control characters")
    lines = [f"{method} {target} HTTP/1.1\r\n", f"Host: {headers.get('Host', authority)}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items() if name.lower() != "host")
    if framing is RequestFraming.CHUNKED:
        lines.append("Transfer-Encoding: chunked\r\n")
    elif framing is RequestFraming.EMPTY:
        lines.append("Content-Length: 0\r\n")
    text = "".join(lines)
    # one scan of the whole head: the request line ends with the first CRLF and each field line
    # with its own, so any other CR or LF came from a name or value
    if text.count("\n") != len(lines) or text.count("\r") != len(lines) or "\x00" in text:
        raise ValueError("header name or value holds CR, LF or NUL")
    return (text + "\r\n").encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class HeadTemplate:
    """A request head with the value of one field line left open (``prefix + value + suffix``)."""

    prefix: bytes
    suffix: bytes

    @classmethod
    def around(cls, head: bytes, name: str, value: str) -> HeadTemplate | None:
        """``head`` open at the value of its field line ``name: value``, or None unless that is clear.

        Clear: ``value`` (non-empty) occurs in ``head`` once, in the one field line spelt ``name``;
        the rest of the head then does not depend on it. ``name`` and ``value`` are ASCII.
        """
        line = f"\r\n{name}: ".encode("ascii")
        wanted = value.encode("ascii")
        start = head.find(line)
        if not wanted or start < 0 or head.find(line, start + 1) >= 0 or head.count(wanted) != 1:
            return None
        start += len(line)
        end = start + len(wanted)
        if head[start:end] != wanted or head[end : end + 2] != b"\r\n":
            return None
        return cls(head[:start], head[end:])

    def render(self, value: str) -> bytes:
        """The head with ``value`` in the open place; ``value`` must be a safe field value (no CR, LF, NUL)."""
        return self.prefix + value.encode("ascii") + self.suffix


def chunk_prefix(size: int) -> bytes:
    """The chunk-size line before ``size`` bytes of chunk data (RFC 9112 section 7.1)."""
    return b"%x\r\n" % size


def response_framing(
    request_method: str, status: int, *, content_length: bool, transfer_codings: tuple[str, ...]
) -> ResponseFraming:
    """How the response body is delimited (RFC 9112 section 6.3, rules 1-3 and 5-7).

    ``transfer_codings`` are the lower-case codings of every Transfer-Encoding field, in order.
    """
    if request_method == "HEAD" or 100 <= status < 200 or status in (204, 304):
        return ResponseFraming.NO_BODY
    if transfer_codings:
        # chunked must be the final coding; anything else can only end with the connection
        return ResponseFraming.CHUNKED if transfer_codings[-1] == "chunked" else ResponseFraming.UNTIL_CLOSE
    if content_length:
        return ResponseFraming.LENGTH
    return ResponseFraming.UNTIL_CLOSE


def keeps_alive(version: str, connection_tokens: frozenset[str], *, transfer_coded: bool = False) -> bool:
    """Whether the upstream lets the connection persist after this response (RFC 9112 section 9.3).

    ``transfer_coded``: the response has a Transfer-Encoding field. In HTTP/1.0 that is faulty
    framing whatever the connection options say: the sender may have kept part of the message
    back, so the connection ends after it (RFC 9112 section 6.1).
    """
    if "close" in connection_tokens:
        return False
    if transfer_coded and version != "1.1":
        return False
    if version == "1.1":
        return True
    return version == "1.0" and "keep-alive" in connection_tokens


def reusable(
    *,
    keep_alive: bool,
    framing: ResponseFraming,
    response_complete: bool,
    request_complete: bool,
    delivered: bool,
) -> bool:
    """Whether the connection may carry another request (RFC 9112 section 9.3 and 9.6).

    Only when the upstream allows it, both messages ended cleanly and the forwarder consumed
    the whole response: anything less leaves bytes of this exchange on the wire.
    """
    return (
        keep_alive
        and framing is not ResponseFraming.UNTIL_CLOSE
        and response_complete
        and request_complete
        and delivered
    )


def retryable(method: str, *, has_body: bool) -> bool:
    """Whether a request may be sent again after a pooled connection failed (RFC 9112 section 9.3.1)."""
    return method in IDEMPOTENT_METHODS and not has_body


def split_tokens(value: bytes) -> list[str]:
    """Lower-case comma-separated tokens of a field value (``Connection``, ``Transfer-Encoding``)."""
    return [token for token in (part.strip().lower() for part in value.decode("latin-1").split(",")) if token]


# ---------------------------------------------------------------- I/O


class BodySource(Protocol):
    """Where the request body comes from: ``aiohttp.StreamReader`` fits (``b""`` at the end)."""

    async def readany(self) -> bytes: ...


class _HeadDone(Exception):
    """Raised from the parser callback to stop llhttp after a HEAD response's head."""


class _Phase(enum.Enum):
    IDLE = 0
    HEAD = 1  # waiting for (more of) the response head
    BODY = 2
    DONE = 3


class _Connection(asyncio.Protocol):
    """One upstream connection, carrying one exchange at a time.

    ``data_received`` feeds llhttp, whose callbacks fill the head, then the body buffer; the
    forwarder's task waits on ``_waiter`` for either.
    """

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_handle: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        # the deadline of the wait in progress, watched by the connection's one lazy timer
        self._deadline = LazyDeadline(self.loop, self._deadline_passed)
        self._reset_exchange("GET")

    def _reset_exchange(self, method: str) -> None:
        self.method = method
        self.phase = _Phase.IDLE
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.reason = b""
        # the response's field lines as they came; decoded only when asked for (UpstreamResponse)
        self.fields: list[tuple[bytes, bytes]] = []
        self.connection_tokens: set[str] = set()
        self.transfer_codings: list[str] = []
        self.content_length = False
        self.framing = ResponseFraming.LENGTH
        self.keep_alive = False
        self.received = 0  # response bytes seen, to tell "closed while idle" from a failed answer
        self.head_bytes = 0
        self.body: list[bytes] = []
        self.buffered = 0
        self.read_paused = False
        self.error: UpstreamHTTPError | None = None
        self.callback_error: UpstreamHTTPError | None = None
        self.request_complete = False
        self.upload: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its interface
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        self._deadline.cancel()
        if self.phase is _Phase.BODY and self.framing is ResponseFraming.UNTIL_CLOSE and exc is None:
            # the close is this response's end (RFC 9112 section 6.3, rule 8)
            self.phase = _Phase.DONE
        elif self.phase in (_Phase.HEAD, _Phase.BODY):
            reason = exc.strerror if isinstance(exc, OSError) else None
            self.fail(
                UpstreamReset("upstream closed the connection", strerror=reason, before_response=self.received == 0)
            )
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.phase is not _Phase.HEAD and self.phase is not _Phase.BODY:
            # bytes nobody asked for (or past the response's end): the stream is out of step
            self.abort()
            return
        if self.phase is _Phase.HEAD:
            # llhttp keeps no limit of its own: bound what a head may take before it ends
            if self.head_bytes > MAX_HEAD:
                self.fail(UpstreamBadResponse("response head too large"))
                self.abort()
                return
            self.head_bytes += len(data)
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            if isinstance(e.__context__, _HeadDone):
                # head of a HEAD response: reusable only if nothing followed it in this read
                self._complete(clean=data.endswith(b"\r\n\r\n"))
                return
            self.fail(self.callback_error or UpstreamBadResponse("invalid response", strerror=type(e).__name__))
            self.abort()
        except httptools.HttpParserUpgrade:
            self.fail(UpstreamBadResponse("unexpected protocol switch"))
            self.abort()
        except httptools.HttpParserError as e:
            self.fail(UpstreamBadResponse("invalid response", strerror=type(e).__name__))
            self.abort()

    # -- llhttp callbacks (names fixed by httptools)

    def on_message_begin(self) -> None:
        if self.phase is not _Phase.HEAD:
            raise self._callback_fail(UpstreamBadResponse("response after the end of the response"))
        self.fields = []
        self.connection_tokens = set()
        self.transfer_codings = []
        self.content_length = False
        self.reason = b""

    def on_status(self, status: bytes) -> None:
        self.reason += status
        if len(self.reason) > MAX_LINE:
            raise self._callback_fail(UpstreamBadResponse("status line too long"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) + 2 > MAX_LINE:
            raise self._callback_fail(UpstreamBadResponse("header line too long"))
        if self.phase is _Phase.BODY:
            # a trailer field after a chunked body: never merged into the header section
            # (RFC 9110 section 6.5.1), and not forwarded either (it would need a Trailer
            # announcement and a client that asked with TE: trailers)
            return
        lower = name.lower()
        if lower == b"connection":
            self.connection_tokens.update(split_tokens(value))
        elif lower == b"transfer-encoding":
            self.transfer_codings.extend(split_tokens(value))
        elif lower == b"content-length":
            self.content_length = True
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if not 100 <= status <= 599:
            # RFC 9110 section 15: three digits, 1xx to 5xx; a client would read anything else its own way
            raise self._callback_fail(UpstreamBadResponse("status code out of range"))
        if _REASON_CONTROL.search(self.reason):
            # reason-phrase = *( HTAB / SP / VCHAR / obs-text ) (RFC 9112 section 4)
            raise self._callback_fail(UpstreamBadResponse("control character in the reason phrase"))
        if any(coding != "chunked" for coding in self.transfer_codings):
            # the proxy removes Transfer-Encoding (hop-by-hop) and would hand on still-coded bytes
            # as if plain; nginx refuses these alike
            raise self._callback_fail(UpstreamBadResponse("transfer coding other than chunked"))
        if status == 101:
            # a protocol switch nobody asked for (the plain path never sends Upgrade)
            raise self._callback_fail(UpstreamBadResponse("unexpected protocol switch"))
        if 100 <= status < 200:
            # interim response: the final one follows on the same message stream
            return
        self.status = status
        self.framing = response_framing(
            self.method,
            status,
            content_length=self.content_length,
            transfer_codings=tuple(self.transfer_codings),
        )
        self.keep_alive = keeps_alive(
            self.parser.get_http_version(),
            frozenset(self.connection_tokens),
            transfer_coded=bool(self.transfer_codings),
        )
        self.phase = _Phase.BODY
        self._wake()
        if self.method == "HEAD":
            raise _HeadDone

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered >= self.pool.read_bufsize and not self.read_paused and self.transport is not None:
            # the forwarder is behind (slow client): let TCP push back on the upstream
            self.read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.phase is _Phase.BODY:
            self._complete(clean=True)

    # -- state changes

    def _callback_fail(self, error: UpstreamHTTPError) -> UpstreamHTTPError:
        self.callback_error = error
        return error

    def _complete(self, *, clean: bool) -> None:
        self.phase = _Phase.DONE
        if not clean:
            self.keep_alive = False
        self._wake()

    def fail(self, error: UpstreamHTTPError) -> None:
        if self.error is None and self.phase is not _Phase.DONE:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def _wait(self, deadline: float | None = None) -> None:
        """Until the next event of the exchange; ``TimeoutError`` once ``deadline`` has passed."""
        self._waiter = self.loop.create_future()
        if deadline is not None:
            self._deadline.watch(deadline)
        try:
            await self._waiter
        finally:
            self._waiter = None
            self._deadline.clear()

    def _deadline_passed(self) -> None:
        waiter = self._waiter
        if not self.closed and waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError())

    # -- used by the client

    def send(self, method: str, head: bytes) -> None:
        self._reset_exchange(method)
        self.phase = _Phase.HEAD
        if self.closed or self.transport is None or self.transport.is_closing():
            self.error = UpstreamReset("upstream closed the connection", before_response=True)
            return
        self.transport.write(head)

    def write(self, *data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise UpstreamReset("upstream closed the connection")
        self.transport.writelines(data)

    async def drain(self) -> None:
        if self._write_paused and not self.closed:
            self._drain = self.loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    async def wait_head(self, deadline: float | None = None) -> None:
        while self.error is None and self.phase is _Phase.HEAD:
            await self._wait(deadline)
        if self.error is not None and self.phase is not _Phase.DONE:
            raise self.error

    def read_nowait(self) -> bytes | None:
        """The buffered body (``b""`` at its end), ``None`` when nothing is there yet."""
        if self.body:
            body = self.body
            data = body[0] if len(body) == 1 else b"".join(body)
            self.body = []
            self.buffered = 0
            if self.read_paused and self.transport is not None:
                self.read_paused = False
                self.transport.resume_reading()
            return data
        if self.phase is _Phase.DONE:
            return b""
        if self.error is not None:
            raise self.error
        return None

    async def read(self, deadline: float | None = None) -> bytes:
        while True:
            data = self.read_nowait()
            if data is not None:
                return data
            await self._wait(deadline)

    def at_eof(self) -> bool:
        return self.phase is _Phase.DONE and not self.body

    def finish(self, *, delivered: bool) -> None:
        """End the exchange: back to the pool when reusable, else closed."""
        upload = self.upload
        if upload is not None and not upload.done():
            upload.cancel()
        keep = not self.closed and reusable(
            keep_alive=self.keep_alive,
            framing=self.framing,
            response_complete=self.phase is _Phase.DONE and self.error is None,
            request_complete=self.request_complete,
            delivered=delivered,
        )
        self.phase = _Phase.IDLE
        self.upload = None
        self.body = []
        if keep:
            if self.read_paused and self.transport is not None:
                self.read_paused = False
                self.transport.resume_reading()
            self.pool.release(self)
        else:
            self.abort()

    def close(self) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


class _Pool:
    """Keep-alive connections to one endpoint; the most recently used is reused first."""

    def __init__(
        self,
        endpoint: Endpoint,
        read_bufsize: int,
        loop: asyncio.AbstractEventLoop,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.read_bufsize = read_bufsize
        self.loop = loop
        self.tls_context = tls_context
        self.idle: list[_Connection] = []
        self.live: set[_Connection] = set()

    def acquire(self) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if conn.idle_handle is not None:
                conn.idle_handle.cancel()
                conn.idle_handle = None
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def connect(self) -> _Connection:
        endpoint = self.endpoint
        try:
            _, conn = await self.loop.create_connection(
                lambda: _Connection(self),
                endpoint.host,
                endpoint.port,
                ssl=(self.tls_context or TLS_CONTEXT) if endpoint.tls else None,
                server_hostname=endpoint.host if endpoint.tls else None,
            )
        except OSError as e:
            # OSError covers refused, DNS (gaierror) and TLS (SSLError, certificate checks)
            raise UpstreamConnectError("cannot connect to the upstream", strerror=e.strerror) from e
        self.live.add(conn)
        return conn

    def release(self, conn: _Connection) -> None:
        conn.idle_handle = self.loop.call_later(KEEPALIVE_TIMEOUT, self._expire, conn)
        self.idle.append(conn)

    def _expire(self, conn: _Connection) -> None:
        conn.idle_handle = None
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        conn.close()

    def forget(self, conn: _Connection) -> None:
        self.live.discard(conn)
        if conn.idle_handle is not None:
            conn.idle_handle.cancel()
            conn.idle_handle = None
            with contextlib.suppress(ValueError):
                self.idle.remove(conn)

    def close(self) -> None:
        self.idle.clear()
        for conn in list(self.live):
            conn.close()
        self.live.clear()


class UpstreamResponse:
    """A response whose head has arrived; the body is read with ``read_nowait`` / ``read``.

    ``release(delivered=...)`` must be called once: it returns the connection to the pool
    when the whole exchange completed and the caller consumed the body, else closes it.
    """

    def __init__(self, conn: _Connection, request_head: bytes = b"") -> None:
        self._conn = conn
        # the head of the request this answers, as sent (see UpstreamClient.request_again)
        self.request_head = request_head
        self.status = conn.status
        self.reason = conn.reason.decode("utf-8", "surrogateescape")
        # the field lines as they came, name and value bytes, in order
        self.raw_fields = conn.fields
        self._headers: CIMultiDict[str] | None = None

    @property
    def headers(self) -> CIMultiDict[str]:
        """The response's fields, repeated ones kept, decoded once on first use."""
        if self._headers is None:
            # aiohttp's decoding, so values round-trip to the client byte for byte
            self._headers = CIMultiDict(
                (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
                for name, value in self.raw_fields
            )
        return self._headers

    def field(self, name: bytes) -> str | None:
        """The first value of field ``name`` (lower-case), without decoding all of them into ``headers``."""
        if self._headers is not None:
            return self._headers.get(name.decode("ascii"))
        for field_name, value in self.raw_fields:
            if field_name.lower() == name:
                return value.decode("utf-8", "surrogateescape")
        return None

    def read_nowait(self) -> bytes | None:
        return self._conn.read_nowait()

    async def read(self, deadline: float | None = None) -> bytes:
        """The next body bytes (``b""`` at the end); ``TimeoutError`` if none came by ``deadline``."""
        return await self._conn.read(deadline)

    def at_eof(self) -> bool:
        return self._conn.at_eof()

    def release(self, *, delivered: bool) -> None:
        self._conn.finish(delivered=delivered)


class UpstreamClient:
    """Pools per upstream origin; ``request`` sends one request and returns once its head is in."""

    def __init__(self, *, read_bufsize: int = READ_BUFSIZE, tls_context: ssl.SSLContext | None = None) -> None:
        """``tls_context`` verifies https origins (default: the system trust store)."""
        self.read_bufsize = read_bufsize
        self.tls_context = tls_context
        self._pools: dict[str, _Pool] = {}

    def close(self) -> None:
        """Close every connection, idle or in use."""
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()

    def _pool(self, origin: str) -> _Pool:
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(
                Endpoint.parse(origin), self.read_bufsize, asyncio.get_running_loop(), self.tls_context
            )
        return pool

    async def request(
        self,
        origin: str,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: BodySource | None = None,
        on_progress: Callable[[], None] | None = None,
        *,
        head_timeout: float | None = None,
        content: bytes | None = None,
    ) -> UpstreamResponse:
        """Send ``method target`` with ``headers`` (and ``body``) to ``origin``; wait for the response head.

        ``on_progress`` is called whenever a body chunk moves (the caller restarts its timeout).
        ``content`` is a small body known in advance, sent with the head in one write; ``headers``
        must then give its ``Content-Length``.
        Raises ``UpstreamHTTPError``, or ``TimeoutError`` when the head has not come within
        ``head_timeout`` seconds (connecting included); on that or on cancellation (the caller's own
        timeout) the connection closes.
        """
        pool = self._pool(origin)
        deadline = None if head_timeout is None else pool.loop.time() + head_timeout
        framing = request_framing(method, headers, has_body=body is not None)
        head = request_head(method, target, headers, authority=pool.endpoint.authority, framing=framing)
        if content is not None:
            if body is not None or headers.get("Content-Length") != str(len(content)):
                raise ValueError("content goes alone, with its Content-Length")
            head += content
        return await self._send(
            pool, method, head, framing, body, on_progress, deadline, has_content=content is not None
        )

    async def request_again(
        self, origin: str, method: str, head: bytes, *, head_timeout: float | None = None
    ) -> UpstreamResponse:
        """Send a body-less request whose head ``request`` made for ``origin`` before, as ``request`` sends it.

        ``head`` is such a request's ``UpstreamResponse.request_head``, or one rendered from a
        :class:`HeadTemplate` of it.
        """
        pool = self._pool(origin)
        deadline = None if head_timeout is None else pool.loop.time() + head_timeout
        return await self._send(pool, method, head, RequestFraming.NONE, None, None, deadline)

    async def _send(
        self,
        pool: _Pool,
        method: str,
        head: bytes,
        framing: RequestFraming,
        body: BodySource | None,
        on_progress: Callable[[], None] | None,
        deadline: float | None,
        *,
        has_content: bool = False,
    ) -> UpstreamResponse:
        conn = pool.acquire()
        reused = conn is not None
        if conn is None:
            conn = await self._connect(pool, deadline)
        try:
            try:
                await self._exchange(conn, method, head, framing, body, on_progress, deadline)
            except UpstreamReset as e:
                if not (reused and e.before_response and retryable(method, has_body=body is not None or has_content)):
                    raise
                # the upstream closed the pooled connection while it was idle: nothing was
                # processed, so a safe request goes again, once, on a new connection
                conn.finish(delivered=False)
                conn = await self._connect(pool, deadline)
                await self._exchange(conn, method, head, framing, body, on_progress, deadline)
        except BaseException:
            conn.finish(delivered=False)
            raise
        return UpstreamResponse(conn, head)

    @staticmethod
    async def _connect(pool: _Pool, deadline: float | None) -> _Connection:
        if deadline is None:
            return await pool.connect()
        async with asyncio.timeout_at(deadline):
            return await pool.connect()

    async def _exchange(
        self,
        conn: _Connection,
        method: str,
        head: bytes,
        framing: RequestFraming,
        body: BodySource | None,
        on_progress: Callable[[], None] | None,
        deadline: float | None = None,
    ) -> None:
        conn.send(method, head)
        if body is None:
            conn.request_complete = True
        else:
            conn.upload = asyncio.create_task(_upload(conn, body, framing is RequestFraming.CHUNKED, on_progress))
        await conn.wait_head(deadline)


async def _upload(conn: _Connection, body: BodySource, chunked: bool, on_progress: Callable[[], None] | None) -> None:
    """Stream the request body to the upstream as it arrives, waiting for its socket to drain."""
    try:
        while True:
            chunk = await body.readany()
            if on_progress is not None:
                on_progress()
            if not chunk:
                break
            if chunked:
                conn.write(chunk_prefix(len(chunk)), chunk, _CHUNK_END)
            else:
                conn.write(chunk)
            await conn.drain()
        if chunked:
            conn.write(_LAST_CHUNK)
        conn.request_complete = True
    except asyncio.CancelledError:
        raise
    except Exception as e:
        # the client's body broke off (it went away) or the upstream did: the exchange is over
        error = (
            e if isinstance(e, UpstreamHTTPError) else UpstreamReset("request body failed", strerror=type(e).__name__)
        )
        conn.fail(error)
        conn.abort()
