"""A two-domain deployment for the SSO tests: one sign-in shared by two hosts, two replicas.

    with sso_stack(tmp_path) as stack:
        b = browser()
        await sign_in_on_app(stack, b, "alice")          # the provider's login, on the first domain
        page = await b.get(stack.wiki_url(0) + "/wiki")  # the second domain: no provider login

The authenticating origin is ``http://127.0.0.1:P`` and the SSO origin ``http://localhost:P``:
two host names, so two cookie jars, as for app.example.com and wiki.example.org (cookies ignore
ports, so every replica serves both names on its own port). The certified oidc-provider runs on
127.0.0.2 (its cookies stay off both), with back-channel logout to the first replica. Every proxy
is a real ``authproxy run`` subprocess on one ``redis-server``; all end by PID with the block.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tests.support.fault_provider import serve_app
from tests.support.logout import SECRET, SIGNED_OUT_PATH, browser, upstream_seen
from tests.support.net import free_port
from tests.support.node_provider import NodeProvider, default_clients, start_node_provider
from tests.support.proxy_process import ProxyProcess, start_proxy
from tests.support.redis_server import RedisServer, start_redis_server
from tests.support.scripted_browser import Page, ScriptedBrowser, login_node_provider
from tests.support.upstream import Upstream

APP_HOST: Final = "127.0.0.1"
WIKI_HOST: Final = "localhost"
JSON: Final = {"Accept": "application/json"}

__all__ = ["JSON", "SsoStack", "browser", "sso_stack", "upstream_seen"]


@dataclass
class SsoStack:
    proxies: list[ProxyProcess]
    op: NodeProvider
    redis: RedisServer
    ports: list[int]

    @property
    def central(self) -> str:
        return f"http://{APP_HOST}:{self.ports[0]}"

    @property
    def wiki(self) -> str:
        return f"http://{WIKI_HOST}:{self.ports[0]}"

    def app_url(self, replica: int) -> str:
        return f"http://{APP_HOST}:{self.ports[replica]}"

    def wiki_url(self, replica: int) -> str:
        return f"http://{WIKI_HOST}:{self.ports[replica]}"

    def logs(self) -> str:
        return "\n".join(proxy.logs() for proxy in self.proxies)


def sso_config(
    port: int,
    ports: list[int],
    op: NodeProvider,
    redis: RedisServer,
    upstream_url: str,
    session: Mapping[str, Any],
    auth_per_minute: int = 100000,
) -> dict[str, Any]:
    central = f"http://{APP_HOST}:{ports[0]}"
    client = op.client("basic")
    return {
        "server": {
            "listen": f"127.0.0.1:{port}",
            "public_url": central,
            "sso_origins": [f"http://{WIKI_HOST}:{ports[0]}"],
            "rate_limit": {"auth_per_minute": auth_per_minute},
            # as a front proxy's forward-auth check comes from (tests on 127.0.0.1 send no
            # X-Forwarded-* headers unless they mean to)
            "trusted_proxies": ["127.0.0.1/32"],
        },
        "provider": {
            "issuer": op.issuer,
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "post_logout_redirect_uri": central + SIGNED_OUT_PATH,
            "timeout": "5s",
        },
        "session": {
            "store": "redis",
            "redis": {"url": redis.url},
            "secrets": [SECRET],
            "cookie": {"secure": False},
            **session,
        },
        "routes": [
            {"name": "app", "match": {"host": APP_HOST}, "upstream": upstream_url},
            {"name": "wiki", "match": {"host": WIKI_HOST}, "upstream": upstream_url},
        ],
    }


@contextmanager
def sso_stack(
    directory: Path, *, replicas: int = 2, session: Mapping[str, Any] | None = None, auth_per_minute: int = 100000
) -> Iterator[SsoStack]:
    with ExitStack() as cleanup:
        ports = [free_port() for _ in range(replicas)]
        central = f"http://{APP_HOST}:{ports[0]}"
        op = start_node_provider(
            directory / "oidc-provider",
            clients=default_clients(
                [central + "/oauth2/callback"],
                [central + "/", central + SIGNED_OUT_PATH],
                central + "/oauth2/backchannel_logout",
            ),
            access_token_ttl=300,
        )
        cleanup.callback(op.stop)
        upstream_url = cleanup.enter_context(serve_app(Upstream().app()))
        redis = start_redis_server(directory / "redis")
        cleanup.callback(redis.kill)
        proxies = []
        for port in ports:
            config = sso_config(port, ports, op, redis, upstream_url, session or {}, auth_per_minute)
            proxy = start_proxy(config, directory)
            cleanup.callback(proxy.kill)
            proxies.append(proxy)
        yield SsoStack(proxies, op, redis, ports)


async def sign_in_on_app(stack: SsoStack, b: ScriptedBrowser, username: str, replica: int = 0) -> Page:
    """The provider's login through the authenticating origin; the app's page."""
    page = await login_node_provider(b, stack.app_url(replica) + "/app", username)
    assert page.status == 200, page
    assert upstream_seen(page)["x-forwarded-user"] == username
    return page


def provider_hops(page: Page, op: NodeProvider) -> list[str]:
    """The URLs of ``page``'s redirect chain that were on the provider."""
    return [url for _, url in page.history if url.startswith(op.issuer)]
