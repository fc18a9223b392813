"""Cookies (and one-time codes) on an SSO origin. Its cookies are host-only (docs/multi-domain.md):
``session.cookie.domain`` names the authenticating origin's domain, which a browser refuses on
another domain's answer.

Being host-only, they are named ``__Host-`` (they are Secure): a host under a domain the SSO
origin shares (``evil.other.test`` beside ``wiki.other.test``) can set a cookie for that domain
with any other name, and would plant its own handoff binding or session link.

The handlers that set or expire cookies are asked on both hosts of one in-process app (memory
store, the fault provider on 127.0.0.2): the authenticating origin's cookies carry the domain,
so a handler that forgot its host would show it on the SSO origin's.
"""

from __future__ import annotations

import time
from http.cookies import SimpleCookie
from types import SimpleNamespace
from typing import cast
from urllib.parse import urlsplit

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from authproxy.app import SERVICES
from authproxy.config import parse_config
from authproxy.headers import remove_cookie
from tests.support.fault_provider import CLIENT_ID, CLIENT_SECRET, FaultProviderServer
from tests.support.in_process import started_app
from tests.support.records import alice_signed_in_now

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
    return await started_app(config, aiohttp_client)


def _values(answer: ClientResponse) -> dict[str, str]:
    """Each Set-Cookie of ``answer`` by name: its value."""
    found = {}
    for header in answer.headers.getall("Set-Cookie", []):
        parsed = SimpleCookie()
        parsed.load(header)
        found.update((name, morsel.value) for name, morsel in parsed.items())
    return found


def _local(url: str) -> str:
    """The path and query of ``url``."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def _get(
    client: TestClient[web.Request, web.Application], path: str, host: str, cookie: str = ""
) -> ClientResponse:
    """``GET path`` as a browser on ``host`` holding ``cookie`` and nothing else."""
    client.session.cookie_jar.clear()
    headers = {"Host": host, "Accept": "application/json"}
    if cookie:
        headers["Cookie"] = cookie
    return await client.get(path, headers=headers, allow_redirects=False)


def _cookies(answer: ClientResponse) -> dict[str, str]:
    """Each Set-Cookie of ``answer`` by name: its attributes, lower-cased."""
    found = {}
    for header in answer.headers.getall("Set-Cookie", []):
        parsed = SimpleCookie()
        parsed.load(header)
        for name, morsel in parsed.items():
            found[name] = morsel["domain"].lower()
    return found


# the session cookie's name on each origin, and the domain its cookies are set for
ORIGINS = [(APP, COOKIE, "example.test"), (WIKI, f"__Host-{COOKIE}", "")]


@pytest.mark.parametrize(("host", "name", "domain"), ORIGINS, ids=["app", "sso-origin"])
async def test_a_sign_in_binds_the_browser_with_a_cookie_of_its_own_origin(
    fault_provider: FaultProviderServer, aiohttp_client: AiohttpClient, host: str, name: str, domain: str
) -> None:
    client = await _client(fault_provider, aiohttp_client)
    answer = await client.get("/oauth2/start?rd=/x", headers={"Host": host}, allow_redirects=False)
    assert answer.status == 302
    cookies = _cookies(answer)
    bindings = {cookie: value for cookie, value in cookies.items() if cookie.startswith(name + "_flow_")}
    assert bindings and set(bindings.values()) == {domain} and len(cookies) == 1


@pytest.mark.parametrize(("host", "name", "domain"), ORIGINS, ids=["app", "sso-origin"])
async def test_sign_out_expires_the_cookies_of_its_own_origin(
    fault_provider: FaultProviderServer, aiohttp_client: AiohttpClient, host: str, name: str, domain: str
) -> None:
    client = await _client(fault_provider, aiohttp_client)
    answer = await client.get(
        "/oauth2/sign_out", headers={"Host": host, "Cookie": f"{name}=stale"}, allow_redirects=False
    )
    assert answer.status == 302
    expired = _cookies(answer)
    assert name in expired and expired[name] == domain


async def test_an_sso_origin_names_its_session_cookie_with_the_host_prefix_and_reads_no_other(
    fault_provider: FaultProviderServer, aiohttp_client: AiohttpClient
) -> None:
    # a whole handoff with the app's session: the wiki's link cookie is __Host-, host-only; the
    # same link under the plain name (what a sibling host can set) opens nothing on the wiki
    client = await _client(fault_provider, aiohttp_client)
    sessions = client.app[SERVICES].sessions
    now = time.time()
    _, central = await sessions.create(alice_signed_in_now(now))
    start = await _get(client, "/oauth2/start?rd=/wiki", WIKI)
    [(binding, binding_value)] = _values(start).items()
    assert binding.startswith(f"__Host-{COOKIE}_flow_sso_")
    authorize = await _get(client, _local(start.headers["Location"]), APP, f"{COOKIE}={central}")
    assert authorize.status == 302
    done = await _get(client, _local(authorize.headers["Location"]), WIKI, f"{binding}={binding_value}")
    assert done.status == 303
    link = _values(done)[f"__Host-{COOKIE}"]
    assert _cookies(done)[f"__Host-{COOKIE}"] == ""
    signed_in = await _get(client, "/oauth2/userinfo", WIKI, f"__Host-{COOKIE}={link}")
    assert signed_in.status == 200 and (await signed_in.json())["sub"] == "alice"
    planted = await _get(client, "/oauth2/userinfo", WIKI, f"{COOKIE}={link}")
    assert planted.status == 401


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


async def test_a_rate_limited_callback_spends_its_code(
    fault_provider: FaultProviderServer, aiohttp_client: AiohttpClient
) -> None:
    # a code works once, even one that is refused: the 429 of the rate limit included
    client = await _client(fault_provider, aiohttp_client)
    services = client.app[SERVICES]
    now = time.time()
    _, central = await services.sessions.create(alice_signed_in_now(now))
    start = await _get(client, "/oauth2/start?rd=/wiki", WIKI)
    [(binding, binding_value)] = _values(start).items()
    authorize = await _get(client, _local(start.headers["Location"]), APP, f"{COOKIE}={central}")
    callback = _local(authorize.headers["Location"])
    for _ in range(100):  # this address's sign-in budget, spent on callbacks that name nothing
        spent = await _get(client, "/oauth2/sso/callback?code=x&state=y", WIKI)
        if spent.status == 429:
            break
    assert (await _get(client, callback, WIKI, f"{binding}={binding_value}")).status == 429
    this_client = SimpleNamespace(remote="127.0.0.1", get=lambda key, default=None: default)
    rate_key = services.flows.rate_key(cast("web.Request", this_client))
    await services.sessions.store.delete(rate_key)  # the window has passed
    again = await _get(client, callback, WIKI, f"{binding}={binding_value}")
    assert again.status == 400 and "Location" not in again.headers
