"""create_app(config): wires the listeners, middlewares and lifecycles. No protocol logic here.

The main application has the auth endpoints under ``auth_prefix`` (SPEC section 3) and one
catch-all handler that chooses a route, lets the gate decide on authentication, and forwards.
Shared clients (upstream pools, the provider client, the session store) are opened and closed in
``cleanup_ctx``, so a SIGTERM drains in-flight requests before any client closes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import HttpVersion11, web

from authproxy import headers, pages
from authproxy.account_pages import SignedOutPage
from authproxy.config import Config, RouteConfig
from authproxy.cross_origin import cross_origin_refusal
from authproxy.errors import AuthproxyError, ProviderUnavailable, StoreError
from authproxy.factories import create_provider_client, read_private_key
from authproxy.forward_auth import IdentityEndpoints
from authproxy.gate import Gate, Identity
from authproxy.identity_jwt import IdentitySigner
from authproxy.logs import LOG, log_access, log_identity_too_large
from authproxy.metrics import Metrics
from authproxy.oidc.client import ProviderClient
from authproxy.oidc.flow import LoginFlows
from authproxy.oidc.logout import Logouts
from authproxy.oidc.sso import SingleSignOn
from authproxy.oidc.tokens import TokenSet
from authproxy.origins import Origins
from authproxy.preserved_post import PostKeeper
from authproxy.proxy import (
    Forwarder,
    SessionCheck,
    another_route_once_normalised,
    has_dot_segments,
    is_websocket_upgrade,
    under_auth_prefix,
)
from authproxy.routing import RouteTable, is_valid_host, target_host_disagrees
from authproxy.sessions.cache import SessionCache
from authproxy.sessions.factory import create_cache, create_publisher, create_store
from authproxy.sessions.invalidation import InvalidationFeed
from authproxy.sessions.manager import SessionManager
from authproxy.sessions.record import SessionRecord
from authproxy.sessions.refresh import Refresher
from authproxy.sessions.store import SessionStore

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Services:
    """Everything a request handler may need, built once per process."""

    config: Config
    metrics: Metrics
    routes: RouteTable[RouteConfig]
    forwarder: Forwarder
    strip_by_route: dict[str, frozenset[str]]
    session_cookie_names: frozenset[str]
    store: SessionStore | None = None
    session_cache: SessionCache | None = None
    invalidations: InvalidationFeed | None = None
    provider: ProviderClient | None = None
    sessions: SessionManager | None = None
    gate: Gate | None = None
    flows: LoginFlows | None = None
    logouts: Logouts | None = None
    sso: SingleSignOn | None = None
    signer: IdentitySigner | None = None
    identity_endpoints: IdentityEndpoints | None = None
    post_keeper: PostKeeper | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)
    # the tasks of aiohttp's handlers answering a request now (drained at shutdown)
    handling: set[asyncio.Task[Any]] = field(default_factory=set)


SERVICES: Final = web.AppKey("services", Services)
ROUTE: Final = web.RequestKey("route", RouteConfig)
REQUEST_ID: Final = pages.REQUEST_ID
USER: Final = pages.USER
METADATA_RETRY_MAX: Final = 30.0
CLIENT_CLOSED: Final = 499
SWITCHING_PROTOCOLS: Final = 101
AUTH_ROUTE_LABEL: Final = pages.AUTH_ROUTE_LABEL
# the rest of a path, whatever characters it decodes to
ANY_PATH: Final = r"[\s\S]*"
IDENTITY_ASSERTION: Final = "X-Authproxy-Identity"


def _route_label(request: web.Request) -> str:
    route: RouteConfig | None = request.get(ROUTE)
    if route is not None:
        return route.name
    prefix = request.app[SERVICES].config.server.auth_prefix
    return AUTH_ROUTE_LABEL if request.path.startswith(prefix + "/") else "_none"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, error pages, access log and request metrics for every request."""
    services = request.app[SERVICES]
    started = time.perf_counter()
    peer_trusted = headers.peer_is_trusted(request.remote, services.config.server.trusted_proxies)
    request_id = headers.request_id(request.headers.get("X-Request-Id"), peer_trusted)
    request[REQUEST_ID] = request_id
    if peer_trusted:
        client_ip = headers.client_address(
            request.remote, request.headers.getall("X-Forwarded-For", []), services.config.server.trusted_proxies
        )
        if client_ip is not None:
            request[pages.CLIENT_IP] = client_ip
    status = 500
    task = asyncio.current_task()
    if task is not None:
        services.handling.add(task)
    try:
        response = await handler(request)
        status = CLIENT_CLOSED if request.get(pages.CUT_OFF) else response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    except asyncio.CancelledError:
        # the client went away mid-request (nginx's 499), not a server error; a WebSocket that
        # ends cancels its handler too, after its 101 went out
        status = SWITCHING_PROTOCOLS if request.get(pages.UPGRADED) else CLIENT_CLOSED
        raise
    except AuthproxyError as e:
        if isinstance(e, StoreError):
            services.metrics.count_store_error()
        response = pages.error_for_exception(request, e, request_id=request_id)
        status = response.status
        return response
    except Exception:
        LOG.exception("unhandled error", extra={"fields": {"request_id": request_id}})
        return pages.error_response(
            request, 500, "Internal error", "Something went wrong in authproxy.", request_id=request_id
        )
    finally:
        services.handling.discard(task)
        record_request(
            services,
            route=_route_label(request),
            status=status,
            elapsed=time.perf_counter() - started,
            request_id=request_id,
            method=request.method,
            path=request.path,
            user=request.get(USER),
            client_ip=pages.client_ip_of(request),
        )


