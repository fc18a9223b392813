"""Streaming HTTP and WebSocket forwarding to upstreams (SPEC section 4).

- Messages are forwarded as an intermediary per RFC 9110 section 3.7 and 7.6: hop-by-hop
  fields dropped (see :mod:`authproxy.headers`), ``X-Forwarded-*`` and ``X-Request-Id`` set,
  the target path built from the route (``strip_path_prefix``, the upstream's base path) with the
  query passed byte for byte.
- Bodies stream both ways: the request body is handed to the upstream as it arrives, the response
  is written to the client chunk by chunk as received (server-sent events and chunked responses
  arrive as written), never re-compressed; an upstream ``Content-Length`` is kept. Memory stays
  flat whatever the size: only the read buffers of each side are ever held.
- WebSocket upgrades (RFC 6455) are proxied both ways: text, binary, ping/pong and close codes.
- Plain HTTP goes over :mod:`authproxy.upstream_http`, a lean pooled keep-alive HTTP/1.1 client
  (RFC 9112) on asyncio protocols and the llhttp parser: a fraction of aiohttp's client CPU per
  request. WebSockets use one aiohttp ``ClientSession`` per upstream origin. Both are opened on
  first use and closed by the app's lifecycle (``close()``).
- Timeouts: the route timeout bounds connecting and waiting for response headers (504; the wait
  restarts while the request body is still flowing), and each idle gap while reading the body.
  A long download that keeps moving is never cut. Refused, reset or garbled answers raise
  ``UpstreamUnavailable`` (502), timeouts ``UpstreamTimeout`` (504); once the response has
  started, a failure can only close the client's connection, so that is what happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Final, NoReturn, Protocol
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp import HttpVersion11, WSCloseCode, WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from authproxy import pages
from authproxy.errors import UpstreamTimeout, UpstreamUnavailable
from authproxy.headers import (
    IPNetwork,
    build_upstream_headers,
    connection_listed,
    peer_is_trusted,
    strip_hop_by_hop,
    without_own_cookies,
)
from authproxy.metrics import Metrics
from authproxy.routing import R, RouteTable
from authproxy.upstream_http import (
    KEEPALIVE_TIMEOUT,
    MAX_LINE,
    READ_BUFSIZE,
    UpstreamClient,
    UpstreamHTTPError,
    UpstreamResponse,
)

LOG: Final = logging.getLogger("authproxy.proxy")

# READ_BUFSIZE, KEEPALIVE_TIMEOUT and the header line limit are shared with the HTTP client
# (see authproxy.upstream_http for why each is what it is), so both paths behave alike.
MAX_HEADER_LINE: Final = MAX_LINE
MAX_WS_MESSAGE: Final = 16 * 1024 * 1024
WS_CLOSE_TIMEOUT: Final = 10.0
# how often an open WebSocket's session is looked up again: a sign-out, back-channel logout or
# expiry closes the socket within this time (code 1008), as it refuses the session's requests
WS_SESSION_CHECK_INTERVAL: Final = 10.0
SessionCheck = Callable[[], Awaitable[bool]]
# The client must not get headers it did not send: no default User-Agent, Accept, Content-Type.
_SKIP_AUTO_HEADERS: Final = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
# aiohttp answers "Expect: 100-continue" itself before the handler runs; forwarding it would
# make the upstream client wait for a second 100.
_HTTP_DROP: Final = frozenset({"expect"})
# The WebSocket client builds its own handshake (RFC 6455 section 4.1); extensions such as
# permessage-deflate are negotiated per hop.
_WS_DROP: Final = frozenset(
    {
        "expect",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
# Close codes that must not be sent in a close frame (RFC 6455 section 7.4.1).
_UNSENDABLE_CLOSE_CODES: Final = frozenset({1004, 1005, 1006, 1015})
_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})


class RouteMatch(Protocol):
    @property
    def path_prefix(self) -> str: ...


class UpstreamRoute(Protocol):
    """What the forwarder reads from a route (``authproxy.config.RouteConfig`` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def upstream(self) -> str: ...

    @property
    def match(self) -> RouteMatch: ...

    @property
    def pass_host_header(self) -> bool: ...

    @property
    def strip_path_prefix(self) -> bool: ...

    @property
    def websocket(self) -> bool: ...

    @property
    def timeout(self) -> float: ...


@dataclass(frozen=True)
class UpstreamTarget:
    """An upstream URL taken apart once: origin for the pool, ws origin, base path."""

    origin: str
    ws_origin: str
    base_path: str

    @classmethod
    def parse(cls, upstream: str) -> UpstreamTarget:
        parts = urlsplit(upstream)
        scheme = parts.scheme.lower()
        ws_scheme = "wss" if scheme == "https" else "ws"
        return cls(f"{scheme}://{parts.netloc}", f"{ws_scheme}://{parts.netloc}", parts.path.rstrip("/"))


def has_dot_segments(path: str) -> bool:
    """True when a decoded path holds ``.`` or ``..`` segments (also ``..;x`` and with ``\\``).

    Routes are chosen on the path as sent; an upstream that normalises ``/public/../admin``
    would serve a path the gate never judged (RFC 3986 section 5.2.4), so such paths are refused.
    """
    if "." not in path:
        return False
    return any(segment.split(";", 1)[0] in (".", "..") for segment in path.replace("\\", "/").split("/"))


def normalized_path(path: str) -> str:
    """A decoded ``path`` as servers that normalise it read it: ``\\`` as ``/``, each segment's
    ``;parameters`` dropped (Tomcat, Jetty), empty segments merged (nginx ``merge_slashes``).

    Routes are chosen on the path as sent; when this reading would choose another route, the
    request is refused (``/admin;x/secret`` and ``//admin/x`` must not pass as the ``/`` route).
    """
    if ";" not in path and "\\" not in path and "//" not in path:
        return path
    segments = [segment.split(";", 1)[0] for segment in path.replace("\\", "/").split("/")]
    inner = [segment for segment in segments[1:-1] if segment]
    return "/" + "/".join([*inner, segments[-1]]) if len(segments) > 1 else "/"


def under_auth_prefix(path: str, auth_prefix: str) -> bool:
    """Whether a decoded ``path`` lies under ``auth_prefix`` as sent or as normalising servers read it.

    aiohttp's router matches the endpoints on the path with ``%2F`` still escaped and takes
    ``//``, ``;parameters`` and ``\\`` literally: ``/oauth2%2Fstart`` or ``//oauth2/start`` would
    reach the catch-all and go upstream, although the prefix is authproxy's alone.
    """
    return normalized_path(path).startswith(auth_prefix + "/")


def another_route_once_normalised(routes: RouteTable[R], host: str | None, path: str, route: R | None) -> bool:
    """Whether a server that normalises ``path`` (:func:`normalized_path`) would serve another route's.

    ``route`` is what ``routes`` chose for the path as sent; when the normalised reading chooses
    another (``/admin;x/secret`` or ``//admin/x`` as the ``/`` route), the request is refused.
    """
    normalized = normalized_path(path)
    return normalized != path and routes.choose(host, normalized) is not route


class AmbiguousPath(ValueError):
    """A path whose route prefix cannot be removed without guessing (a ``%2F`` straddles it)."""


def upstream_path(base_path: str, raw_path: str, prefix: str, *, strip: bool) -> str:
    """The path sent upstream: ``raw_path`` (still percent-encoded) less the route prefix, under ``base_path``.

    Raises :class:`AmbiguousPath` when the raw path spells the prefix in a way that does not
    split into the prefix's own segments.
    """
    path = raw_path or "/"
    if strip:
        path = _strip_prefix(path, prefix)
    return base_path.rstrip("/") + path


def _strip_prefix(raw_path: str, prefix: str) -> str:
    bare = prefix.rstrip("/")
    if not bare:
        return raw_path
    if raw_path.startswith(bare) and (len(raw_path) == len(bare) or raw_path[len(bare)] == "/"):
        return raw_path[len(bare) :] or "/"
    # The route matched the decoded path but the raw one spells the prefix with %-escapes: drop
    # the raw segments that decode to the prefix's segments, one for one. A raw segment holding
    # an escaped slash decodes to two: what follows the prefix cannot be told apart, so refuse.
    wanted = bare.split("/")[1:]
    segments = raw_path.split("/")[1:]
    if len(segments) < len(wanted) or any(unquote(raw) != want for raw, want in zip(segments, wanted, strict=False)):
        raise AmbiguousPath(raw_path)
    return "/" + "/".join(segments[len(wanted) :])


def is_websocket_upgrade(method: str, request_headers: Mapping[str, str]) -> bool:
    """A WebSocket opening handshake (RFC 6455 section 4.1): GET, ``Upgrade: websocket``, ``Connection: upgrade``."""
    if method != "GET":
        return False
    upgrade = request_headers.get("Upgrade", "")
    if "websocket" not in (token.strip().lower() for token in upgrade.split(",")):
        return False
    return "upgrade" in connection_listed(request_headers)


def _failure_kind(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, UpstreamHTTPError):
        return error.kind
    if isinstance(error, aiohttp.ClientConnectorError):
        return "refused"
    if isinstance(error, aiohttp.ClientResponseError):
        return "bad_response"
    return "reset"


def _describe(error: BaseException) -> str:
    # the class and the OS reason only: aiohttp messages may quote URLs with query strings
    reason = getattr(error, "strerror", None)
    return f"{type(error).__name__}: {reason}" if reason else type(error).__name__


class _HeaderDeadline:
    """The route timeout until response headers, restarted whenever the request body moves.

    An upload that keeps flowing must not be cut: the upstream usually answers only after it
    has read the whole body.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.loop = asyncio.get_running_loop()
        self.timeout = asyncio.timeout(seconds)
        self.active = False

    async def __aenter__(self) -> _HeaderDeadline:
        await self.timeout.__aenter__()
        self.active = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.active = False
        await self.timeout.__aexit__(exc_type, exc, tb)

    def extend(self) -> None:
        if self.active:
            self.timeout.reschedule(self.loop.time() + self.seconds)


class Forwarder:
    """Forwards requests to route upstreams over one pooled client per upstream origin."""

    def __init__(
        self,
        *,
        trusted_proxies: Sequence[IPNetwork] = (),
        metrics: Metrics | None = None,
        read_bufsize: int = READ_BUFSIZE,
    ) -> None:
        self.trusted_proxies = tuple(trusted_proxies)
        self.metrics = metrics
        self.read_bufsize = read_bufsize
        self._http = UpstreamClient(read_bufsize=read_bufsize)
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._targets: dict[str, UpstreamTarget] = {}

    async def close(self) -> None:
        """Close every upstream pool (the app's cleanup, after in-flight requests finish)."""
        self._http.close()
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    def _target(self, upstream: str) -> UpstreamTarget:
        target = self._targets.get(upstream)
        if target is None:
            target = self._targets[upstream] = UpstreamTarget.parse(upstream)
        return target

    def _session(self, origin: str) -> aiohttp.ClientSession:
        session = self._sessions.get(origin)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_TIMEOUT)
            session = aiohttp.ClientSession(
                connector=connector,
                middlewares=(_redirect_refuses_the_handshake,),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                read_bufsize=self.read_bufsize,
                max_line_size=MAX_HEADER_LINE,
                max_field_size=MAX_HEADER_LINE,
                requote_redirect_url=False,
                trust_env=False,
            )
            self._sessions[origin] = session
        return session

    async def forward(
        self,
        request: web.Request,
        route: UpstreamRoute,
        *,
        request_id: str,
        add_headers: Mapping[str, str] = _NO_HEADERS,
        strip_names: frozenset[str] = frozenset(),
        strip_cookies: frozenset[str] = frozenset(),
        still_signed_in: SessionCheck | None = None,
        identified: bool = False,
    ) -> web.StreamResponse:
        """Forward ``request`` to ``route``'s upstream and stream the answer back.

        ``still_signed_in`` (for a signed-in WebSocket handshake) is asked every
        ``WS_SESSION_CHECK_INTERVAL`` while a WebSocket is open; False closes it.

        ``add_headers`` (identity headers, already safe) replace any client copies;
        ``strip_names`` are the lower-case header names the proxy could set for this route
        (removed in every spelling along with ``X-Auth-Request-*`` / ``X-Authproxy-*``);
        ``strip_cookies`` the proxy's own cookie names (and their ``<name>_*`` flow cookies).
        ``identified``: the request goes with an identity (a session or a bearer token), so an
        answer without ``Cache-Control`` is marked ``private`` (see :func:`upstream_answer_fields`).
        Raises ``UpstreamUnavailable`` / ``UpstreamTimeout`` only before the response starts.
        """
        if has_dot_segments(request.path):
            return pages.error_response(
                request, 400, "Bad request", "This request path is not accepted.", request_id=request_id
            )
        target = self._target(route.upstream)
        rel = request.rel_url
        try:
            path = upstream_path(target.base_path, rel.raw_path, route.match.path_prefix, strip=route.strip_path_prefix)
        except AmbiguousPath:
            return pages.error_response(
                request, 400, "Bad request", "This request path is not accepted.", request_id=request_id
            )
        query = rel.raw_query_string
        path_qs = f"{path}?{query}" if query else path
        # RFC 9110 section 7.8: an HTTP/1.0 request's Upgrade is ignored (RFC 6455 section 4.1
        # asks for HTTP/1.1); it goes on as a plain request, without its hop-by-hop fields
        websocket = request.version >= HttpVersion11 and is_websocket_upgrade(request.method, request.headers)
        if websocket and not route.websocket:
            return pages.error_response(
                request,
                403,
                "WebSocket not allowed",
                "This address does not accept WebSocket connections.",
                request_id=request_id,
            )
        upstream_headers = build_upstream_headers(
            request.headers,
            peer_ip=request.remote,
            peer_trusted=peer_is_trusted(request.remote, self.trusted_proxies),
            scheme=request.scheme,
            request_id=request_id,
            strip_names=strip_names,
            strip_cookies=strip_cookies,
            add=add_headers,
            keep_host=route.pass_host_header,
            drop=_WS_DROP if websocket else _HTTP_DROP,
        )
        if websocket:
            return await self._forward_websocket(
                request, route, target, path_qs, upstream_headers, request_id, still_signed_in
            )
        return await self._forward_http(
            request, route, target, path_qs, upstream_headers, request_id, strip_cookies, identified=identified
        )

    async def open_plain(
        self,
        route: UpstreamRoute,
        method: str,
        raw_path: str,
        query: str,
        upstream_headers: CIMultiDict[str] | bytes,
        *,
        request_id: str,
    ) -> UpstreamResponse:
        """Send a body-less request to ``route``'s upstream and wait for the response head.

        The path and query are the client's, still percent-encoded; failures are logged and
        counted as for :meth:`forward` and raise ``UpstreamUnavailable`` / ``UpstreamTimeout``.
        ``upstream_headers`` may instead be a whole request head made by an earlier call for
        the same route, method, path and query (its ``request_head``, or rendered from a
        ``HeadTemplate`` of it), sent as it is. The caller streams the body and must
        ``release`` the response (the fast path).
        """
        target = self._target(route.upstream)
        try:
            # the client's deadline watch, not a timer per request (see upstream_http)
            if isinstance(upstream_headers, bytes):
                return await self._http.request_again(
                    target.origin, method, upstream_headers, head_timeout=route.timeout
                )
            path = upstream_path(target.base_path, raw_path, route.match.path_prefix, strip=route.strip_path_prefix)
            return await self._http.request(
                target.origin,
                method,
                f"{path}?{query}" if query else path,
                upstream_headers,
                head_timeout=route.timeout,
            )
        except (TimeoutError, UpstreamHTTPError) as e:
            self._raise_for(route, request_id, e, client_gone=False)

    def body_failed(self, route: UpstreamRoute, request_id: str, error: BaseException) -> None:
        """Log and count an upstream that failed after the response had started."""
        self._failed(route, request_id, error, started=True)

    def client_stalled(self, route: UpstreamRoute, request_id: str) -> None:
        """Log a client cut off for not taking its answer within the route's timeout."""
        LOG.info(
            "client stopped taking its answer: connection closed after the route timeout",
            extra={"fields": {"request_id": request_id, "route": route.name, "timeout_s": route.timeout}},
        )

    def _failed(self, route: UpstreamRoute, request_id: str, error: BaseException, *, started: bool) -> str:
        kind = _failure_kind(error)
        if self.metrics is not None:
            self.metrics.count_upstream_error(route.name, kind)
        LOG.warning(
            "upstream failed after the response started" if started else "upstream failed",
            extra={
                "fields": {
                    "request_id": request_id,
                    "route": route.name,
                    "kind": kind,
                    "upstream": self._target(route.upstream).origin,
                    "error": _describe(error),
                }
            },
        )
        return kind

    def _raise_for(self, route: UpstreamRoute, request_id: str, error: BaseException, client_gone: bool) -> NoReturn:
        if client_gone:
            # the client hung up mid-upload: not the upstream's fault, nobody to answer
            LOG.debug("client went away before the upstream answered", extra={"fields": {"request_id": request_id}})
            raise UpstreamUnavailable("client disconnected") from error
        kind = self._failed(route, request_id, error, started=False)
        if kind == "timeout":
            raise UpstreamTimeout(f"route {route.name}: no answer within {route.timeout:g}s") from error
        raise UpstreamUnavailable(f"route {route.name}: {kind}") from error

    async def _forward_http(
        self,
        request: web.Request,
        route: UpstreamRoute,
        target: UpstreamTarget,
        path_qs: str,
        upstream_headers: CIMultiDict[str],
        request_id: str,
        own_cookies: frozenset[str] = frozenset(),
        *,
        identified: bool = False,
    ) -> web.StreamResponse:
        deadline = _HeaderDeadline(route.timeout)
        try:
            async with deadline:
                upstream = await self._http.request(
                    target.origin,
                    request.method,
                    path_qs,
                    upstream_headers,
                    body=request.content if request.body_exists else None,
                    on_progress=deadline.extend,
                )
        except (TimeoutError, UpstreamHTTPError) as e:
            transport = request.transport
            self._raise_for(route, request_id, e, client_gone=transport is None or transport.is_closing())
        complete = False
        try:
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=strip_hop_by_hop(
                    upstream_answer_fields(upstream, own_cookies, route.name, request_id, identified=identified)
                ),
            )
            try:
                await response.prepare(request)
            except ConnectionError:
                return response
            complete = await self._stream_body(request, route, upstream, response, request_id)
            return response
        finally:
            # an unfinished body leaves the connection in an unknown state: never reuse it
            upstream.release(delivered=complete)

    async def _stream_body(
        self,
        request: web.Request,
        route: UpstreamRoute,
        upstream: UpstreamResponse,
        response: web.StreamResponse,
        request_id: str,
    ) -> bool:
        """Copy the body chunk by chunk as it arrives; True when it was delivered whole."""
        while True:
            try:
                chunk = upstream.read_nowait()
                if chunk is None:
                    # only the wait for the upstream counts as idle, not a slow client's drain;
                    # the timer is armed only when there is nothing to send yet
                    async with asyncio.timeout(route.timeout):
                        chunk = await upstream.read()
            except (TimeoutError, UpstreamHTTPError) as e:
                self._failed(route, request_id, e, started=True)
                _abort(request)
                return False
            try:
                # a client that stopped reading holds no exchange open: the wait for it to take
                # enough of the answer to write again is bounded like the wait for the upstream
                async with asyncio.timeout(route.timeout):
                    if not chunk:
                        await response.write_eof()
                        return True
                    if upstream.at_eof():
                        # the common small response: its last bytes and the end in one write
                        await response.write_eof(chunk)
                        return True
                    await response.write(chunk)
            except ConnectionError:
                LOG.debug("client went away mid-response", extra={"fields": {"request_id": request_id}})
                return False
            except TimeoutError:
                self.client_stalled(route, request_id)
                request[pages.CUT_OFF] = True
                _abort(request)
                return False

    async def _forward_websocket(
        self,
        request: web.Request,
        route: UpstreamRoute,
        target: UpstreamTarget,
        path_qs: str,
        upstream_headers: CIMultiDict[str],
        request_id: str,
        still_signed_in: SessionCheck | None,
    ) -> web.StreamResponse:
        if not web.WebSocketResponse().can_prepare(request).ok:
            # no Sec-WebSocket-Key, an unknown version: refused before the upstream is dialled
            # with the user's identity
            return pages.error_response(
                request, 400, "Bad request", "This WebSocket handshake is not valid.", request_id=request_id
            )
        session = self._session(target.origin)
        url = URL(target.ws_origin + path_qs, encoded=True)
        protocols = [
            token.strip()
            for value in request.headers.getall("Sec-WebSocket-Protocol", [])
            for token in value.split(",")
            if token.strip()
        ]
        try:
            async with asyncio.timeout(route.timeout):
                upstream_ws = await session.ws_connect(
                    url,
                    headers=upstream_headers,
                    protocols=protocols,
                    autoclose=False,
                    autoping=False,
                    max_msg_size=MAX_WS_MESSAGE,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=WS_CLOSE_TIMEOUT),
                )
        except aiohttp.WSServerHandshakeError as e:
            if 300 <= e.status < 500:
                # the application itself refused (auth, not found) or sent the client elsewhere:
                # say so with its status (and where it points)
                refused = pages.error_response(
                    request,
                    e.status,
                    "WebSocket refused",
                    "The application refused the WebSocket connection.",
                    request_id=request_id,
                )
                location = e.headers.get("Location") if e.headers is not None and e.status < 400 else None
                if location is not None:
                    refused.headers["Location"] = location
                return refused
            self._raise_for(route, request_id, e, client_gone=False)
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            self._raise_for(route, request_id, e, client_gone=False)
        client_ws = web.WebSocketResponse(
            protocols=(upstream_ws.protocol,) if upstream_ws.protocol else (),
            autoclose=False,
            autoping=False,
            max_msg_size=MAX_WS_MESSAGE,
            timeout=WS_CLOSE_TIMEOUT,
        )
        if upstream_ws.protocol:
            # the upstream's choice, which it made from every Sec-WebSocket-Protocol line the
            # client sent (RFC 6455 section 4.1: one list); aiohttp's handshake reads only the
            # first line and would otherwise answer with no subprotocol
            client_ws.headers["Sec-WebSocket-Protocol"] = upstream_ws.protocol
        try:
            await client_ws.prepare(request)
            request[pages.UPGRADED] = True
            await _relay(client_ws, upstream_ws, still_signed_in, request_id=request_id)
        except ConnectionError:
            LOG.debug("client went away during the WebSocket handshake", extra={"fields": {"request_id": request_id}})
        finally:
            await _close_within(upstream_ws)
        return client_ws


