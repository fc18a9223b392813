"""Cookies on an SSO origin are host-only (docs/multi-domain.md): ``session.cookie.domain`` names
the authenticating origin's domain, which a browser refuses on another domain's answer.

The handlers that set or expire cookies are asked on both hosts of one in-process app (memory
store, the fault provider on 127.0.0.2): the authenticating origin's cookies carry the domain,
so a handler that forgot its host would show it on the SSO origin's.
"""

from __future__ import annotations

import asyncio
import contextlib
from http.cookies import SimpleCookie

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from authproxy.app import SERVICES, create_app
from authproxy.config import parse_config
from authproxy.errors import ProviderUnavailable
from authproxy.headers import remove_cookie
from authproxy.metrics import Metrics
from tests.support.fault_provider import CLIENT_ID, CLIENT_SECRET, FaultProviderServer

SECRET = "s" * 32
APP = "app.example.test:8443"
WIKI = "wiki.other.test:8443"
COOKIE = "_authproxy"


async def _client(
    fault_provider: FaultProviderServer, aiohttp_client: AiohttpClient
) -> TestClient[web.Request, web.Application]:
    config = parse_config(
        f"""
server: {{public_url: "https://{APP}", sso_origins: ["https://{WIKI}"]}}
provider: {{issuer: "{fault_provider.issuer}", client_id: {CLIENT_ID}, client_secret: {CLIENT_SECRET}}}
session: {{secrets: ["{SECRET}"], cookie: {{name: {COOKIE}, domain: example.test}}}}
routes:
  - {{name: app, upstream: "http://127.0.0.1:1"}}
  - {{name: forms, match: {{path_prefix: /forms}}, upstream: "http://127.0.0.1:1", preserve_post: true}}
""",
        {},
    )
    app, services = create_app(config, Metrics())
    client = await aiohttp_client(app)
    for _ in range(100):  # discovery runs in the background from startup
        with contextlib.suppress(ProviderUnavailable):
            assert services.provider is not None
            services.provider.metadata  # noqa: B018 - raises until discovery has succeeded
            return client
        await asyncio.sleep(0.05)
    raise AssertionError("the provider's discovery did not succeed")


def _cookies(answer: ClientResponse) -> dict[str, str]:
    """Each Set-Cookie of ``answer`` by name: its attributes, lower-cased."""
    found = {}
    for header in answer.headers.getall("Set-Cookie", []):
        parsed = SimpleCookie()
        parsed.load(header)
        for name, morsel in parsed.items():
            found[name] = morsel["domain"].lower()
    return found


@pytest.mark.parametrize(("host", "domain"), [(APP, "example.test"), (WIKI, "")], ids=["app", "sso-origin"])
async def test_a_sign_in_binds_the_browser_with_a_cookie_of_its_own_origin(
    fault_provider: FaultProviderServer, aiohttp_client: AiohttpClient, host: str, domain: str
) -> None:
    client = await _client(fault_provider, aiohttp_client)
    answer = await client.get("/oauth2/start?rd=/x", headers={"Host": host}, allow_redirects=False)
    assert answer.status == 302
    bindings = {name: value for name, value in _cookies(answer).items() if name.startswith(COOKIE + "_flow_")}
    assert bindings and set(bindings.values()) == {domain}


@pytest.mark.parametrize(("host", "domain"), [(APP, "example.test"), (WIKI, "")], ids=["app", "sso-origin"])
async def test_sign_out_expires_the_cookies_of_its_own_origin(
    fault_provider: FaultProviderServer, aiohttp_client: AiohttpClient, host: str, domain: str
) -> None:
    client = await _client(fault_provider, aiohttp_client)
    answer = await client.get(
        "/oauth2/sign_out", headers={"Host": host, "Cookie": f"{COOKIE}=stale"}, allow_redirects=False
    )
    assert answer.status == 302
    expired = _cookies(answer)
    assert COOKIE in expired and expired[COOKIE] == domain


@pytest.mark.parametrize("host", [APP, WIKI], ids=["app", "sso-origin"])
async def test_a_kept_form_is_bound_to_a_host_only_cookie_a_sibling_host_cannot_plant(
    fault_provider: FaultProviderServer, aiohttp_client: AiohttpClient, host: str
) -> None:
    # with a cookie domain, a cookie without the __Host- prefix could be set by any host under
    # it: it would make this browser post a stranger's kept form as its own user after sign-in
    client = await _client(fault_provider, aiohttp_client)
    answer = await client.post(
        "/forms/transfer",
        data=b"to=alice&amount=1",
        headers={
            "Host": host,
            "Accept": "text/html",
            "Content-Type": "application/x-www-form-urlencoded",
            "Sec-Fetch-Site": "same-origin",
        },
        allow_redirects=False,
    )
    assert answer.status == 303
    kept = {name: domain for name, domain in _cookies(answer).items() if "_post_" in name}
    [(name, domain)] = kept.items()
    assert name.startswith(f"__Host-{COOKIE}_post_") and domain == ""


async def test_the_kept_form_cookie_never_reaches_the_upstream(
    fault_provider: FaultProviderServer, aiohttp_client: AiohttpClient
) -> None:
    client = await _client(fault_provider, aiohttp_client)
    names = client.app[SERVICES].session_cookie_names
    sent = f"theme=dark; __Host-{COOKIE}_post_0123456789abcdef=v1.x; {COOKIE}=ticket"
    assert remove_cookie(sent, names) == "theme=dark"
