"""The admin listener (SPEC section 3): /healthz, /readyz, /metrics. Never proxied."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from authproxy.metrics import CONTENT_TYPE, Metrics

ReadinessCheck = Callable[[], Awaitable[tuple[bool, dict[str, str]]]]

METRICS: Final = web.AppKey("metrics", Metrics)
READINESS: Final[web.AppKey[ReadinessCheck]] = web.AppKey("readiness")


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    ready, parts = await request.app[READINESS]()
    return web.json_response({"ready": ready, "checks": parts}, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def create_admin_app(metrics: Metrics, readiness: ReadinessCheck) -> web.Application:
    app = web.Application()
    app[METRICS] = metrics
    app[READINESS] = readiness
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app
