"""The proxy's app served in process by ``aiohttp_client``, once its provider's discovery is done."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from authproxy.app import create_app
from authproxy.config import Config
from authproxy.errors import ProviderUnavailable
from authproxy.metrics import Metrics


async def started_app(config: Config, aiohttp_client: AiohttpClient) -> TestClient[web.Request, web.Application]:
    """A test client of the app for ``config``; discovery runs in the background from startup."""
    app, services = create_app(config, Metrics())
    client = await aiohttp_client(app)
    for _ in range(100):
        with contextlib.suppress(ProviderUnavailable):
            assert services.provider is not None
            services.provider.metadata  # noqa: B018 - raises until discovery has succeeded
            return client
        await asyncio.sleep(0.05)
    raise AssertionError("the provider's discovery did not succeed")
