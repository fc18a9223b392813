"""The cross-origin guard at the edge: :func:`authproxy.csrf.judge_cross_origin` on a request.

Runs in the proxy handler before the gate, on every request to a route with
``csrf_protection: true``. The fast path serves only plain ``GET``/``HEAD`` without an upgrade,
so every request this guard judges (unsafe methods, WebSocket upgrades) reaches it. A refusal is
a 403 page or JSON (by ``Accept``, like every page of authproxy) and one log line with the reason.

Forward-auth (``/oauth2/auth?csrf=1``) judges the request the front proxy is asking about: its
method from ``X-Forwarded-Method`` (Traefik sends it; the nginx example sets it), its host from
``X-Forwarded-Host``, both believed only from ``server.trusted_proxies``; ``Origin`` and
``Sec-Fetch-Site`` are the browser's, passed on with the other headers. Without a believable
``X-Forwarded-Method`` the answer is 403: the check was asked for, and the method it depends on
is unknown (nginx's subrequests are always ``GET``), so it fails closed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import web

from authproxy import headers, pages
from authproxy.config import IPNetwork, RouteConfig
from authproxy.csrf import CrossOriginVerdict, judge_cross_origin, trusted_origin_set
from authproxy.gate import bearer_token
from authproxy.logs import log_event


def is_websocket_upgrade(request: web.Request, *, forwarded: bool = False) -> bool:
    """A WebSocket handshake, by its ``Upgrade`` field; for a front proxy's forward-auth check
    (``forwarded``) also by the Fetch Metadata browsers send with it (``Sec-Fetch-Mode:
    websocket``): such a check request has lost ``Upgrade``, a hop-by-hop field (nginx's
    ``auth_request``, Traefik's ``forwardAuth``), and kept the other. Here, a request without
    ``Upgrade`` opens no socket whatever it says."""
    if request.headers.get("Upgrade", "").strip().lower() == "websocket":
        return True
    return forwarded and request.headers.get("Sec-Fetch-Mode", "").strip().lower() == "websocket"


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
        client_ip=pages.client_ip_of(request),
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


def forward_auth_verdict(request: web.Request, trusted_proxies: Sequence[IPNetwork]) -> CrossOriginVerdict:
    """The guard's verdict on the request a front proxy asks ``/oauth2/auth?csrf=1`` about."""
    trusted = headers.peer_is_trusted(request.remote, trusted_proxies)
    method = request.headers.get("X-Forwarded-Method", "").strip() if trusted else ""
    if not method:
        return CrossOriginVerdict(False, "forward-auth check without X-Forwarded-Method from a trusted proxy")
    forwarded_host = request.headers.get("X-Forwarded-Host", "") if trusted else ""
    host = forwarded_host or request.headers.get("Host", "")
    trusted_origins = trusted_origin_set(
        origin.strip() for value in request.query.getall("trusted_origins", []) for origin in value.split(",")
    )
    return judge_cross_origin(
        method=method,
        host=host.split(",")[0].strip(),
        origin=request.headers.get("Origin"),
        sec_fetch_site=request.headers.get("Sec-Fetch-Site"),
        trusted_origins=trusted_origins,
        websocket_upgrade=is_websocket_upgrade(request, forwarded=True),
    )


def forward_auth_refusal(request: web.Request, trusted_proxies: Sequence[IPNetwork]) -> web.Response | None:
    """None when ``/oauth2/auth`` was not asked to check, or the check passes; else the 403 (logged)."""
    if request.query.get("csrf", "").lower() not in ("1", "true", "on"):
        return None
    verdict = forward_auth_verdict(request, trusted_proxies)
    if verdict.allowed:
        return None
    log_event(
        "cross_origin_refused",
        logging.WARNING,
        route="_forward_auth",
        method=request.headers.get("X-Forwarded-Method", request.method),
        path=request.path,
        reason=verdict.reason,
        client_ip=pages.client_ip_of(request),
        request_id=pages.request_id_of(request),
    )
    return web.json_response(
        {"error": "cross_origin_request", "message": "This request came from another site."},
        status=403,
        headers={"Cache-Control": "no-store"},
    )
