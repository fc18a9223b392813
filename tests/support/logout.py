"""Stacks for the logout and token-lifecycle tests: providers, Redis, proxy replicas, an upstream.

    with fault_stack(tmp_path, replicas=2) as stack:          # development provider, faults on demand
        browser, seen = await log_in(stack, "alice")
        seen["x-forwarded-id-token"]                          # the route passes the ID token on
    with node_stack(tmp_path, access_token_ttl=5) as stack:   # the certified oidc-provider

Every proxy is a real ``authproxy run`` subprocess; replicas share one ``redis-server`` and the
public URL of the first one (cookies ignore ports, so one browser talks to all of them). The
route passes the ID token and the access token to the echo upstream, so tests can see exactly
which tokens the proxy holds. Processes are killed by PID when the block ends.

``LogoutProvider`` is the fault provider with two more switches: no ``end_session_endpoint`` in
its discovery document, and a revocation endpoint that is slow or down. ``sign_logout_token``
signs back-channel logout tokens with the provider's own key (or a rogue one) for the negative
tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jwt
from aiohttp import web

from authproxy.demo.provider import BACKCHANNEL_EVENT, DemoClient, SigningKey, generate_signing_key
from tests.support.fault_provider import CLIENT_ID, CLIENT_SECRET, PROVIDER_HOST, AppThread, FaultProvider, serve_app
from tests.support.net import free_port
from tests.support.node_provider import NodeProvider, default_clients, start_node_provider
from tests.support.proxy_process import ProxyProcess, start_proxy
from tests.support.redis_server import RedisServer, start_redis_server
from tests.support.scripted_browser import Page, ScriptedBrowser, login_demo, login_node_provider
from tests.support.upstream import Upstream

SECRET: Final = "logout-tests-session-secret-0123456789abcdef"
COOKIE: Final = "authproxy_session"
SIGNED_OUT_PATH: Final = "/signed-out"
JSON: Final = {"Accept": "application/json"}


class LogoutProvider(FaultProvider):
    """The fault provider; ``end_session=False`` hides its end_session_endpoint, and revocations
    can be made slow (``revocation_delay``) or refused as by a provider that is down."""

    def __init__(self, *args: Any, end_session: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.end_session_enabled = end_session
        self.revocation_delay = 0.0
        self.revocation_down = False

    def metadata(self) -> dict[str, Any]:
        metadata = super().metadata()
        if not self.end_session_enabled:
            del metadata["end_session_endpoint"]
        return metadata

    async def revoke(self, request: web.Request) -> web.Response:
        if self.revocation_down:
            return web.Response(status=503, text="revocation endpoint down (test)")
        if self.revocation_delay:
            await asyncio.sleep(self.revocation_delay)
        return await super().revoke(request)


def logout_claims(
    provider: FaultProvider, *, sub: str | None, sid: str | None, now: float | None = None
) -> dict[str, Any]:
    """Valid logout token claims (Back-Channel Logout 1.0 section 2.4) for the proxy's client."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": provider.issuer,
        "aud": CLIENT_ID,
        "iat": issued,
        "exp": issued + 120,
        "jti": uuid.uuid4().hex,
        "events": {BACKCHANNEL_EVENT: {}},
    }
    if sub is not None:
        claims["sub"] = sub
    if sid is not None:
        claims["sid"] = sid
    return claims


def sign_logout_token(provider: FaultProvider, claims: Mapping[str, Any], key: SigningKey | None = None) -> str:
    """``claims`` signed by the provider's signing key, or by ``key`` under the provider's kid (a forgery)."""
    own = provider.signing_key
    headers = provider.jws_headers(own, "logout+jwt")
    signer = key or own
    return jwt.encode(dict(claims), signer.private_key, algorithm=signer.alg, headers=headers)


def rogue_key() -> SigningKey:
    return generate_signing_key("RS256")


# ---------------------------------------------------------------------------------------------- stacks