_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})


async def _redirect_refuses_the_handshake(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """A redirect answering a WebSocket handshake is the upstream's answer, never followed.

    ``ws_connect`` follows redirects (and cannot be told not to): the WebSocket, with the
    request's identity headers, would be opened at whatever address the upstream names.
    """
    response = await handler(request)
    if response.status in _REDIRECT_STATUSES:
        response.close()
        raise aiohttp.WSServerHandshakeError(
            response.request_info,
            (response,),
            status=response.status,
            message="redirected",
            headers=response.headers,
        )
    return response


def upstream_answer_fields(
    upstream: UpstreamResponse, own_cookies: frozenset[str], route: str, request_id: str, *, identified: bool = False
) -> CIMultiDict[str]:
    """The upstream answer's fields, less any ``Set-Cookie`` of the proxy's own cookies (logged).

    An answer to a request forwarded with an identity (a session or a bearer token) that says
    nothing about caching gets ``Cache-Control: private`` (RFC 9111 section 5.2.2.7): a shared
    cache in front of the proxy must not store one user's page and serve it to others. An
    answer with any ``Cache-Control`` is the application's decision and stays as it is.
    """
    fields = upstream.headers
    kept = without_own_cookies(fields, own_cookies) if own_cookies else None
    if kept is not None:
        LOG.warning(
            "upstream tried to set authproxy's own cookie: removed",
            extra={"fields": {"route": route, "request_id": request_id}},
        )
        fields = kept
    if identified and upstream.status >= 200 and "Cache-Control" not in fields:
        if kept is None:
            fields = fields.copy()  # the upstream's own fields stay as they came
        fields["Cache-Control"] = "private"
    return fields


def _abort(request: web.Request) -> None:
    # The status line is gone: closing without the final chunk (or short of Content-Length)
    # is the only way to tell the client the body is incomplete (RFC 9112 section 8).
    transport = request.transport
    if transport is not None:
        transport.abort()


WebSocketLike = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


def _close_code(code: object) -> int:
    if isinstance(code, int) and (1000 <= code <= 4999) and code not in _UNSENDABLE_CLOSE_CODES:
        return code
    return int(WSCloseCode.OK)


async def _close_within(ws: WebSocketLike, *, code: int = WSCloseCode.OK, message: bytes = b"") -> None:
    """Close ``ws``, waiting at most ``WS_CLOSE_TIMEOUT`` in all for the peer's close frame.

    aiohttp waits ``WS_CLOSE_TIMEOUT`` for each message until the close frame comes, so a peer
    that keeps sending would keep the connection open for ever; cut short, the close drops it.
    """
    with contextlib.suppress(TimeoutError, ConnectionError, aiohttp.ClientError):
        async with asyncio.timeout(WS_CLOSE_TIMEOUT):
            await ws.close(code=code, message=message)


async def _pipe(source: WebSocketLike, sink: WebSocketLike, abnormal: int) -> None:
    """Copy messages from ``source`` to ``sink`` until either closes; pass the close code on."""
    while True:
        msg = await source.receive()
        kind = msg.type
        if kind is WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif kind is WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif kind is WSMsgType.PING:
            await sink.ping(msg.data)
        elif kind is WSMsgType.PONG:
            await sink.pong(msg.data)
        elif kind is WSMsgType.CLOSE:
            code = _close_code(msg.data)
            reason = (msg.extra or "").encode("utf-8")[:123]  # a close reason fits in 123 bytes
            await _close_within(sink, code=code, message=reason)
            await _close_within(source, code=code, message=reason)
            return
        elif kind is WSMsgType.CLOSING:
            # the other direction is closing this socket
            return
        else:
            # CLOSED or ERROR: the source went away without a close frame
            await _close_within(sink, code=abnormal)
            return


async def _watch_session(still_signed_in: SessionCheck) -> None:
    """Return once the session is gone (looked up every ``WS_SESSION_CHECK_INTERVAL``)."""
    while True:
        await asyncio.sleep(WS_SESSION_CHECK_INTERVAL)
        try:
            if not await still_signed_in():
                return
        except Exception:  # never taken as "still signed in"
            LOG.exception("WebSocket session check failed")
            return


async def _relay(
    client_ws: web.WebSocketResponse,
    upstream_ws: aiohttp.ClientWebSocketResponse,
    still_signed_in: SessionCheck | None = None,
    *,
    request_id: str = "",
) -> None:
    """Pump both directions until either side closes or the session ends, then make sure both
    are closed."""
    tasks = [
        asyncio.create_task(_pipe(client_ws, upstream_ws, int(WSCloseCode.GOING_AWAY))),
        asyncio.create_task(_pipe(upstream_ws, client_ws, int(WSCloseCode.BAD_GATEWAY))),
    ]
    watcher = asyncio.create_task(_watch_session(still_signed_in)) if still_signed_in is not None else None
    cut = False
    try:
        done, _ = await asyncio.wait([*tasks, *([watcher] if watcher else [])], return_when=asyncio.FIRST_COMPLETED)
        if any(task in done and not task.cancelled() and task.exception() is None for task in tasks):
            # a direction ended with a close: the other pipe is still in its closing handshake
            # (the peer's close passed on, its reply awaited, the same code echoed back), which
            # cutting it short would replace with a 1000 of the proxy's own
            await asyncio.wait(tasks, timeout=2 * WS_CLOSE_TIMEOUT)
        elif watcher is not None and watcher.done() and not any(task.done() for task in tasks):
            # signed out, logged out by the provider, expired: the socket goes as its requests would
            # (the pipes stop first: a socket is received from by one task at a time)
            LOG.info("WebSocket closed: its session ended", extra={"fields": {"request_id": request_id}})
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await _close_within(client_ws, code=int(WSCloseCode.POLICY_VIOLATION), message=b"session ended")
            await _close_within(upstream_ws, code=int(WSCloseCode.GOING_AWAY))
    except asyncio.CancelledError:
        # cut: the shutdown deadline passed, or the client's connection is gone. The proxy is
        # going away (RFC 6455 section 7.4.1), which 1000 would not say: a client takes that as
        # the end of the conversation and does not reconnect
        cut = True
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
        for task in tasks:
            if not task.done():
                task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, ConnectionError | aiohttp.ClientError):
                LOG.warning("WebSocket relay failed", extra={"fields": {"error": _describe(result)}})
        if cut:
            going_away = int(WSCloseCode.GOING_AWAY)
            await asyncio.gather(_close_within(client_ws, code=going_away), _close_within(upstream_ws, code=going_away))
        else:
            await _close_within(client_ws)
