"""The admin listener (SPEC section 3): /healthz, /readyz, /metrics. Never proxied."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from authproxy.metrics import CONTENT_TYPE, Metrics
from authproxy.metrics_peers import Peers

ReadinessCheck = Callable[[], Awaitable[tuple[bool, dict[str, str]]]]

METRICS: Final = web.AppKey("metrics", Metrics)
READINESS: Final[web.AppKey[ReadinessCheck]] = web.AppKey("readiness")
PEERS: Final = web.AppKey("peers", Peers)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    ready, parts = await request.app[READINESS]()
    return web.json_response({"ready": ready, "checks": parts}, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    peers = request.app.get(PEERS)
    if peers is not None:
        # --workers: the other workers' series too, whichever worker the scrape reached
        body = await peers.merged(body)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _own_metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


def create_own_metrics_app(metrics: Metrics) -> web.Application:
    """What a worker serves the other workers on its Unix socket (``metrics_peers``): its own series."""
    app = web.Application()
    app[METRICS] = metrics
    app.router.add_get("/metrics", _own_metrics)
    return app


def create_admin_app(metrics: Metrics, readiness: ReadinessCheck, peers: Peers | None = None) -> web.Application:
    app = web.Application()
    app[METRICS] = metrics
    app[READINESS] = readiness
    if peers is not None:
        app[PEERS] = peers
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app
