"""A minimal OpenID provider for the provider client's tests: it records what it receives.

    async with running_provider() as op:          # http://127.0.0.1:<free port>
        op.keys = [generate_key("RS256", "k1")]   # served as the JWKS; rotate by reassigning
        op.token_answer = (400, {"error": "invalid_grant"})
        ... op.token_requests[0].form, op.jwks_requests

Not a real provider: the token endpoint answers ``token_answer`` whatever it receives, so the
tests can assert exactly what the client sent (headers, form fields) and how it reads answers.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from tests.support.net import free_port
from tests.support.oidc_tokens import JwtKey, jwks_of


@dataclass
class Received:
    """One request as the provider saw it."""

    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]


@dataclass(frozen=True)
class RawAnswer:
    """An answer's body sent as given, under its own Content-Type (a signed userinfo answer)."""

    text: str
    content_type: str


@dataclass
class MiniProvider:
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    scheme: str = "http"
    keys: list[JwtKey] = field(default_factory=list)
    # what the endpoints answer: (status, JSON value, raw text or a RawAnswer)
    token_answer: tuple[int, Any] = (
        200,
        {
            "access_token": "at-1",
            "token_type": "Bearer",
            "expires_in": 300,
            "refresh_token": "rt-1",
        },
    )
    revocation_answer: tuple[int, Any] = (200, "")
    userinfo_answer: tuple[int, Any] = (200, {"sub": "user-1", "email": "alice@example.com"})
    jwks_status: int = 200
    discovery_status: int = 200
    discovery_overrides: dict[str, Any] = field(default_factory=dict)
    delay: float = 0.0  # seconds every answer waits (timeouts)
    redirects: dict[str, str] = field(default_factory=dict)  # path -> where a 302 sends it
    received: list[Received] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def token_endpoint(self) -> str:
        return self.issuer + "/token"

    def requests_to(self, path: str) -> list[Received]:
        return [request for request in self.received if request.path == path]

    @property
    def token_requests(self) -> list[Received]:
        return self.requests_to("/token")

    @property
    def jwks_requests(self) -> int:
        return len(self.requests_to("/jwks"))

    def discovery_document(self) -> dict[str, Any]:
        doc = {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize?tenant=main",
            "token_endpoint": self.token_endpoint,
            "jwks_uri": self.issuer + "/jwks",
            "userinfo_endpoint": self.issuer + "/userinfo",
            "revocation_endpoint": self.issuer + "/revoke",
            "end_session_endpoint": self.issuer + "/logout",
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        }
        doc.update(self.discovery_overrides)
        return {key: value for key, value in doc.items() if value is not None}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._redirect])
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_post("/token", self._answer("token_answer"))
        app.router.add_post("/revoke", self._answer("revocation_answer"))
        app.router.add_get("/userinfo", self._answer("userinfo_answer"))
        return app

    @web.middleware
    async def _redirect(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        location = self.redirects.get(request.path)
        if location is None:
            return await handler(request)
        await self._record(request)
        raise web.HTTPFound(location)

    async def _record(self, request: web.Request) -> None:
        form = {key: str(value) for key, value in (await request.post()).items()}
        self.received.append(Received(request.method, request.path, dict(request.headers), form))
        if self.delay:
            await asyncio.sleep(self.delay)

    async def _discovery(self, request: web.Request) -> web.Response:
        await self._record(request)
        if self.discovery_status != 200:
            return web.Response(status=self.discovery_status, text="down")
        return web.json_response(self.discovery_document())

    async def _jwks(self, request: web.Request) -> web.Response:
        await self._record(request)
        if self.jwks_status != 200:
            return web.Response(status=self.jwks_status, text="down")
        return web.json_response(jwks_of(*self.keys))

    def _answer(self, attribute: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            await self._record(request)
            status, body = getattr(self, attribute)
            if isinstance(body, Mapping):
                return web.json_response(dict(body), status=status)
            if isinstance(body, RawAnswer):
                return web.Response(status=status, text=body.text, content_type=body.content_type)
            return web.Response(status=status, text=str(body))

        return handler


@asynccontextmanager
async def running_provider(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[MiniProvider]:
    """A started ``MiniProvider`` on 127.0.0.1 (https when ``ssl_context`` is given)."""
    provider = MiniProvider(scheme="https" if ssl_context else "http")
    runner = web.AppRunner(provider.app())
    await runner.setup()
    site = web.TCPSite(runner, provider.host, provider.port, ssl_context=ssl_context)
    await site.start()
    try:
        yield provider
    finally:
        await runner.cleanup()
