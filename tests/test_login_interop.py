"""Interop (issue: login): the whole login through the real, certified oidc-provider (npm).

One oidc-provider process with PKCE required, three clients (client_secret_basic,
client_secret_post, public), a proxy subprocess per client, a real upstream. Then two proxy
processes sharing one Redis serve one session interchangeably.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fault_provider import serve_app
from tests.support.net import free_port
from tests.support.node_provider import NodeProvider
from tests.support.proxy_process import ProxyProcess
from tests.support.scripted_browser import ScriptedBrowser, login_node_provider
from tests.support.upstream import Upstream

SECRET = "interop-session-secret-0123456789abcdefghij"


@pytest.fixture
def upstream_url() -> Iterator[str]:
    with serve_app(Upstream().app()) as url:
        yield url


def config_for(op: NodeProvider, client: dict[str, Any], port: int, upstream: str, **session: Any) -> dict[str, Any]:
    provider: dict[str, Any] = {
        "issuer": op.issuer,
        "client_id": client["client_id"],
        "client_auth_method": client["token_endpoint_auth_method"],
        # oidc-provider releases a refresh token for offline_access only with consent
        "extra_authorize_params": {"prompt": "consent"},
    }
    if client.get("client_secret"):
        provider["client_secret"] = client["client_secret"]
    return {
        "server": {
            "listen": f"127.0.0.1:{port}",
            "public_url": f"http://127.0.0.1:{port}",
            "rate_limit": {"auth_per_minute": 10000},
        },
        "provider": provider,
        "session": {"secrets": [SECRET], "cookie": {"secure": False}, **session},
        "routes": [{"name": "app", "upstream": upstream}],
    }


def seen_by_upstream(page: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in page.json()["headers"]}


@pytest.mark.parametrize("kind", ["basic", "post", "public"])
async def test_full_login_through_oidc_provider(
    kind: str, node_provider: Callable[..., NodeProvider], run_proxy: Callable[..., ProxyProcess], upstream_url: str
) -> None:
    port = free_port()
    op = node_provider(
        redirect_uris=[f"http://127.0.0.1:{port}/oauth2/callback"],
        post_logout_redirect_uris=[f"http://127.0.0.1:{port}/"],
    )
    client = op.client(kind)
    proxy = run_proxy(config_for(op, client, port, upstream_url))
    async with ScriptedBrowser(user_agent=f"interop-{uuid.uuid4()}") as browser:
        page = await login_node_provider(browser, proxy.url + "/dashboard?tab=2", "alice")
        assert page.status == 200, page
        assert page.url.endswith("/dashboard?tab=2")
        seen = seen_by_upstream(page)
        assert seen["x-forwarded-user"] == "alice"
        assert seen["x-forwarded-email"] == "alice@example.com"
    assert op.counters()["code_grants"] == 1


async def test_two_proxies_on_one_redis_share_a_session(
    node_provider: Callable[..., NodeProvider],
    run_proxy: Callable[..., ProxyProcess],
    upstream_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    port_a, port_b = free_port(), free_port()
    op = node_provider(redirect_uris=[f"http://127.0.0.1:{port_a}/oauth2/callback"])
    client = op.client("basic")
    session = {"store": "redis", "redis": {"url": redis_url}}
    proxy_a = run_proxy(config_for(op, client, port_a, upstream_url, **session))
    config_b = config_for(op, client, port_b, upstream_url, **session)
    config_b["server"]["public_url"] = f"http://127.0.0.1:{port_a}"  # replicas behind one public URL
    proxy_b = run_proxy(config_b)
    async with ScriptedBrowser(user_agent=f"interop-{uuid.uuid4()}") as browser:
        page = await login_node_provider(browser, proxy_a.url + "/", "bob")
        assert page.status == 200
        # cookies ignore ports: the same cookie now goes to replica B
        for proxy in (proxy_b, proxy_a, proxy_b):
            answer = await browser.get(proxy.url + "/x", headers={"Accept": "application/json"}, follow_redirects=False)
            assert answer.status == 200
            assert seen_by_upstream(answer)["x-forwarded-user"] == "bob"
