"""The fast path: plain GET and HEAD requests served without aiohttp's web layer.

Most of the proxy's traffic is the same request over and over: a signed-in user (or anyone, on
a public route) asking for a page or an API resource with no body. For those, aiohttp's request
and response machinery costs more CPU than everything authproxy itself does. The main listener
therefore speaks to each connection through :class:`FastConnection` first: it reads a request
head, parses it with ``httptools`` (llhttp), and serves it itself only when it is the simple
case; anything else goes to aiohttp exactly as if the fast path did not exist, until aiohttp
gives the connection back.

Served here (all must hold): HTTP/1.1, GET or HEAD, no body (no ``Content-Length``, no
``Transfer-Encoding``), no ``Upgrade`` or ``Expect``, one ``Host``, an ASCII head of at most
``MAX_HEAD`` bytes, an origin-form target without ``%``, ``\\``, ``#``, ``//`` or dot segments,
outside ``auth_prefix``, on a route that exists and that the path keeps with its ``;parameters``
dropped; and either a public route, an ``optional`` route without a session cookie, a valid
session whose user the route's ``allow`` rules admit, or no session on a route that needs one
(answered with the gate's own login redirect or 401, :meth:`~authproxy.gate.Gate.unauthenticated`).
Besides, a plain GET of exactly ``/oauth2/start`` or ``/oauth2/callback`` is served by its own
aiohttp handler (:mod:`authproxy.fast_endpoints`). The session is loaded by the same
:class:`~authproxy.sessions.manager.SessionManager` as on the aiohttp path (its cache included)
and, when its access token is due, refreshed by the same
:class:`~authproxy.sessions.refresh.Refresher` (one flight per session, the store lock); the
headers the upstream gets are built by the same :func:`authproxy.headers.build_upstream_headers`
and :func:`authproxy.app.upstream_identity_headers`, and the same access log line and metrics
are written. Every other refusal (403, bearer tokens, 404, 400) happens on the aiohttp path:
when the fast path sees anything it does not serve, it hands the connection over, bytes and
all, so no check exists in two places. An outage during a refresh is answered with the error
page :mod:`authproxy.pages` makes for it, as on the aiohttp path.

What a connection repeats is worked out once: a keep-alive client mostly sends the same
request head again and again, so the parse and plan of a head, the upstream head made of it
(reused with a new request id when route, request and identity headers are unchanged) and the
answer head made of the upstream's fields are kept per connection and reused only for equal
inputs. What the allow rules and identity headers make of a session record is kept per record
object (:class:`~authproxy.fast_requests.RecordMemo`). The session itself is loaded, and its
expiry and refresh checked, for every request.

Handing over: the connection's transport is given to a fresh aiohttp ``RequestHandler`` (the
protocol the listener would have created), which receives the bytes read so far as if they had
just arrived. That happens only between requests, never while a response is being written.
Handing back: when aiohttp has answered a plain GET or HEAD and the connection is idle with
nothing of a next request read, it gives the transport back to the same :class:`FastConnection`
(:mod:`authproxy.handback`), so a browser that once needed aiohttp (a form POST, a sign-out,
``/oauth2/userinfo``) is served here again for the pages after it. A connection that keeps asking
for aiohttp's requests (``MAX_HANDOFFS_IN_ROW`` of them with none served here) stays with aiohttp.

The rest follows aiohttp's behaviour so that clients cannot tell the paths apart: the same
``client_header_timeout`` for a complete request head (slowloris), ``Date`` and ``Server``
headers, chunked responses when the upstream gave no length, ``Connection: close`` when the
connection ends, 499 in the access log when the client goes away, error pages by
:mod:`authproxy.pages`, and a graceful drain on shutdown (:class:`FastSite`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, cast

from aiohttp import web
from multidict import CIMultiDict

from authproxy import headers, pages
from authproxy.app import (
    AUTH_ROUTE_LABEL,
    Services,
    logged_identity_headers,
    record_request,
    upstream_identity_headers,
)
from authproxy.config import RouteConfig
from authproxy.cookie_header import find_cookie
from authproxy.deadlines import LazyDeadline
from authproxy.errors import AuthproxyError, SessionEnded, StoreError
from authproxy.fast_endpoints import Handler, Peer, answer_fields, endpoint_handlers, endpoint_of, make_request
from authproxy.fast_requests import (
    CLOCK,
    EMPTY_BODY_STATUSES,
    MAX_HEAD,
    RecordMemo,
    RequestHead,
    answer_head,
    parse_head,
    simple_path,
)
from authproxy.gate import Identity
from authproxy.handback import GiveBack, ReturningRequestHandler
from authproxy.identity_jwt import IdentitySigner
from authproxy.listener import serve_in_batches
from authproxy.logs import log_identity_too_large
from authproxy.policy import Policy
from authproxy.proxy import another_route_once_normalised, upstream_answer_fields
from authproxy.routing import is_valid_host
from authproxy.sessions.record import SessionRecord
from authproxy.upstream_http import HeadTemplate, UpstreamHTTPError, UpstreamResponse

LOG: Final = logging.getLogger("authproxy.fast_path")

# bytes read ahead while a response is being written, before the connection stops reading
MAX_READ_AHEAD: Final = 64 * 1024
# How long a client may leave answers untaken before the next pipelined request is started,
# when no route's timeout applies (nginx's send_timeout): answers are not piled up in memory for
# a client that sends requests and does not read
PIPELINE_DRAIN_TIMEOUT: Final = 60.0
CLIENT_CLOSED: Final = 499
_CRLFCRLF: Final = b"\r\n\r\n"
# aiohttp answers "Expect: 100-continue" itself, and never forwards it
_HTTP_DROP: Final = frozenset({"expect"})
# hand-overs to aiohttp in a row, none served here between them, after which aiohttp keeps the
# connection: a client whose requests are all aiohttp's (POSTs, refusals) would otherwise be
# handed back and forth for each
MAX_HANDOFFS_IN_ROW: Final = 8
# at shutdown, how long handlers cut at the deadline get to unwind (their finally blocks)
CUT_GRACE: Final = 1.0


# ---------------------------------------------------------------------- the connection


_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class _Derived:
    """What one session record means on one route under one policy."""

    policy: Policy
    allowed: bool
    user: str
    # None when they must be made per request (a signed identity JWT carries the time)
    headers: Mapping[str, str] | None
    # identity headers left out for their size: (name, bytes), logged for every request
    too_large: tuple[tuple[str, int], ...] = ()


def _derive(route: RouteConfig, record: SessionRecord, policy: Policy, signer: IdentitySigner | None) -> _Derived:
    identity = Identity(record.claims, record.access_token, record.id_token)
    allowed = policy.allows(identity.claims)
    headers: Mapping[str, str] | None = None
    too_large: list[tuple[str, int]] = []
    if allowed and not (route.identity_jwt and signer is not None):
        headers = MappingProxyType(upstream_identity_headers(route, identity, signer, too_large))
    return _Derived(policy, allowed, identity.sub, headers, tuple(too_large))


# route, path, query, the client's fields and its Cookie values
_Plan = tuple[RouteConfig, str, str, CIMultiDict[str], list[str]]
# method, status, reason, keep-alive, date, forwarded with an identity, the upstream's fields
_AnswerOf = tuple[str, int, str, bool, str, bool, tuple[tuple[bytes, bytes], ...]]
# route, method, target, the client's fields, identity headers
_MadeOf = tuple[RouteConfig, str, str, list[tuple[str, str]], Mapping[str, str]]


class _PageRequest:
    """The part of a request the pages and the gate's sign-in answer read: method, target, fields."""

    def __init__(self, method: str, target: str, fields: CIMultiDict[str]) -> None:
        self.method = method
        self.raw_path = target
        self.headers = fields