def record_request(
    services: Services,
    *,
    route: str,
    status: int,
    elapsed: float,
    request_id: str,
    method: str,
    path: str,
    user: str | None,
    client_ip: str | None,
) -> None:
    """The access log line and the request metrics of one answered request (SPEC section 6)."""
    services.metrics.observe_request(route, status, elapsed)
    log_access(
        request_id=request_id,
        method=method,
        path=path,
        route=route,
        status=status,
        duration_ms=round(elapsed * 1000, 2),
        user=user,
        client_ip=client_ip,
    )


def upstream_identity_headers(
    route: RouteConfig,
    identity: Identity,
    signer: IdentitySigner | None = None,
    too_large: list[tuple[str, int]] | None = None,
) -> dict[str, str]:
    """The headers a route's upstream receives for a signed-in user.

    Those made of claims (the identity headers and the signed assertion) are left out whole when
    longer than ``headers.MAX_IDENTITY_FIELD``, each ``(name, size)`` appended to ``too_large``.
    """
    # an empty mapping is a set of headers too (none): only an absent one means the default set
    mapping = headers.DEFAULT_IDENTITY_HEADERS if route.identity_headers is None else route.identity_headers
    added = headers.identity_header_values(identity.claims, mapping, too_large)
    if route.identity_jwt and signer is not None:
        assertion = signer.sign(identity.claims, route.name, time.time())
        size = headers.field_size(IDENTITY_ASSERTION, assertion)
        if size <= headers.MAX_IDENTITY_FIELD:
            added[IDENTITY_ASSERTION] = assertion
        elif too_large is not None:
            too_large.append((IDENTITY_ASSERTION, size))
    if route.pass_access_token and identity.access_token:
        added["Authorization"] = f"Bearer {identity.access_token}"
    if route.pass_id_token and identity.id_token:
        added["X-Forwarded-Id-Token"] = identity.id_token
    return added


def logged_identity_headers(
    route: RouteConfig, identity: Identity, signer: IdentitySigner | None, request_id: str
) -> dict[str, str]:
    """:func:`upstream_identity_headers` for one request, each header left out for its size logged."""
    too_large: list[tuple[str, int]] = []
    added = upstream_identity_headers(route, identity, signer, too_large)
    if too_large:
        log_identity_too_large(route.name, too_large, user=identity.sub, request_id=request_id)
    return added


def only_chunked(transfer_encodings: list[str]) -> bool:
    """Whether a request's Transfer-Encoding fields name no coding but ``chunked`` (or none at all)."""
    codings = headers.field_tokens(transfer_encodings)
    return not codings or codings == ["chunked"]


