"""A whole authproxy deployment for the operations tests (logs, metrics, faults, outages).

    with start_ops_stack(tmp_path) as stack:          # provider, upstream, `authproxy run`
        async with stack.browser() as b:
            page = await login(b, stack, "/app/")
        stack.provider_server.stop()                  # the provider goes down ...
        stack.provider_server.start()                 # ... and comes back on the same port
        samples = await scrape_metrics(stack.admin_url)
        records = json_records(stack.proxy.logs())

The provider is the development provider on 127.0.0.2 (its cookies never mix with the proxy's)
with every credential it issues or receives recorded in ``provider.issued``: codes, states, code
verifiers, access, refresh and ID tokens, so tests can prove none of them reaches the logs.
Routes: ``/public`` (auth none), ``/optional`` (auth optional), ``/dead`` (an upstream port
nobody listens on: 502) and everything else (``app``, auth required).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from authproxy.demo.provider import DemoClient, Grant
from tests.support.fault_provider import CLIENT_ID, CLIENT_SECRET, PROVIDER_HOST, AppThread, FaultProvider, serve_app
from tests.support.net import free_port
from tests.support.proxy_process import ProxyProcess, start_proxy
from tests.support.scripted_browser import Page, ScriptedBrowser, login_demo
from tests.support.upstream import Upstream

SESSION_SECRET = "ops-tests-session-secret-0123456789abcdef-XYZ"
COOKIE = "authproxy_session"
FLOW_COOKIE_PREFIX = COOKIE + "_flow_"
JSON = {"Accept": "application/json"}


class RecordingProvider(FaultProvider):
    """The development provider (faults included) that remembers every credential of the flow."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.issued: dict[str, set[str]] = {
            kind: set() for kind in ("code", "state", "code_verifier", "access_token", "refresh_token", "id_token")
        }

    def _keep(self, kind: str, value: object) -> None:
        if isinstance(value, str) and value:
            self.issued[kind].add(value)

    def token_response(self, grant: Grant, *, now: float, refresh_token: str | None) -> dict[str, Any]:
        body = super().token_response(grant, now=now, refresh_token=refresh_token)
        for kind in ("access_token", "refresh_token", "id_token"):
            self._keep(kind, body.get(kind))
        return body

    def redirect_to_client(
        self, redirect_uri: str, state: str | None, params: Mapping[str, str], status: int = 302
    ) -> web.Response:
        self._keep("state", state)
        self._keep("code", params.get("code"))
        return super().redirect_to_client(redirect_uri, state, params, status)

    async def handle_token(self, request: web.Request) -> web.Response:
        form = await request.post()  # aiohttp caches the parsed body for the handler below
        self._keep("code", form.get("code"))
        self._keep("code_verifier", form.get("code_verifier"))
        self._keep("refresh_token", form.get("refresh_token"))
        return await super().handle_token(request)


class ProviderServer:
    """The provider's listener, which tests stop and start again on the same address."""

    def __init__(self, provider: RecordingProvider, host: str, port: int) -> None:
        self.provider = provider
        self.host = host
        self.port = port
        self._thread: AppThread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is None:
            thread = AppThread(self.provider.create_app(), self.host, self.port)
            thread.start()
            self._thread = thread

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None


@dataclass
class OpsStack:
    proxy: ProxyProcess
    provider: RecordingProvider
    provider_server: ProviderServer
    upstream_url: str
    cookies_seen: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def admin_url(self) -> str:
        return self.proxy.admin_url

    def browser(self) -> ScriptedBrowser:
        # a User-Agent of its own: the login-loop guard counts per client IP and User-Agent
        return ScriptedBrowser(user_agent=f"ops-test-{uuid.uuid4()}")

    def note_cookies(self, b: ScriptedBrowser) -> None:
        """Remember the values of the proxy's cookies (session and login flow) this browser holds."""
        self.cookies_seen |= {c.value for c in b.cookies.all() if c.name.startswith(COOKIE) and c.value}

    def secrets(self) -> dict[str, set[str]]:
        """Every credential of the run so far, by kind."""
        return {
            **{kind: set(values) for kind, values in self.provider.issued.items()},
            "cookie": set(self.cookies_seen),
            "client_secret": {CLIENT_SECRET},
            "session_secret": {SESSION_SECRET},
        }