class _HandOff(Exception):
    """This request is for aiohttp."""


class _SignIn(Exception):
    """No session on a route that needs one: the gate's answer (login redirect or 401)."""


class _ClientGone(Exception):
    """The client closed the connection before its answer was complete."""


HandlerFactory = Callable[[], asyncio.Protocol]


class FastConnection(asyncio.Protocol):
    """One client connection: fast-path requests served here, the rest handed to aiohttp."""

    def __init__(self, site: FastSite) -> None:
        self._site = site
        self._services = site.services
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self.task: asyncio.Task[None] | None = None
        self._header_deadline = LazyDeadline(self._loop, self._header_timed_out)
        self._reading = True
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        # how long the client may take to read the last answer (its route's timeout)
        self._answer_timeout = PIPELINE_DRAIN_TIMEOUT
        self._closing = False
        self.busy = False
        # relaying an answer without a length (an event stream, a chunked or close-delimited body)
        self._streaming = False
        self.peer_ip: str | None = None
        self.peer_trusted = False
        # the Cookie fields of the last request and the session cookie (by that name) found in them
        self._cookie_fields: list[str] | None = None
        self._cookie_name = ""
        self._cookie_found: tuple[bool, str | None] = (True, None)
        # the last request head read, as it came and parsed, and the plan made for it
        self._last_head = b""
        self._last_parsed: RequestHead | None = None
        self._last_plan: _Plan | None = None
        # the last answer head written, and what it was made of
        self._last_answer: tuple[_AnswerOf, bytes, bool] | None = None
        # the upstream head of the last request, open at its request id, and what it was made of
        self._upstream_template: HeadTemplate | None = None
        self._upstream_made_of: _MadeOf | None = None
        self._handoffs_in_row = 0
        # what aiohttp's request objects read of the connection (the sign-in endpoints)
        self._peer: Peer | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast("asyncio.Transport", transport)
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if isinstance(peer, tuple) and peer else None
        # the peer of a connection does not change: judge it once, not per request
        self.peer_trusted = headers.peer_is_trusted(self.peer_ip, self._services.config.server.trusted_proxies)
        self._site.connections.add(self)
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._site.connections.discard(self)
        self._cancel_timer()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self.busy:
            if len(self._buffer) > MAX_READ_AHEAD and self._reading and self.transport is not None:
                self._reading = False
                self.transport.pause_reading()
            return
        self._next()

    def eof_received(self) -> bool | None:
        self._closing = True
        if self._streaming and self.task is not None and not self.task.done():
            # a client that closes its side while an answer without a length is being relayed
            # (a closed EventSource, a tab navigated away) has gone, as nginx and Go's servers
            # judge it: the upstream exchange ends now, not at its next writes or its timeout
            self.task.cancel()
        elif not self.busy and self.transport is not None:
            # a client that half-closed before its answer began gets the answer, then the close
            self.transport.close()
        # keep the write side open for the answer under way; over TLS the transport closes
        # after the peer's close_notify whatever this says, and asyncio logs a warning if asked
        return self._site.scheme == "http"

    # -- request by request

    def _next(self) -> None:
        """Start on the next request in the buffer, if its head is complete."""
        end = self._buffer.find(_CRLFCRLF)
        if end < 0:
            # bare-LF line endings, or a head too long for the fast path: aiohttp judges those
            if len(self._buffer) > MAX_HEAD or b"\n\n" in self._buffer:
                self._hand_off()
            return
        self._pause_timer()
        head = self._buffer[: end + 4]
        # a keep-alive client mostly repeats its request head byte for byte: read it once
        parsed = self._last_parsed
        if parsed is None or head != self._last_head:
            parsed = parse_head(head)
            if parsed is None:
                self._hand_off()
                return
            self._last_head, self._last_parsed, self._last_plan = head, parsed, None
        self.busy = True
        self.task = self._loop.create_task(self._handle(parsed, head))

    async def _handle(self, head: RequestHead, raw: bytes) -> None:
        try:
            keep_alive = await self._serve(head)
        except _HandOff:
            self.busy = False
            self._hand_off()
            return
        except asyncio.CancelledError:
            # the client went away: connection_lost has cleaned up, or it closed its side of a
            # stream (eof_received), and the answer cut short must not look complete
            if self.transport is not None and not self.transport.is_closing():
                self.transport.abort()
            return
        self._buffer = self._buffer[len(raw) :]
        if self._write_paused and keep_alive and not await self._drain(self._answer_timeout):
            # the client sends requests and takes no answers: no more are made for it
            if self.transport is not None:
                self.transport.abort()
            return
        self.busy = False
        self._handoffs_in_row = 0
        if self.transport is None or self.transport.is_closing():
            return
        if not keep_alive or self._closing:
            self.transport.close()
            return
        if not self._reading:
            self._reading = True
            self.transport.resume_reading()
        self._arm_timer()
        if self._buffer:
            self._next()

    def _hand_off(self) -> None:
        """From now on aiohttp serves this connection, starting with the bytes not yet answered."""
        transport = self.transport
        self._cancel_timer()
        self._site.connections.discard(self)
        if transport is None or transport.is_closing():
            return
        self._services.metrics.count_handover("aiohttp")
        self._handoffs_in_row += 1
        give_back = self._take_back if self._handoffs_in_row < MAX_HANDOFFS_IN_ROW else None
        handler = self._site.aiohttp_protocol(give_back)
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if not self._reading:
            self._reading = True
            transport.resume_reading()
        data, self._buffer = self._buffer, b""
        if data:
            handler.data_received(data)

    def _take_back(self, transport: asyncio.Transport) -> bool:
        """aiohttp gives the connection back, idle between requests (authproxy.handback)."""
        if self._site.stopping or self._closing or transport.is_closing():
            return False
        transport.set_protocol(self)
        self.transport = transport
        self._buffer = b""
        self._reading = True
        self._write_paused = False
        self._site.connections.add(self)
        self._arm_timer()
        self._services.metrics.count_handover("fast_path")
        return True

    # -- header timeout (slowloris), as aiohttp's keep-alive timer: one lazily moved timer per
    # connection (authproxy.deadlines), not a timer scheduled and cancelled per request

    def _arm_timer(self) -> None:
        timeout = self._site.header_timeout
        if timeout:
            self._header_deadline.watch(self._loop.time() + timeout)

    def _pause_timer(self) -> None:
        self._header_deadline.clear()

    def _cancel_timer(self) -> None:
        self._header_deadline.cancel()

    def _header_timed_out(self) -> None:
        if not self.busy and self.transport is not None:
            self.transport.close()

    def close_when_idle(self) -> None:
        """Shutdown: close now if no request is being answered, else after its answer."""
        self._closing = True
        if not self.busy and self.transport is not None:
            self.transport.close()

    # -- serving one request

    def _plan(self, head: RequestHead) -> _Plan | None:
        """Route, path, query, fields and the ``Cookie`` values of a request the fast path may take.

        Made once per distinct head on a connection: it depends on nothing else (routes and
        the auth prefix are fixed for the process), and what it returns is only read.
        """
        if head is self._last_parsed and self._last_plan is not None:
            return self._last_plan
        plan = self._make_plan(head)
        if head is self._last_parsed:
            self._last_plan = plan
        return plan

    def _make_plan(self, head: RequestHead) -> _Plan | None:
        if head.version != "1.1" or head.method not in ("GET", "HEAD"):
            return None
        services = self._services
        routed = simple_path(head.target, services.config.server.auth_prefix)
        if routed is None:
            return None
        fields: CIMultiDict[str] = CIMultiDict()
        hosts = 0
        cookies: list[str] = []
        for name, value in head.fields:
            lower = name.lower()
            if lower == "host":
                hosts += 1
            elif lower == "cookie":
                cookies.append(value)
            fields.add(name, value)
        if hosts != 1 or not is_valid_host(fields["Host"]):
            return None  # aiohttp's path refuses it
        path, query = routed
        route = services.routes.choose(fields["Host"], path)
        if route is None:
            return None
        if another_route_once_normalised(services.routes, fields["Host"], path, route):
            # /admin;x/y judged as the / route, served by Tomcat as /admin/y: aiohttp's path refuses it
            return None
        return route, path, query, fields, cookies

    async def _identity(
        self, route: RouteConfig, fields: CIMultiDict[str], cookies: list[str], request_id: str
    ) -> tuple[str | None, Mapping[str, str], bool]:
        """``(user, identity headers, served_here)``: who is signed in and what the upstream learns."""
        services = self._services
        gate, sessions = services.gate, services.sessions
        if route.auth == "none" or gate is None or sessions is None:
            return None, _NO_HEADERS, True
        if route.bearer_tokens and "Authorization" in fields:
            return None, _NO_HEADERS, False
        name = sessions.cookie_name_at(fields["Host"])
        if cookies == self._cookie_fields and name is self._cookie_name:
            clear, cookie = self._cookie_found
        else:
            clear, cookie = self._cookie_found = find_cookie(cookies, name)
            self._cookie_fields, self._cookie_name = cookies, name
        if not clear:
            return None, _NO_HEADERS, False
        session = await sessions.load(cookie, fields["Host"]) if cookie is not None else None
        if session is not None and gate.refresher.is_due(session.record, time.time()):
            # the same single-flight Refresher as on the aiohttp path; an outage it cannot ride
            # out (ProviderUnavailable, StoreUnavailable) is an error page like any other, and a
            # session that ended is no session, as Gate.session_of says
            try:
                session = await gate.refresher.ensure_fresh(session)
            except SessionEnded:
                session = None
        if session is None:
            # as Gate.check: anonymous on an optional route, else the gate's own sign-in answer
            # (a GET or HEAD is never a form POST to keep)
            if route.auth == "optional":
                return None, _NO_HEADERS, True
            raise _SignIn
        record = session.record
        policy = gate.policies[route.name]
        memo = self._site.record_memo
        derived = memo.get(record, route)
        if derived is None or derived.policy is not policy:
            derived = _derive(route, record, policy, services.signer)
            memo.put(record, route, derived)
        if not derived.allowed:
            return None, _NO_HEADERS, False
        if derived.headers is None:
            # signed identity headers carry the time: made anew for every request
            identity = Identity(record.claims, record.access_token, record.id_token)
            return derived.user, logged_identity_headers(route, identity, services.signer, request_id), True
        if derived.too_large:
            log_identity_too_large(route.name, derived.too_large, user=derived.user, request_id=request_id)
        return derived.user, derived.headers, True

    async def _serve(self, head: RequestHead) -> bool:
        """Answer one request; True when the connection may stay open. Raises _HandOff."""
        plan = self._plan(head)
        self._answer_timeout = plan[0].timeout if plan is not None else PIPELINE_DRAIN_TIMEOUT
        if plan is None:
            # not a plain request on a route: a sign-in endpoint is served here, the rest is aiohttp's
            endpoint = endpoint_of(head.method, head.target, self._site.endpoints) if head.version == "1.1" else None
            if endpoint is None:
                raise _HandOff
            return await self._serve_endpoint(head, *endpoint)
        route, path, query, fields, cookies = plan
        services = self._services
        started = time.perf_counter()
        trusted = self.peer_trusted
        request_id = headers.request_id(fields.get("X-Request-Id"), trusted)
        status = 500
        user: str | None = None
        handed_off = False
        try:
            try:
                user, added, served = await self._identity(route, fields, cookies, request_id)
            except _SignIn:
                assert services.gate is not None
                request = cast("web.Request", _PageRequest(head.method, head.target, fields))
                page = services.gate.unauthenticated(request, route)
                status = self._write_page(head, page, keep_alive=head.keep_alive)
                return head.keep_alive
            if not served:
                raise _HandOff
            made_of = (route, head.method, head.target, head.fields, added)
            template = self._upstream_template if self._same_upstream_head(made_of) else None
            upstream_request: CIMultiDict[str] | bytes
            if template is not None:
                upstream_request = template.render(request_id)
            else:
                upstream_request = headers.build_upstream_headers(
                    fields,
                    peer_ip=self.peer_ip,
                    peer_trusted=trusted,
                    scheme=self._site.scheme,
                    request_id=request_id,
                    strip_names=services.strip_by_route[route.name],
                    strip_cookies=services.session_cookie_names,
                    add=added,
                    keep_host=route.pass_host_header,
                    drop=_HTTP_DROP,
                )
            upstream = await services.forwarder.open_plain(
                route, head.method, path, query, upstream_request, request_id=request_id
            )
            if template is None:
                self._upstream_template = HeadTemplate.around(upstream.request_head, "X-Request-Id", request_id)
                self._upstream_made_of = made_of
            status = upstream.status
            return await self._relay(head, route, upstream, request_id, identified=user is not None)
        except _HandOff:
            handed_off = True
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        except _ClientGone:
            status = CLIENT_CLOSED
            return False
        except Exception as e:
            status, keep_alive = self._answer_error(head, fields, request_id, e)
            return keep_alive
        finally:
            if not handed_off:
                self._record(head, route.name, path, status, started, request_id, user)

    async def _serve_endpoint(self, head: RequestHead, handler: Handler, path: str, query: str) -> bool:
        """``/oauth2/start`` or the callback, by its own handler (authproxy.fast_endpoints)."""
        fields: CIMultiDict[str] = CIMultiDict(head.fields)
        transport = self.transport
        hosts = fields.getall("Host", ())
        if len(hosts) != 1 or not is_valid_host(hosts[0]) or transport is None:
            raise _HandOff  # aiohttp's path refuses the Host
        started = time.perf_counter()
        request_id = headers.request_id(fields.get("X-Request-Id"), self.peer_trusted)
        status = 500
        request: web.Request | None = None
        try:
            if self._peer is None:
                self._peer = Peer(transport)
            request = make_request(head.method, path, query, fields, keep_alive=head.keep_alive, peer=self._peer)
            request[pages.REQUEST_ID] = request_id
            client_ip = self._client_ip(head)
            if client_ip is not None:
                request[pages.CLIENT_IP] = client_ip
            try:
                page = await handler(request)
            except web.HTTPException as e:
                page = e
            status = self._write_page(head, page, keep_alive=head.keep_alive)
            return head.keep_alive
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        except Exception as e:
            status, keep_alive = self._answer_error(head, fields, request_id, e)
            return keep_alive
        finally:
            user = request.get(pages.USER) if request is not None else None
            self._record(head, AUTH_ROUTE_LABEL, path, status, started, request_id, user)

    def _answer_error(
        self, head: RequestHead, fields: CIMultiDict[str], request_id: str, error: Exception
    ) -> tuple[int, bool]:
        """As the app's middleware: an AuthproxyError is its page (a store outage counted), anything
        else a logged 500 that closes the connection; ``(status, keep_alive)``. Call from ``except``."""
        if isinstance(error, AuthproxyError):
            if isinstance(error, StoreError):
                self._services.metrics.count_store_error()
            return self._answer_page(head, fields, request_id, error, keep_alive=head.keep_alive), head.keep_alive
        LOG.exception("unhandled error", extra={"fields": {"request_id": request_id}})
        return self._answer_page(head, fields, request_id, None, keep_alive=False), False

    def _record(
        self, head: RequestHead, route: str, path: str, status: int, started: float, request_id: str, user: str | None
    ) -> None:
        """The access log line and request metrics of one answered request (authproxy.app.record_request)."""
        record_request(
            self._services,
            route=route,
            status=status,
            elapsed=time.perf_counter() - started,
            request_id=request_id,
            method=head.method,
            path=path,
            user=user,
            client_ip=self._client_ip(head),
        )

    def _client_ip(self, head: RequestHead) -> str | None:
        """The client's address: the peer's, or behind a trusted proxy what it forwarded."""
        if not self.peer_trusted:
            return self.peer_ip
        forwarded = [value for name, value in head.fields if name.lower() == "x-forwarded-for"]
        return headers.client_address(self.peer_ip, forwarded, self._services.config.server.trusted_proxies)

    def _same_upstream_head(self, made_of: _MadeOf) -> bool:
        """Whether the last upstream head was made of the same route, request and identity headers.

        The rest of what goes into it (the peer, the listener's scheme, the strip sets) is the
        connection's or the configuration's and does not change; only the request id differs.
        """
        last = self._upstream_made_of
        return (
            last is not None
            and last[0] is made_of[0]
            # equal headers from another record (a refresh that left the claims alone) do too
            and (last[4] is made_of[4] or last[4] == made_of[4])
            and last[1] == made_of[1]
            and last[2] == made_of[2]
            and last[3] == made_of[3]
        )

    async def _relay(
        self, head: RequestHead, route: RouteConfig, upstream: UpstreamResponse, request_id: str, *, identified: bool
    ) -> bool:
        """Stream the upstream's answer to the client; True when the connection may stay open.

        ``identified``: the request went with a session, so an answer without ``Cache-Control``
        is marked ``private`` (:func:`authproxy.proxy.upstream_answer_fields`). Like the removal
        of the proxy's own cookies, that is decided only when the answer's head changes.
        """
        delivered = False
        try:
            keep_alive = head.keep_alive and not self._closing
            date = CLOCK.http_date()
            # everything the answer's head is made of (the upstream's fields as they came)
            answer_of = (
                head.method,
                upstream.status,
                upstream.reason,
                keep_alive,
                date,
                identified,
                tuple(upstream.raw_fields),
            )
            last = self._last_answer
            if last is not None and last[0] == answer_of:
                start, chunked = last[1], last[2]
            else:
                fields = upstream_answer_fields(
                    upstream, self._services.session_cookie_names, route.name, request_id, identified=identified
                )
                start, chunked = answer_head(
                    head.method, upstream.status, upstream.reason, fields, keep_alive=keep_alive, date=date
                )
                self._last_answer = (answer_of, start, chunked)
            transport = self.transport
            if transport is None:
                return False
            empty = head.method == "HEAD" or upstream.status in EMPTY_BODY_STATUSES
            if empty:
                transport.write(start)
                delivered = True
                return keep_alive
            delivered = await self._copy_body(route, upstream, start, chunked, request_id)
            return keep_alive and delivered
        finally:
            upstream.release(delivered=delivered)

    async def _copy_body(
        self, route: RouteConfig, upstream: UpstreamResponse, start: bytes, chunked: bool, request_id: str
    ) -> bool:
        """Copy the body as it arrives (chunked when the upstream gave no length); True when whole."""
        transport = self.transport
        assert transport is not None
        pending = start
        self._streaming = chunked
        try:
            while True:
                try:
                    chunk = upstream.read_nowait()
                    if chunk is None:
                        if pending:
                            transport.write(pending)
                            pending = b""
                        # only the wait for the upstream counts as idle, not a slow client's drain
                        chunk = await upstream.read(self._loop.time() + route.timeout)
                except (TimeoutError, UpstreamHTTPError) as e:
                    self._services.forwarder.body_failed(route, request_id, e)
                    # the status line is gone: closing short is the only way to say "incomplete"
                    transport.abort()
                    return False
                if transport.is_closing():
                    raise _ClientGone
                if not chunk:
                    transport.write(pending + b"0\r\n\r\n" if chunked else pending)
                    return True
                if chunked:
                    pending += b"%x\r\n%b\r\n" % (len(chunk), chunk)
                else:
                    pending += chunk
                if upstream.at_eof():
                    transport.write(pending + b"0\r\n\r\n" if chunked else pending)
                    return True
                transport.write(pending)
                pending = b""
                if self._write_paused and not await self._drain(route.timeout):
                    self._services.forwarder.client_stalled(route, request_id)
                    transport.abort()
                    raise _ClientGone
        finally:
            self._streaming = False

    async def _drain(self, seconds: float) -> bool:
        """Wait until the client has taken enough of what was written to write again; False if it
        has not within ``seconds`` (a client that stopped reading holds no exchange open).

        A half-closed client or a shutdown (_closing) still reads at its own pace: only a
        transport that is gone ends the wait early (connection_lost resolves the future).
        """
        while self._write_paused and self.transport is not None and not self.transport.is_closing():
            self._drained = self._loop.create_future()
            try:
                async with asyncio.timeout(seconds):
                    await self._drained
            except TimeoutError:
                return False
            finally:
                self._drained = None
        return True

    def _answer_page(
        self,
        head: RequestHead,
        fields: CIMultiDict[str],
        request_id: str,
        error: AuthproxyError | None,
        *,
        keep_alive: bool,
    ) -> int:
        """An error page from :mod:`authproxy.pages`, written whole; its status."""
        request = cast("web.BaseRequest", _PageRequest(head.method, head.target, fields))
        if error is not None:
            page = pages.error_for_exception(request, error, request_id=request_id)
        else:
            page = pages.error_response(
                request, 500, "Internal error", "Something went wrong in authproxy.", request_id=request_id
            )
        return self._write_page(head, page, keep_alive=keep_alive)

    def _write_page(self, head: RequestHead, page: web.StreamResponse, *, keep_alive: bool) -> int:
        """A whole answer made by aiohttp's path (``web.Response``), written as aiohttp writes it; its status."""
        body = page.body if isinstance(page, web.Response) and isinstance(page.body, bytes) else b""
        out = answer_fields(page)
        # as aiohttp's Response: no length for an empty answer to HEAD (RFC 9110 section 8.6)
        if body or (page.status != 304 and head.method != "HEAD"):
            out["Content-Length"] = str(len(body))
        start, _ = answer_head(
            head.method, page.status, page.reason, out, keep_alive=keep_alive, date=CLOCK.http_date()
        )
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(start + (b"" if head.method == "HEAD" else body))
        return page.status