@web.middleware
async def refuse_misframed(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests the upstream could read otherwise than the proxy judged them (inside ``observe``,
    which logs and counts the answer)."""
    hosts = request.headers.getall("Host", [])
    if not all(is_valid_host(host) for host in hosts):
        return pages.error_response(
            request, 400, "Bad request", "The Host header is not a host name.", request_id=request[REQUEST_ID]
        )
    if target_host_disagrees(request.raw_path, hosts):
        return pages.error_response(
            request,
            400,
            "Bad request",
            "The request target names another host than Host.",
            request_id=request[REQUEST_ID],
        )
    if not only_chunked(request.headers.getall("Transfer-Encoding", [])):
        # forwarded, the body would go upstream re-chunked with its other codings (gzip...) still
        # applied but no longer named; RFC 9112 section 6.1: 501 for a coding not understood
        request.protocol.close()
        return pages.error_response(
            request,
            501,
            "Not implemented",
            "Transfer codings other than chunked are not supported.",
            request_id=request[REQUEST_ID],
        )
    try:
        return await handler(request)
    finally:
        if (request.version < HttpVersion11 and "Transfer-Encoding" in request.headers) or "Upgrade" in request.headers:
            # RFC 9112 section 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing;
            # once it is answered its connection ends, so nothing after it is read as a request.
            # After an upgrade request aiohttp reads no further request from the connection
            # (what follows belongs to the new protocol): one not switched to ends it too, rather
            # than leave a pipelined request unanswered for good. (Closing any earlier would drop
            # the body still arriving.)
            request.protocol.close()


async def _proxy(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    if has_dot_segments(request.path):
        # /public/../admin would be judged as /public but served by many upstreams as /admin
        return pages.error_response(
            request, 400, "Bad request", "Paths with . or .. segments are refused.", request_id=request[REQUEST_ID]
        )
    if under_auth_prefix(request.path, services.config.server.auth_prefix):
        # /oauth2%2Fx, //oauth2/x, /oauth2;x/y: the reserved prefix in a spelling aiohttp's
        # router does not match; answered as any unknown endpoint, never forwarded
        return _no_such_endpoint(request)
    route = services.routes.choose(request.host, request.path)
    if another_route_once_normalised(services.routes, request.host, request.path, route):
        # //admin/x or /admin;x/y judged as the / route, then served by the upstream as /admin/...
        return pages.error_response(
            request,
            400,
            "Bad request",
            "Paths with empty segments, ;parameters or backslashes that lead to another route are refused.",
            request_id=request[REQUEST_ID],
        )
    if route is None:
        return pages.error_response(
            request, 404, "Not found", "No route matches this address.", request_id=request[REQUEST_ID]
        )
    request[ROUTE] = route
    refused = cross_origin_refusal(request, route)
    if refused is not None:
        return refused
    added: dict[str, str] = {}
    still_signed_in: SessionCheck | None = None
    identified = False
    gate = services.gate
    if route.auth != "none" and gate is not None:
        outcome = await gate.check(request, route)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        if outcome is not None:
            identified = True
            # the access log's user was set by the gate (Gate.authorize), refused or not
            added = logged_identity_headers(route, outcome, services.signer, request[REQUEST_ID])
            if is_websocket_upgrade(request.method, request.headers):
                still_signed_in = _still_signed_in(gate, request, outcome)

    return await services.forwarder.forward(
        request,
        route,
        request_id=request[REQUEST_ID],
        add_headers=added,
        strip_names=services.strip_by_route[route.name],
        strip_cookies=services.session_cookie_names,
        still_signed_in=still_signed_in,
        identified=identified,
    )


def _still_signed_in(gate: Gate, request: web.Request, identity: Identity) -> SessionCheck:
    """What an open WebSocket asks while it lasts: its session still there (an outage ends it),
    or for a bearer token, the token not yet expired."""
    if identity.by_bearer_token:
        expires = identity.claims.get("exp")

        async def token_valid() -> bool:
            return isinstance(expires, int | float) and time.time() < expires

        return token_valid

    async def session_there() -> bool:
        try:
            return await gate.session_of(request) is not None
        except AuthproxyError:
            return False

    return session_there


async def _load_metadata_until_ready(provider: ProviderClient) -> None:
    """Discovery at start, retried with backoff: /readyz says not ready until it loads."""
    delay = 0.5
    while True:
        try:
            await provider.load_metadata()
            await provider.load_keys()
            LOG.info("provider metadata loaded", extra={"fields": {"issuer": provider.issuer}})
            return
        except ProviderUnavailable as e:
            LOG.warning("provider discovery failed; retrying", extra={"fields": {"error": str(e), "retry_s": delay}})
        await asyncio.sleep(delay)
        delay = min(delay * 2, METADATA_RETRY_MAX)


def _lifecycle(services: Services) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if services.invalidations is not None:
            await services.invalidations.start()
        if services.provider is not None:
            await services.provider.start()
            services.background.append(asyncio.create_task(_load_metadata_until_ready(services.provider)))
        yield
        if services.gate is not None:
            await services.gate.refresher.settle()  # before the clients it uses close
        for task in services.background:
            task.cancel()
        await asyncio.gather(*services.background, return_exceptions=True)
        await services.forwarder.close()
        if services.invalidations is not None:
            await services.invalidations.close()
        if services.provider is not None:
            await services.provider.close()
        if services.store is not None:
            await services.store.close()

    return ctx


def _strip_sets(config: Config) -> dict[str, frozenset[str]]:
    """Per route: every header name the proxy could set, removed from clients' requests."""
    in_use = set(headers.DEFAULT_IDENTITY_HEADERS) | {"X-Forwarded-Id-Token"}
    for route in config.routes:
        in_use |= set(route.identity_headers or {})
    base = frozenset(name.lower() for name in in_use)
    return {route.name: base | {"authorization"} if route.pass_access_token else base for route in config.routes}


def _identity_signer(config: Config) -> IdentitySigner | None:
    """The X-Authproxy-Identity signer, when a route asks for it or a key is configured."""
    wanted = any(route.identity_jwt for route in config.routes)
    if not wanted and config.identity_jwt.signing_key_file is None:
        return None
    assert config.server.public_url is not None
    signer = IdentitySigner.from_config(config.identity_jwt, config.server.public_url)
    if signer.generated:
        LOG.warning(
            "identity_jwt: no signing_key_file, so a key was generated at start; replicas will each "
            "have their own key and upstreams must fetch /oauth2/jwks.json from the one that signed"
        )
    return signer


def build_services(config: Config, metrics: Metrics) -> Services:
    routes = RouteTable.build([(r.match, r) for r in config.routes])
    forwarder = Forwarder(trusted_proxies=config.server.trusted_proxies, metrics=metrics)
    cookie = config.session.cookie
    services = Services(
        config=config,
        metrics=metrics,
        routes=routes,
        forwarder=forwarder,
        strip_by_route=_strip_sets(config),
        # the session cookie, and the host-only name kept forms use beside a cookie domain
        session_cookie_names=frozenset({cookie.full_name, cookie.host_only_name}),
    )
    if config.provider is not None:
        p = config.provider
        services.store = create_store(config.session)
        services.provider = create_provider_client(
            p, read_private_key(p), refresh_before_expiry=config.session.refresh_before_expiry
        )
        cached = create_cache(config.session, services.store)
        if cached is not None:
            services.session_cache, services.invalidations = cached
        else:
            services.invalidations = create_publisher(config.session, services.store)
        assert config.server.public_url is not None
        origins = Origins.build(config.server.public_url, config.server.sso_origins, cookie.domain)
        services.sessions = SessionManager(
            services.store,
            secrets=config.session.secrets,
            cookie=cookie,
            idle_timeout=config.session.idle_timeout,
            absolute_timeout=config.session.absolute_timeout,
            cache=services.session_cache,
            feed=services.invalidations,
            origins=origins,
        )
        provider = services.provider

        # a new ID token is checked against the session's sub and sid and its current ID token
        async def refresh_tokens(refresh_token: str, record: SessionRecord) -> TokenSet:
            return await provider.refresh(
                refresh_token, sub=record.sub, earlier_id_token=record.id_token, sid=record.sid
            )

        refresher = Refresher(
            services.sessions,
            refresh_tokens,
            refresh_before_expiry=config.session.refresh_before_expiry,
            wait_timeout=refresh_wait_timeout(config),
            on_result=metrics.count_refresh,
        )
        services.gate = Gate(
            services.sessions,
            refresher,
            config.server.auth_prefix,
            provider=services.provider,
            routes=config.routes,
            bearer_audiences=p.bearer_audiences or [p.client_id],
        )
        services.signer = _identity_signer(config)
        services.identity_endpoints = IdentityEndpoints(
            services.gate,
            auth_prefix=config.server.auth_prefix,
            idle_timeout=config.session.idle_timeout,
            pass_access_token=config.forward_auth.pass_access_token,
            signer=services.signer,
            trusted_proxies=config.server.trusted_proxies,
        )
        services.flows = LoginFlows(config, services.provider, services.sessions, metrics)
        if any(route.preserve_post for route in config.routes):
            services.post_keeper = PostKeeper(services.sessions, config.server.auth_prefix, services.flows.rate_limited)
            services.gate.post_keeper = services.post_keeper
        services.logouts = Logouts(config, services.provider, services.sessions, metrics)
        if origins.several:
            services.sso = SingleSignOn(services.flows, services.sessions, origins, metrics)
    return services


def create_app(config: Config, metrics: Metrics) -> tuple[web.Application, Services]:
    """The main (proxy) application and the services it holds."""
    services = build_services(config, metrics)
    # request bodies reach the upstream as the client sent them: decoded, a gzip body would be
    # forwarded under the client's Content-Length and Content-Encoding, and the upstream would
    # read what follows the declared length as a request of its own (smuggled past the gate)
    app = web.Application(middlewares=[observe, refuse_misframed], handler_args={"auto_decompress": False})
    app[SERVICES] = services
    app.cleanup_ctx.append(_lifecycle(services))
    if services.flows is not None:
        services.flows.add_routes(app)
    if services.logouts is not None:
        services.logouts.add_routes(app)
    if services.sso is not None:
        services.sso.add_routes(app)
    if services.identity_endpoints is not None:
        services.identity_endpoints.add_routes(app)
    if config.provider is not None:
        SignedOutPage(config.server.auth_prefix).add_routes(app)
    if services.post_keeper is not None:
        services.post_keeper.add_routes(app)
    # the prefix is reserved: unknown endpoints under it are never forwarded upstream. Both take
    # any path, a decoded line feed (%0A) included, which "." would not match
    app.router.add_route("*", config.server.auth_prefix + "/{tail:" + ANY_PATH + "}", _reserved)
    app.router.add_route("*", "/{tail:" + ANY_PATH + "}", _proxy)
    return app, services


async def _reserved(request: web.Request) -> web.Response:
    # an endpoint that exists for other methods (aiohttp went on to this catch-all): 405, not 404
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    if allowed:
        return pages.method_not_allowed(request, sorted(allowed), request_id=request[REQUEST_ID])
    return _no_such_endpoint(request)


def _no_such_endpoint(request: web.Request) -> web.Response:
    """The answer for any path under ``auth_prefix`` that names no endpoint: never forwarded."""
    return pages.error_response(
        request, 404, "Not found", "No such authproxy endpoint.", request_id=request[REQUEST_ID]
    )


def refresh_wait_timeout(config: Config) -> float:
    """How long a request waits for a refresh running elsewhere, and shutdown for one still running."""
    return 0.0 if config.provider is None else config.provider.timeout + 5.0


def stop_bound(config: Config) -> float:
    """How long a process may take to stop after SIGTERM: the drain, then a refresh let finish."""
    return config.server.shutdown_timeout + refresh_wait_timeout(config)


async def readiness(services: Services, *, stopping: bool = False) -> tuple[bool, dict[str, str]]:
    """Provider metadata loaded and the session store answering; which part fails otherwise.

    Never ready once ``stopping`` (SIGTERM received): the main listener takes no new connection.
    """
    if stopping:
        return False, {"server": "shutting down"}
    parts: dict[str, str] = {}
    if services.provider is not None:
        parts["provider"] = "ok" if services.provider.ready else "metadata not loaded yet"
    if services.store is not None:
        try:
            await services.store.ping()
            parts["session_store"] = "ok"
        except StoreError:
            parts["session_store"] = "unreachable"
        except Exception:  # a probe answers, whatever failed: 503 with a reason, never a 500
            LOG.exception("session store readiness check failed")
            parts["session_store"] = "error"
    return all(v == "ok" for v in parts.values()), parts
