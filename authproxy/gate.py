"""The gate in front of every route (SPEC section 4): who is asking, and may they pass?

``auth: none`` routes pass without a session lookup. ``required`` routes without a session send
browsers (GET/HEAD navigations accepting text/html) to ``/oauth2/start?rd=<path and query>`` and
answer everything else with 401 JSON, as ``on_unauthenticated`` says. ``optional`` routes pass
anonymous requests without identity. A session store failure is never taken as "no session":
it fails closed with 503 on every route that looks at sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from authproxy import pages
from authproxy.account_pages import forbidden_response
from authproxy.config import RouteConfig
from authproxy.cookie_header import request_cookie
from authproxy.errors import SessionEnded, TokenInvalid
from authproxy.oidc.client import ProviderClient
from authproxy.policy import Policy, compile_allow
from authproxy.proxy import is_websocket_upgrade
from authproxy.sessions.manager import Session, SessionManager
from authproxy.sessions.refresh import Refresher

if TYPE_CHECKING:
    from authproxy.preserved_post import PostKeeper


@dataclass(frozen=True)
class Identity:
    """What the upstream may learn about the user of a request."""

    claims: dict[str, Any]
    access_token: str | None = None
    id_token: str | None = None
    # signed in by an API client's bearer token rather than a session
    by_bearer_token: bool = False

    @property
    def sub(self) -> str:
        return str(self.claims.get("sub", ""))


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header (RFC 6750 section 2.1), or None."""
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def bearer_refusal(status: int, error: str) -> web.Response:
    """A refused bearer-token request, as RFC 6750 section 3.1 answers it: JSON, never a redirect."""
    response = web.json_response({"error": error}, status=status)
    response.headers["WWW-Authenticate"] = f'Bearer realm="authproxy", error="{error}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def login_url(prefix: str, request: web.Request) -> str:
    """``/oauth2/start?rd=<original path and query>``."""
    return f"{prefix}/start?rd={quote(request.raw_path, safe='/')}"


def wants_redirect(route: RouteConfig, request: web.Request) -> bool:
    if route.on_unauthenticated == "redirect":
        return True
    if route.on_unauthenticated == "deny":
        return False
    # a WebSocket handshake is never a navigation, whatever it accepts: a browser cannot follow a
    # redirect from one, and a client that opened it must learn that it needs to sign in
    return pages.is_browser_navigation(request) and not is_websocket_upgrade(request.method, request.headers)


class Gate:
    """Loads the session of a request and decides whether it may reach the route."""

    def __init__(
        self,
        sessions: SessionManager,
        refresher: Refresher,
        auth_prefix: str,
        *,
        provider: ProviderClient,
        routes: Sequence[RouteConfig],
        bearer_audiences: Sequence[str],
    ) -> None:
        self.sessions = sessions
        self.refresher = refresher
        self.prefix = auth_prefix
        self.provider = provider
        self.bearer_audiences = list(bearer_audiences)
        self.policies: dict[str, Policy] = {route.name: compile_allow(route.allow) for route in routes}
        # keeps browser form POSTs across a re-login (routes[].preserve_post); set by the app
        self.post_keeper: PostKeeper | None = None

    async def session_of(self, request: web.Request, *, host: str | None = None) -> Session | None:
        """The request's session with tokens refreshed when due; None when there is none (or it ended).

        ``host`` is the origin's host when it is not the request's own (a forward-auth check).
        A provider outage with an expired access token raises ProviderUnavailable (503); a store
        outage raises StoreUnavailable (503): neither is ever taken as "anonymous".
        """
        host = request.host if host is None else host
        cookie = request_cookie(request, self.sessions.cookie_name_at(host))
        session = await self.sessions.load(cookie, host)
        if session is None:
            return None
        try:
            session = await self.refresher.ensure_fresh(session)
        except SessionEnded:
            return None
        # the access log names the user of every request whose session is known, refused or not
        request[pages.USER] = session.record.sub
        return session

    async def check(self, request: web.Request, route: RouteConfig) -> Identity | web.StreamResponse | None:
        """An Identity to forward with, None to forward anonymously, or a response to send instead."""
        if route.auth == "none":
            return None
        if route.bearer_tokens:
            if len(request.headers.getall("Authorization", ())) > 1:
                # one Authorization field only (RFC 9110 section 11.6.2): the upstream could read
                # the one not checked here beside the identity headers of the one that was
                return bearer_refusal(400, "invalid_request")
            token = bearer_token(request)
            if token is not None:
                return await self._check_bearer(request, route, token)
        session = await self.session_of(request)
        if session is not None:
            record = session.record
            return self.authorize(request, route, Identity(record.claims, record.access_token, record.id_token))
        if route.auth == "optional":
            return None
        if self.post_keeper is not None:
            kept = await self.post_keeper.keep(request, route)
            if kept is not None:
                return kept
        return self.unauthenticated(request, route)

    async def _check_bearer(self, request: web.Request, route: RouteConfig, token: str) -> Identity | web.Response:
        """API clients: a JWT access token instead of a session; a bad one is 401, never a redirect."""
        try:
            claims = await self.provider.verify_bearer_token(token, self.bearer_audiences)
        except TokenInvalid:
            return bearer_refusal(401, "invalid_token")
        return self.authorize(request, route, Identity(claims, access_token=token, by_bearer_token=True))

    def authorize(self, request: web.Request, route: RouteConfig, identity: Identity) -> Identity | web.Response:
        """The identity when the route's allow rules admit it, else a 403 page or JSON."""
        request[pages.USER] = identity.sub
        policy = self.policies[route.name]
        if policy.allows(identity.claims):
            return identity
        return forbidden_response(
            request, prefix=self.prefix, route=route.name, user=identity.sub, refusal=policy.refusal(identity.claims)
        )

    def unauthenticated(self, request: web.Request, route: RouteConfig) -> web.StreamResponse:
        url = login_url(self.prefix, request)
        if wants_redirect(route, request) and request.method in ("GET", "HEAD"):
            return pages.redirect(url)
        response = web.json_response({"error": "unauthenticated", "login_url": url}, status=401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="authproxy"'
        response.headers["Cache-Control"] = "no-store"
        return response