def proxy_config(port: int, issuer: str, upstream_url: str, dead_url: str) -> dict[str, Any]:
    return {
        "server": {
            "listen": f"127.0.0.1:{port}",
            "public_url": f"http://127.0.0.1:{port}",
            "rate_limit": {"auth_per_minute": 100000},
        },
        "provider": {"issuer": issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "timeout": "3s"},
        "session": {"secrets": [SESSION_SECRET], "cookie": {"secure": False}},
        "routes": [
            {"name": "public", "match": {"path_prefix": "/public"}, "upstream": upstream_url, "auth": "none"},
            {"name": "optional", "match": {"path_prefix": "/optional"}, "upstream": upstream_url, "auth": "optional"},
            {"name": "dead", "match": {"path_prefix": "/dead"}, "upstream": dead_url, "timeout": "5s"},
            {"name": "app", "upstream": upstream_url},
        ],
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


@contextmanager
def start_ops_stack(
    directory: Path,
    *,
    config: dict[str, Any] | None = None,
    args: tuple[str, ...] = (),
    provider_up: bool = True,
    **provider_options: Any,
) -> Iterator[OpsStack]:
    """Provider (``provider_options`` go to ``DemoProvider``), upstream and a proxy subprocess.

    ``config`` is merged into the proxy's configuration; ``provider_up=False`` starts the proxy
    while the provider's address refuses connections (start it with ``provider_server.start()``).
    """
    provider_port = free_port(PROVIDER_HOST)
    issuer = f"http://{PROVIDER_HOST}:{provider_port}"
    provider = RecordingProvider(issuer, [], **provider_options)
    port = free_port()
    provider.register_client(
        DemoClient(
            CLIENT_ID, CLIENT_SECRET, [f"http://127.0.0.1:{port}/oauth2/callback"], [f"http://127.0.0.1:{port}/"]
        )
    )
    server = ProviderServer(provider, PROVIDER_HOST, provider_port)
    if provider_up:
        server.start()
    dead_url = f"http://127.0.0.1:{free_port()}"
    try:
        with serve_app(Upstream().app()) as upstream_url:
            settings = _merge(proxy_config(port, issuer, upstream_url, dead_url), config or {})
            proxy = start_proxy(settings, directory, args=args)
            try:
                yield OpsStack(proxy, provider, server, upstream_url)
            finally:
                proxy.kill()
    finally:
        server.stop()


async def login(b: ScriptedBrowser, stack: OpsStack, rd: str = "/", user: str = "alice") -> Page:
    """A whole login through /oauth2/start, remembering the flow and session cookies on the way."""
    start = await b.get(f"{stack.url}/oauth2/start?rd={rd}", follow_redirects=False)
    assert start.status == 302 and start.location, start
    stack.note_cookies(b)
    page = await login_demo(b, start.location, user)
    stack.note_cookies(b)
    return page


def upstream_seen(page: Page) -> dict[str, str]:
    """The request headers the echo upstream received, names lower-cased."""
    return {k.lower(): v for k, v in page.json()["headers"]}


def json_records(text: str) -> list[dict[str, Any]]:
    """Each line of ``text`` as a JSON object; AssertionError naming the first line that is not one."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"log line {number} is not JSON: {line[:300]!r}") from None
        assert isinstance(record, dict), f"log line {number} is not a JSON object: {line[:300]!r}"
        records.append(record)
    return records


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape_metrics(admin_url: str) -> Samples:
    """The admin listener's /metrics as {(sample name, labels without ``worker``): value}."""
    async with aiohttp.ClientSession() as client, client.get(admin_url + "/metrics") as answer:
        assert answer.status == 200
        return parse_metrics(await answer.text())


def parse_metrics(text: str, *, without: str | None = "worker") -> Samples:
    """Prometheus text as {(sample name, labels): value}; samples that differ only in the label
    ``without`` are summed (by default the worker's: one scrape's figures, whichever worker)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if k != without)
            key = (sample.name, labels)
            samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def metric(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= have)


async def readiness(admin_url: str) -> tuple[int, dict[str, Any]]:
    """/readyz's status and JSON body."""
    async with aiohttp.ClientSession() as client, client.get(admin_url + "/readyz") as answer:
        return answer.status, await answer.json()
