"""``/oauth2/sign_out`` and ``/oauth2/backchannel_logout`` (SPEC section 3). Being written."""

from __future__ import annotations

from aiohttp import web

from authproxy.config import Config
from authproxy.metrics import Metrics
from authproxy.oidc.client import ProviderClient
from authproxy.sessions.manager import SessionManager


class Logouts:
    def __init__(self, config: Config, provider: ProviderClient, sessions: SessionManager, metrics: Metrics) -> None:
        self.config = config
        self.provider = provider
        self.sessions = sessions
        self.metrics = metrics

    def add_routes(self, app: web.Application) -> None:
        return None
