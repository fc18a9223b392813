"""The cross-origin guard at the edge: :func:`authproxy.csrf.judge_cross_origin` on a request.

Runs in the proxy handler before the gate, on every request to a route with
``csrf_protection: true``. The fast path serves only plain ``GET``/``HEAD`` without an upgrade,
so every request this guard judges (unsafe methods, WebSocket upgrades) reaches it. A refusal is
a 403 page or JSON (by ``Accept``, like every page of authproxy) and one log line with the reason.
"""

from __future__ import annotations

import logging

from aiohttp import web

from authproxy import pages
from authproxy.config import RouteConfig
from authproxy.csrf import CrossOriginVerdict, judge_cross_origin, trusted_origin_set
from authproxy.gate import bearer_token
from authproxy.logs import log_event


def is_websocket_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").strip().lower() == "websocket"


def verdict_for(request: web.Request, route: RouteConfig) -> CrossOriginVerdict:
    """The guard's verdict on ``request`` for ``route`` (whether or not the route enables it)."""
    if route.bearer_tokens and bearer_token(request) is not None:
        # the gate authenticates this request by its token alone, never by a cookie
        return CrossOriginVerdict(True, "bearer token")
    return judge_cross_origin(
        method=request.method,
        host=request.headers.get("Host", ""),
        origin=request.headers.get("Origin"),
        sec_fetch_site=request.headers.get("Sec-Fetch-Site"),
        trusted_origins=trusted_origin_set(route.csrf_trusted_origins),
        websocket_upgrade=is_websocket_upgrade(request),
    )


def cross_origin_refusal(request: web.Request, route: RouteConfig) -> web.Response | None:
    """None when ``request`` may go on; a 403 answer (logged) when the route's guard refuses it."""
    if not route.csrf_protection:
        return None
    verdict = verdict_for(request, route)
    if verdict.allowed:
        return None
    return refuse_cross_origin(request, route, verdict)


def refuse_cross_origin(request: web.Request, route: RouteConfig, verdict: CrossOriginVerdict) -> web.Response:
    log_event(
        "cross_origin_refused",
        logging.WARNING,
        route=route.name,
        method=request.method,
        path=request.path,
        reason=verdict.reason,
        client_ip=request.remote,
        request_id=pages.request_id_of(request),
    )
    return pages.error_response(
        request,
        403,
        "Request refused",
        "This request came from another site, so it was not sent to the application. "
        "Go back to the application's own page and try again from there.",
        request_id=pages.request_id_of(request),
        code="cross_origin_request",
    )