def proxy_config(
    port: int, public_url: str, upstream_url: str, provider: dict[str, Any], session: dict[str, Any]
) -> dict[str, Any]:
    return {
        "server": {
            "listen": f"127.0.0.1:{port}",
            "public_url": public_url,
            "rate_limit": {"auth_per_minute": 100000},
        },
        "provider": provider,
        "session": {"secrets": [SECRET], "cookie": {"secure": False}, **session},
        "routes": [
            {"name": "app", "upstream": upstream_url, "pass_id_token": True, "pass_access_token": True},
        ],
    }


@dataclass
class Stack:
    """Proxy replicas (``proxies[0]`` owns the public URL), their provider and store."""

    proxies: list[ProxyProcess]
    public_url: str
    upstream_url: str
    redis: RedisServer | None
    kind: str  # "fault" or "node"
    provider: LogoutProvider | None = None
    provider_server: AppThread | None = None
    node: NodeProvider | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.proxies[0].url

    @property
    def fault(self) -> LogoutProvider:
        assert self.provider is not None
        return self.provider

    @property
    def op(self) -> NodeProvider:
        assert self.node is not None
        return self.node


def _session_options(redis: RedisServer | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    store: dict[str, Any] = {"store": "redis", "redis": {"url": redis.url}} if redis is not None else {}
    return {**store, **extra}


def _start_replicas(
    directory: Path,
    replicas: int,
    upstream_url: str,
    provider: dict[str, Any],
    session: dict[str, Any],
    ports: list[int],
    per_replica: Sequence[Mapping[str, Any]] = (),
) -> list[ProxyProcess]:
    public_url = f"http://127.0.0.1:{ports[0]}"
    started = []
    try:
        for index, port in enumerate(ports[:replicas]):
            own = {**session, **(per_replica[index] if index < len(per_replica) else {})}
            started.append(start_proxy(proxy_config(port, public_url, upstream_url, provider, own), directory))
    except BaseException:
        for proxy in started:
            proxy.kill()
        raise
    return started


@contextmanager
def fault_stack(
    directory: Path,
    *,
    replicas: int = 1,
    redis: bool = False,
    end_session: bool = True,
    access_token_ttl: int = 300,
    provider_options: Mapping[str, Any] | None = None,
    session_options: Mapping[str, Any] | None = None,
    post_logout_redirect_uri: bool = True,
    replica_session_options: Sequence[Mapping[str, Any]] = (),
) -> Iterator[Stack]:
    """The development provider (``LogoutProvider``) on 127.0.0.2 and ``replicas`` proxies.

    ``replica_session_options[i]`` is merged over ``session_options`` for replica ``i``.
    """
    with ExitStack() as cleanup:
        provider_port = free_port(PROVIDER_HOST)
        issuer = f"http://{PROVIDER_HOST}:{provider_port}"
        provider = LogoutProvider(issuer, [], end_session=end_session, access_token_ttl=access_token_ttl)
        ports = [free_port() for _ in range(replicas)]
        public_url = f"http://127.0.0.1:{ports[0]}"
        provider.register_client(
            DemoClient(
                CLIENT_ID,
                CLIENT_SECRET,
                [public_url + "/oauth2/callback"],
                [public_url + "/", public_url + SIGNED_OUT_PATH, public_url + "/bye"],
            )
        )
        server = AppThread(provider.create_app(), PROVIDER_HOST, provider_port)
        server.start()
        cleanup.callback(server.stop)
        upstream_url = cleanup.enter_context(serve_app(Upstream().app()))
        store = start_redis_server(directory / "redis") if redis else None
        if store is not None:
            cleanup.callback(store.kill)
        settings: dict[str, Any] = {
            "issuer": issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "timeout": "5s",
            **(provider_options or {}),
        }
        if post_logout_redirect_uri:
            settings.setdefault("post_logout_redirect_uri", public_url + SIGNED_OUT_PATH)
        proxies = _start_replicas(
            directory,
            replicas,
            upstream_url,
            settings,
            _session_options(store, session_options or {}),
            ports,
            replica_session_options,
        )
        for proxy in proxies:
            cleanup.callback(proxy.kill)
        yield Stack(proxies, public_url, upstream_url, store, "fault", provider=provider, provider_server=server)


@contextmanager
def node_stack(
    directory: Path,
    *,
    replicas: int = 2,
    access_token_ttl: int = 5,
    session_options: Mapping[str, Any] | None = None,
    backchannel: bool = True,
) -> Iterator[Stack]:
    """oidc-provider on 127.0.0.2, ``replicas`` proxies on one Redis, the ``authproxy-basic`` client."""
    with ExitStack() as cleanup:
        ports = [free_port() for _ in range(replicas)]
        public_url = f"http://127.0.0.1:{ports[0]}"
        op = start_node_provider(
            directory / "oidc-provider",
            clients=default_clients(
                [public_url + "/oauth2/callback"],
                [public_url + "/", public_url + SIGNED_OUT_PATH],
                public_url + "/oauth2/backchannel_logout" if backchannel else None,
            ),
            access_token_ttl=access_token_ttl,
        )
        cleanup.callback(op.stop)
        upstream_url = cleanup.enter_context(serve_app(Upstream().app()))
        store = start_redis_server(directory / "redis")
        cleanup.callback(store.kill)
        client = op.client("basic")
        settings = {
            "issuer": op.issuer,
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "client_auth_method": client["token_endpoint_auth_method"],
            "post_logout_redirect_uri": public_url + SIGNED_OUT_PATH,
            "timeout": "5s",
        }
        proxies = _start_replicas(
            directory, replicas, upstream_url, settings, _session_options(store, session_options or {}), ports
        )
        for proxy in proxies:
            cleanup.callback(proxy.kill)
        yield Stack(proxies, public_url, upstream_url, store, "node", node=op)


# ---------------------------------------------------------------------------------------------- browsing


def browser() -> ScriptedBrowser:
    # a User-Agent of its own: the login-loop guard counts per client IP and User-Agent
    return ScriptedBrowser(user_agent=f"logout-test-{uuid.uuid4()}")


def upstream_seen(page: Page) -> dict[str, str]:
    """Headers the echo upstream received, names lower-cased."""
    return {k.lower(): v for k, v in page.json()["headers"]}


def session_cookie(b: ScriptedBrowser) -> str | None:
    return b.cookies.get(COOKIE, "127.0.0.1")


def id_token_claims(seen: Mapping[str, str]) -> dict[str, Any]:
    """The claims of the ID token the upstream received (already verified by the proxy)."""
    claims: dict[str, Any] = jwt.decode(seen["x-forwarded-id-token"], options={"verify_signature": False})
    return claims


async def log_in(
    stack: Stack, username: str, b: ScriptedBrowser | None = None
) -> tuple[ScriptedBrowser, dict[str, str]]:
    """A browser signed in as ``username`` through the first proxy, and what the upstream saw."""
    b = b or browser()
    if stack.kind == "node":
        page = await login_node_provider(b, stack.url + "/app", username)
    else:
        page = await login_demo(b, stack.url + "/app", username)
    assert page.status == 200, page
    seen = upstream_seen(page)
    assert seen["x-forwarded-user"] == username
    return b, seen


async def status_with_cookie(url: str, cookie: str, *, navigation: bool = False) -> int:
    """The status a fresh browser carrying only ``cookie`` gets for ``url`` (no redirects followed)."""
    async with browser() as other:
        other.cookies.receive(url, [f"{COOKIE}={cookie}; Path=/"])
        headers = {} if navigation else JSON
        page = await other.get(url, headers=headers, follow_redirects=False)
        return page.status


async def xhr(b: ScriptedBrowser, url: str) -> Page:
    return await b.request("GET", url, headers=JSON, follow_redirects=False, navigation=False)
