"""A misbehaving OpenID provider for the relying party's negative tests (tests only).

    from tests.support import fault_provider as fault_support
    fault_provider = fault_support.fault_provider   # the fixture (unless conftest lists this module)

    def test_x(fault_provider):
        client = fault_provider.register_client([proxy_url + "/oauth2/callback"])
        fault_provider.set_fault("wrong_nonce")
        ...
        assert fault_provider.provider.stats.token_requests == 0

``FaultProvider`` is the development provider with each fault switched on by name, through its
seams (no patching). The server runs in its own thread and event loop on 127.0.0.2 (docs/testing.md:
a provider on another loopback address than the proxy keeps cookies apart), so it answers both
async tests and synchronous code such as a proxy subprocess waiting for discovery.
``serve_app(app)`` runs any aiohttp application the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import jwt
import pytest
from aiohttp import web

from authproxy.demo.provider import (
    AuthorizationRequest,
    DemoClient,
    DemoProvider,
    Grant,
    SigningKey,
    b64url,
    generate_signing_key,
    token_hash,
)
from tests.support.net import free_port

PROVIDER_HOST: Final = "127.0.0.2"
CLIENT_ID: Final = "authproxy-test"
# >= 32 bytes so that the hs256_client_secret fault is a realistic HMAC key
CLIENT_SECRET: Final = "fault-provider-client-secret-0123456789"

ID_TOKEN_FAULTS: Final = frozenset(
    {
        "bad_signature", "alg_none", "hs256_client_secret", "wrong_iss", "wrong_aud", "missing_aud",
        "extra_aud_no_azp", "expired", "missing_iat", "iat_future", "missing_sub", "missing_nonce",
        "wrong_nonce", "wrong_at_hash", "no_kid", "rotate_keys", "stale_auth_time", "missing_auth_time",
    }
)  # fmt: skip
OTHER_FAULTS: Final = frozenset(
    {
        "userinfo_sub_mismatch", "userinfo_nested_claim", "userinfo_refused", "userinfo_not_json",
        "invalid_grant_on_refresh", "token_endpoint_down", "token_endpoint_slow", "access_denied", "no_id_token",
    }
)  # fmt: skip
FAULTS: Final = ID_TOKEN_FAULTS | OTHER_FAULTS
# the depth of the arrays in the userinfo_nested_claim fault
USERINFO_NESTING: Final = 1020


def _compact_jws(header: dict[str, Any], claims: dict[str, Any], sign: bytes | None) -> str:
    """A JWS built by hand, for the algorithms PyJWT (rightly) refuses to produce for us."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    if sign is None:
        return signing_input + "."
    return signing_input + "." + b64url(hmac.new(sign, signing_input.encode(), hashlib.sha256).digest())