# ---------------------------------------------------------------------- the listener


class FastSite(web.TCPSite):
    """aiohttp's TCP site with :class:`FastConnection` in front of its request handler."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        services: Services,
        header_timeout: float,
        shutdown_timeout: float,
        ssl_context: Any = None,
        reuse_port: bool = False,
        backlog: int = 1024,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port, backlog=backlog)
        self.services = services
        self.header_timeout = header_timeout
        self.shutdown_timeout = shutdown_timeout
        self.scheme = "https" if ssl_context is not None else "http"
        self.connections: set[FastConnection] = set()
        self.record_memo: RecordMemo[_Derived] = RecordMemo()
        self.stopping = False
        self.endpoints = endpoint_handlers(services.flows, services.config.server.auth_prefix)

    def aiohttp_protocol(self, give_back: GiveBack | None) -> asyncio.Protocol:
        """aiohttp's request handler for a connection the fast path hands over."""
        server = self._runner.server
        assert server is not None
        kwargs = getattr(server, "_kwargs", None)
        if not isinstance(kwargs, dict):
            return cast("asyncio.Protocol", server())
        # what web.Server() makes, as the subclass that can give the connection back and that
        # reads a request in progress to its end at shutdown
        return ReturningRequestHandler(server, give_back=give_back, loop=asyncio.get_running_loop(), **kwargs)

    async def start(self) -> None:
        # BaseSite.start registers the site; TCPSite.start would create aiohttp's own server
        await web.BaseSite.start(self)
        # our own accept loop: uvloop's accepts one connection per loop turn (see listener.py)
        server = serve_in_batches(
            self._host,
            self._port,
            lambda: FastConnection(self),
            backlog=self._backlog,
            reuse_port=bool(self._reuse_port),
            ssl_context=self._ssl_context,
        )
        self._server = cast("asyncio.AbstractServer", server)

    async def stop(self) -> None:
        """Stop accepting, let the answers in progress on both paths finish, then cut the rest.

        One deadline, ``shutdown_timeout`` from now, bounds the answers of the fast path and of
        aiohttp's handlers alike (aiohttp's own drain would wait its timeout twice over, after
        this one). Idle connections close at once, busy ones after their answer, so no new
        request starts on them meanwhile; what is still running at the deadline is cut.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_timeout
        self.stopping = True  # aiohttp keeps what it has from now on
        await super().stop()
        for connection in list(self.connections):
            connection.close_when_idle()
        server = self._runner.server
        if server is not None:
            server.pre_shutdown()  # aiohttp's connections: idle ones now, busy ones after their answer
        handling = self.services.handling
        while (remaining := deadline - loop.time()) > 0:
            answering = {c.task for c in self.connections if c.busy and c.task is not None} | handling
            answering = {task for task in answering if not task.done()}
            if not answering:
                break
            await asyncio.wait(answering, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        for connection in list(self.connections):
            if connection.transport is not None:
                with contextlib.suppress(Exception):
                    connection.transport.abort()
        late = list(handling)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=CUT_GRACE)
