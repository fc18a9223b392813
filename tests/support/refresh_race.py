"""A refresh-token-rotating provider stub and a helper process for the refresh race tests.

``RotatingProvider`` behaves like a provider that rotates refresh tokens on every refresh and
revokes the whole grant when a rotated one comes back (oidc-provider's behaviour, docs/testing.md):
it checks and rotates when a request arrives, then takes ``delay`` seconds to answer, so two
refreshes racing with one token are a detected reuse, not two grants.

``serve_provider(provider)`` puts it behind HTTP on 127.0.0.1 so that other processes spend
tokens at the same provider. Run as a program, this module is one such process:

    python -m tests.support.refresh_race REDIS_URL KEY_PREFIX PROVIDER_URL SECRET CALLS < cookie+"go"

It loads the session named by the cookie on its first stdin line, prints ``ready``, waits for
``go`` on stdin, fires CALLS concurrent ``Refresher.ensure_fresh`` calls, and prints one JSON
line: the outcome of each call (a fingerprint of the access token it got, or the error type).
Tokens themselves are never printed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web

from authproxy.config import CookieConfig
from authproxy.errors import ProviderUnavailable, TokenEndpointError
from authproxy.sessions.manager import SessionManager
from authproxy.sessions.record import SessionRecord
from authproxy.sessions.redis import RedisStore
from authproxy.sessions.refresh import Refresher

FIRST_REFRESH_TOKEN: Final = "rt-0"
IDLE: Final = 3600.0
ABSOLUTE: Final = 86400.0
REFRESH_BEFORE_EXPIRY: Final = 60.0


@dataclass(frozen=True)
class TokenSet:
    """What ``ProviderClient.refresh`` returns, as far as the refresher reads it."""

    access_token: str
    expires_at: float | None
    refresh_token: str | None
    id_token: str | None
    token_type: str = "Bearer"
    scope: str = "openid offline_access"


@dataclass
class RotatingProvider:
    """A token endpoint that rotates refresh tokens and revokes the grant on reuse."""

    clock: Callable[[], float] = time.time
    delay: float = 0.0
    lifetime: float = 300.0
    rotate: bool = True
    id_tokens: bool = True
    # while True, every refresh fails as an unreachable provider would (nothing is rotated)
    down: bool = False
    current: str = FIRST_REFRESH_TOKEN
    calls: int = 0
    grants: int = 0
    reuses: int = 0
    revoked: bool = False
    spent: set[str] = field(default_factory=set)

    async def refresh(self, refresh_token: str, record: SessionRecord | None = None) -> TokenSet:
        self.calls += 1
        if self.down:
            await asyncio.sleep(self.delay)
            raise ProviderUnavailable("the test provider is down")
        refused = self.revoked or refresh_token != self.current
        if refused and refresh_token in self.spent:
            # RFC 9700 section 4.14.2: a rotated token came back, so revoke the whole family
            self.reuses += 1
            self.revoked = True
        if not refused:
            self.grants += 1
            if self.rotate:
                self.spent.add(refresh_token)
                self.current = f"rt-{self.grants}"
        grant = self.grants
        await asyncio.sleep(self.delay)
        if refused:
            raise TokenEndpointError("invalid_grant", "refresh token revoked, reused or unknown")
        return TokenSet(
            access_token=access_token_for(grant),
            expires_at=self.clock() + self.lifetime,
            refresh_token=self.current if self.rotate else None,
            id_token=f"id-{grant}" if self.id_tokens else None,
        )


def access_token_for(grant: int) -> str:
    """The access token the ``grant``-th refresh issues (0: the one from the login)."""
    return f"at-{grant}"


def fingerprint(token: str | None) -> str:
    """A short stand-in for a token in a helper's output (the token itself is never printed)."""
    return hashlib.sha256((token or "").encode()).hexdigest()[:16]


@asynccontextmanager
async def serve_provider(provider: RotatingProvider, port: int) -> AsyncIterator[str]:
    """``provider`` behind ``POST /token`` on 127.0.0.1:``port``; yields the endpoint's URL."""

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        try:
            tokens = await provider.refresh(str(form.get("refresh_token", "")))
        except TokenEndpointError as e:
            return web.json_response({"error": e.error}, status=400)
        except ProviderUnavailable:
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        return web.json_response(
            {
                "access_token": tokens.access_token,
                "expires_at": tokens.expires_at,
                "refresh_token": tokens.refresh_token,
                "id_token": tokens.id_token,
            }
        )

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}/token"
    finally:
        await runner.cleanup()


def http_refresher(client: aiohttp.ClientSession, url: str) -> Callable[[str, SessionRecord], Any]:
    """A ``refresh_tokens`` function that spends the token at ``serve_provider``'s endpoint."""

    async def refresh_tokens(refresh_token: str, record: SessionRecord | None = None) -> TokenSet:
        try:
            async with client.post(url, data={"refresh_token": refresh_token}) as response:
                body = await response.json()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ProviderUnavailable("the test provider is unreachable") from e
        if response.status == 400:
            raise TokenEndpointError(str(body["error"]))
        if response.status != 200:
            raise ProviderUnavailable(f"the test provider answered {response.status}")
        return TokenSet(
            access_token=body["access_token"],
            expires_at=body["expires_at"],
            refresh_token=body["refresh_token"],
            id_token=body["id_token"],
        )

    return refresh_tokens


def session_manager(store: RedisStore, secret: str, clock: Callable[[], float] = time.time) -> SessionManager:
    return SessionManager(
        store,
        secrets=[secret],
        cookie=CookieConfig(secure=False),
        idle_timeout=IDLE,
        absolute_timeout=ABSOLUTE,
        clock=clock,
    )


async def _race(redis_url: str, key_prefix: str, provider_url: str, secret: str, calls: int) -> list[str]:
    cookie = sys.stdin.readline().strip()
    store = RedisStore(redis_url, key_prefix=key_prefix)
    try:
        sessions = session_manager(store, secret)
        session = await sessions.load(cookie)
        if session is None:
            raise SystemExit("the session named by the cookie is not in the store")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as client:
            refresher = Refresher(
                sessions, http_refresher(client, provider_url), refresh_before_expiry=REFRESH_BEFORE_EXPIRY
            )
            print("ready", flush=True)
            # blocking is fine here: nothing else runs in this process until the start signal
            if sys.stdin.readline().strip() != "go":
                raise SystemExit("expected go")
            results = await asyncio.gather(
                *(refresher.ensure_fresh(session) for _ in range(calls)), return_exceptions=True
            )
    finally:
        await store.close()
    return [
        type(result).__name__ if isinstance(result, BaseException) else fingerprint(result.record.access_token)
        for result in results
    ]


def main(argv: list[str]) -> None:
    redis_url, key_prefix, provider_url, secret, calls = argv
    print(json.dumps(asyncio.run(_race(redis_url, key_prefix, provider_url, secret, int(calls)))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