class FaultProvider(DemoProvider):
    """The development provider with one fault at a time (``set_fault(name)``; None: behave)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fault: str | None = None
        self.slow_delay = 3.0
        self._good_keys = list(self.keys)
        self._rogue_key: SigningKey | None = None

    def set_fault(self, name: str | None, *, delay: float | None = None) -> None:
        if name is not None and name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {sorted(FAULTS)}")
        self.fault = name
        if delay is not None:
            self.slow_delay = delay
        if name == "rotate_keys":
            # permanent, as a real rotation: the relying party's cached JWKS no longer has the kid
            self._good_keys = [generate_signing_key("RS256")]
        if name == "no_kid":
            first = self._good_keys[0]
            self.keys = [SigningKey(first.alg, first.private_key, None)]
        else:
            self.keys = list(self._good_keys)

    # -- ID token faults -------------------------------------------------------------------------

    def id_token_claims(self, grant: Grant, *, access_token: str, now: float) -> dict[str, Any]:
        claims = super().id_token_claims(grant, access_token=access_token, now=now)
        fault = self.fault
        if fault == "wrong_iss":
            claims["iss"] = "https://evil.example.com"
        elif fault == "wrong_aud":
            claims["aud"] = "some-other-client"
        elif fault == "missing_aud":
            del claims["aud"]
        elif fault == "extra_aud_no_azp":
            claims["aud"] = [grant.client_id, "some-other-client"]
            claims.pop("azp", None)
        elif fault == "expired":
            # far beyond any clock skew a relying party allows
            claims.update(iat=int(now) - 7200, exp=int(now) - 3600)
        elif fault == "missing_iat":
            del claims["iat"]
        elif fault == "iat_future":
            claims.update(iat=int(now) + 3600, exp=int(now) + 3600 + self.id_token_ttl)
        elif fault == "missing_sub":
            del claims["sub"]
        elif fault == "missing_nonce":
            claims.pop("nonce", None)
        elif fault == "wrong_nonce":
            claims["nonce"] = "not-the-nonce-you-sent"
        elif fault == "wrong_at_hash":
            claims["at_hash"] = token_hash(access_token + "-other")
        elif fault == "stale_auth_time":
            # a provider that ignored max_age: the user last authenticated an hour ago
            claims["auth_time"] = int(now) - 3600
        elif fault == "missing_auth_time":
            claims.pop("auth_time", None)
        return claims

    def sign_id_token(self, claims: dict[str, Any], headers: dict[str, Any]) -> str:
        fault = self.fault
        if fault == "bad_signature":
            # signed by a key the provider never published, under the published kid
            if self._rogue_key is None:
                self._rogue_key = generate_signing_key("RS256")
            return jwt.encode(claims, self._rogue_key.private_key, algorithm="RS256", headers=headers)
        if fault == "alg_none":
            return _compact_jws({**headers, "alg": "none"}, claims, None)
        if fault == "hs256_client_secret":
            client = self.clients[str(claims["aud"])]
            assert client.client_secret is not None
            return _compact_jws({**headers, "alg": "HS256"}, claims, client.client_secret.encode())
        return super().sign_id_token(claims, headers)

    # -- userinfo, authorization and token endpoint faults ---------------------------------------

    def userinfo_claims(self, grant: Grant) -> dict[str, Any]:
        claims = super().userinfo_claims(grant)
        if self.fault == "userinfo_sub_mismatch":
            claims["sub"] = "someone-else"
        return claims

    async def userinfo(self, request: web.Request) -> web.Response:
        if self.fault == "userinfo_refused":
            # an access token the userinfo endpoint does not take (issued for another resource)
            return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if self.fault == "userinfo_not_json":
            return web.Response(text="<html>Sign in to continue</html>", content_type="text/html")
        answer = await super().userinfo(request)
        if self.fault == "userinfo_nested_claim" and answer.status == 200 and isinstance(answer.body, bytes):
            # arrays nested deeper than an encoder recurses (a parser takes them): written by hand
            nested = b"[" * USERINFO_NESTING + b"]" * USERINFO_NESTING
            body = answer.body.rstrip()[:-1] + b', "nested": ' + nested + b', "groups": ["admins", ' + nested + b"]}"
            return web.Response(body=body, content_type="application/json")
        return answer

    async def handle_authorization(self, request: web.Request, auth_request: AuthorizationRequest) -> web.Response:
        if self.fault == "access_denied":
            error = {"error": "access_denied", "error_description": "the user refused"}
            return self.redirect_to_client(auth_request.redirect_uri, auth_request.state, error)
        return await super().handle_authorization(request, auth_request)

    def token_response(self, grant: Grant, *, now: float, refresh_token: str | None) -> dict[str, Any]:
        body = super().token_response(grant, now=now, refresh_token=refresh_token)
        if self.fault == "no_id_token":
            # an OAuth 2.0 answer to an OpenID Connect request: no identity to sign in with
            body.pop("id_token", None)
        return body

    async def handle_token(self, request: web.Request) -> web.Response:
        if self.fault == "token_endpoint_down":
            return web.Response(status=503, text="token endpoint down (fault)")
        if self.fault == "token_endpoint_slow":
            await asyncio.sleep(self.slow_delay)
        if self.fault == "invalid_grant_on_refresh" and (await request.post()).get("grant_type") == "refresh_token":
            return web.json_response({"error": "invalid_grant", "error_description": "fault"}, status=400)
        return await super().handle_token(request)


# ---------------------------------------------------------------------------------------------
# Serving an aiohttp application from a thread
# ---------------------------------------------------------------------------------------------


class AppThread:
    """One aiohttp application served by ``AppRunner``/``TCPSite`` in a thread with its own loop."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"app-{host}:{port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError(f"server on {self.url} did not start")
        if self._error is not None:
            raise RuntimeError(f"server on {self.url} failed to start") from self._error

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        # a short shutdown timeout: a test may end while the slow-token fault holds a request
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, self.host, self.port).start())
        except BaseException as error:
            self._error = error
            self._started.set()
            loop.run_until_complete(runner.cleanup())
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=15)


@contextmanager
def serve_app(app: web.Application, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL."""
    server = AppThread(app, host, port or free_port(host))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@dataclass
class FaultProviderServer:
    """What the ``fault_provider`` fixture yields."""

    provider: FaultProvider
    issuer: str
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET

    def set_fault(self, name: str | None, *, delay: float | None = None) -> None:
        self.provider.set_fault(name, delay=delay)

    def register_client(
        self,
        redirect_uris: Sequence[str],
        *,
        client_id: str = CLIENT_ID,
        client_secret: str | None = CLIENT_SECRET,
        post_logout_redirect_uris: Sequence[str] = (),
        auth_methods: Sequence[str] = (),
        backchannel_logout_uri: str | None = None,
    ) -> DemoClient:
        client = DemoClient(
            client_id,
            client_secret,
            redirect_uris,
            post_logout_redirect_uris,
            auth_methods,
            backchannel_logout_uri,
        )
        return self.provider.register_client(client)


@pytest.fixture
def fault_provider() -> Iterator[FaultProviderServer]:
    """A ``FaultProvider`` on 127.0.0.2; register the client once the redirect URI is known."""
    port = free_port(PROVIDER_HOST)
    issuer = f"http://{PROVIDER_HOST}:{port}"
    provider = FaultProvider(issuer, [])
    with serve_app(provider.create_app(), PROVIDER_HOST, port):
        yield FaultProviderServer(provider, issuer)
