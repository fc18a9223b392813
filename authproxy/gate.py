"""The gate in front of every route (SPEC section 4): who is asking, and may they pass?

``auth: none`` routes pass without a session lookup. ``required`` routes without a session send
browsers (GET/HEAD navigations accepting text/html) to ``/oauth2/start?rd=<path and query>`` and
answer everything else with 401 JSON, as ``on_unauthenticated`` says. ``optional`` routes pass
anonymous requests without identity. A session store failure is never taken as "no session":
it fails closed with 503 on every route that looks at sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from authproxy import pages
from authproxy.config import RouteConfig
from authproxy.errors import SessionEnded
from authproxy.sessions.manager import Session, SessionManager
from authproxy.sessions.refresh import Refresher


@dataclass(frozen=True)
class Identity:
    """What the upstream may learn about the user of a request."""

    claims: dict[str, Any]
    access_token: str | None = None
    id_token: str | None = None

    @property
    def sub(self) -> str:
        return str(self.claims.get("sub", ""))


def login_url(prefix: str, request: web.Request) -> str:
    """``/oauth2/start?rd=<original path and query>``."""
    return f"{prefix}/start?rd={quote(request.raw_path, safe='/')}"


def wants_redirect(route: RouteConfig, request: web.Request) -> bool:
    if route.on_unauthenticated == "redirect":
        return True
    if route.on_unauthenticated == "deny":
        return False
    return pages.is_browser_navigation(request)


class Gate:
    """Loads the session of a request and decides whether it may reach the route."""

    def __init__(self, sessions: SessionManager, refresher: Refresher, auth_prefix: str) -> None:
        self.sessions = sessions
        self.refresher = refresher
        self.prefix = auth_prefix

    async def session_of(self, request: web.Request) -> Session | None:
        """The request's session with tokens refreshed when due; None when there is none (or it ended).

        A provider outage with an expired access token raises ProviderUnavailable (503); a store
        outage raises StoreUnavailable (503): neither is ever taken as "anonymous".
        """
        session = await self.sessions.load(request.cookies.get(self.sessions.cookie_name))
        if session is None:
            return None
        try:
            return await self.refresher.ensure_fresh(session)
        except SessionEnded:
            return None

    async def check(self, request: web.Request, route: RouteConfig) -> Identity | web.StreamResponse | None:
        """An Identity to forward with, None to forward anonymously, or a response to send instead."""
        if route.auth == "none":
            return None
        session = await self.session_of(request)
        if session is not None:
            record = session.record
            return Identity(record.claims, record.access_token, record.id_token)
        if route.auth == "optional":
            return None
        return self.unauthenticated(request, route)

    def unauthenticated(self, request: web.Request, route: RouteConfig) -> web.StreamResponse:
        url = login_url(self.prefix, request)
        if wants_redirect(route, request) and request.method in ("GET", "HEAD"):
            return pages.redirect(url)
        response = web.json_response({"error": "unauthenticated", "login_url": url}, status=401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="authproxy"'
        response.headers["Cache-Control"] = "no-store"
        return response
