"""Faults under load: signed-in traffic through two proxy processes while the parts around them fail.

    async with soak_stack(directory, topology="standalone") as stack:   # or "cluster", "sentinel"
        report = await run_soak(stack, standalone_plan(scale=1.0))
    assert report.sessions_lost == 0 and report.fail_open == 0

A short version runs in the suite (tests/test_soak_faults.py); ``make soak`` runs a longer one
(bench/soak_faults.py). The parts are real: redis-server with append-only persistence (fsync
always, so a crash loses no session), the development provider on 127.0.0.2 (stopped and started
on its port), an upstream that records what reaches it and can reset connections, and two
``authproxy run`` processes sharing the store. The load is an in-process asyncio generator
(a wrk-like closed loop of concurrent clients) that checks every answer.

What is counted:

- ``served``: 200 answers whose identity is the session's own user;
- ``errors``: every other outcome, by phase and kind (``503``, ``502``, ``401``, ``connection``...);
- ``fail_open``: protected requests that reached the upstream without an identity, with the
  spoofed identity the load sends in every request, or with another user's identity. Always 0;
- ``sessions_lost``: sessions that no longer work on either replica once every fault is over.
  With persistence a Redis restart must lose none.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp import web

from authproxy.demo.provider import DemoClient, DemoProvider
from tests.support.fault_provider import PROVIDER_HOST, AppThread
from tests.support.net import free_port
from tests.support.proxy_process import ProxyProcess, start_proxy
from tests.support.redis_server import (
    RedisServer,
    holds_keys,
    start_redis_cluster,
    start_redis_sentinel,
    start_redis_server,
)
from tests.support.scripted_browser import ScriptedBrowser, login_demo
from tests.support.upstream import _reset

Topology = Literal["standalone", "cluster", "sentinel"]
CLIENT_ID = "soak-faults"
CLIENT_SECRET = "soak-faults-client-secret-0123456789abcdef"
SESSION_SECRET = "soak-faults-session-secret-0123456789abcdef"
COOKIE = "authproxy_session"
SPOOFED_USER = "mallory-spoofed"
USERS = ("alice", "bob", "carol")
# Redis persists every write before answering: a SIGKILL loses nothing
PERSISTENT = ("--appendonly", "yes", "--appendfsync", "always")
JSON = {"Accept": "application/json"}


# ---------------------------------------------------------------------------------------- upstream


@dataclass
class UpstreamRecord:
    """What reached the upstream on protected paths: the fail-open evidence."""

    protected: int = 0
    without_identity: int = 0
    spoofed: int = 0
    resets: int = 0


class RecordingUpstream:
    """Answers ``{"user": X-Forwarded-User}``; while ``resetting``, resets every connection."""

    def __init__(self) -> None:
        self.record = UpstreamRecord()
        self.resetting = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        users = request.headers.getall("X-Forwarded-User", [])
        if request.path.startswith("/app"):
            self.record.protected += 1
            if not users:
                self.record.without_identity += 1
            if SPOOFED_USER in users or SPOOFED_USER in request.headers.get("X-Forwarded-Email", ""):
                self.record.spoofed += 1
        if self.resetting:
            self.record.resets += 1
            _reset(request)
            return web.Response()  # never sent: the connection is gone
        return web.json_response({"user": users[0] if users else None})


# ---------------------------------------------------------------------------------------- the stack


class ProviderListener:
    """The development provider on 127.0.0.2, stopped and started again on the same port."""

    def __init__(self, provider: DemoProvider, port: int) -> None:
        self.provider = provider
        self.port = port
        self._thread: AppThread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = AppThread(self.provider.create_app(), PROVIDER_HOST, self.port)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None


@dataclass
class SoakStack:
    topology: Topology
    proxies: list[ProxyProcess]
    provider: ProviderListener
    upstream: RecordingUpstream
    redis_nodes: list[RedisServer]  # the servers holding sessions (the master, or every cluster node)
    directory: Path
    stopped_node: RedisServer | None = None  # the node a store fault stopped, to restart

    @property
    def public_url(self) -> str:
        return self.proxies[0].url


def _session_settings(
    topology: Topology, directory: Path, cleanup: AsyncExitStack
) -> tuple[dict[str, Any], list[RedisServer]]:
    if topology == "standalone":
        server = start_redis_server(directory / "redis", *PERSISTENT)
        cleanup.callback(server.kill)
        return {"url": server.url}, [server]
    if topology == "cluster":
        cluster = start_redis_cluster(directory / "cluster", extra_args=PERSISTENT)
        cleanup.callback(cluster.kill)
        return {"url": cluster.url, "cluster": True}, cluster.nodes
    sentinel = start_redis_sentinel(directory / "sentinel", extra_args=PERSISTENT)
    cleanup.callback(sentinel.kill)
    settings = {
        "url": "redis://127.0.0.1:6379/0",  # the Sentinel names the master; this host is not used
        "sentinel": {"master_name": sentinel.master_name, "nodes": sentinel.nodes},
    }
    return settings, [sentinel.master]


@contextlib.asynccontextmanager
async def soak_stack(directory: Path, topology: Topology = "standalone") -> AsyncIterator[SoakStack]:
    """Store, provider, upstream and two proxy replicas (``proxies[0]`` owns the public URL)."""
    async with AsyncExitStack() as cleanup:
        redis, nodes = _session_settings(topology, directory, cleanup)
        ports = [free_port(), free_port()]
        public_url = f"http://127.0.0.1:{ports[0]}"
        provider_port = free_port(PROVIDER_HOST)
        issuer = f"http://{PROVIDER_HOST}:{provider_port}"
        # access tokens outlive the run: a provider outage must not touch signed-in traffic
        provider = DemoProvider(issuer, [], access_token_ttl=3600)
        provider.register_client(DemoClient(CLIENT_ID, CLIENT_SECRET, [public_url + "/oauth2/callback"], []))
        listener = ProviderListener(provider, provider_port)
        listener.start()
        cleanup.callback(listener.stop)
        upstream = RecordingUpstream()
        upstream_thread = AppThread(upstream.app(), "127.0.0.1", free_port())
        upstream_thread.start()
        cleanup.callback(upstream_thread.stop)
        proxies = []
        for port in ports:
            config = {
                "server": {
                    "listen": f"127.0.0.1:{port}",
                    "public_url": public_url,
                    "rate_limit": {"auth_per_minute": 100000},
                    "shutdown_timeout": "5s",
                },
                "provider": {"issuer": issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "timeout": "2s"},
                "session": {
                    "store": "redis",
                    "redis": {**redis, "timeout": "1s"},
                    # every request reads the store, so each outage is felt (and must fail closed)
                    # at once; with the cache on, sessions cached from a node that went down may be
                    # served until the cache's own limits end them (docs/security.md)
                    "cache": {"enabled": False},
                    "secrets": [SESSION_SECRET],
                    "cookie": {"secure": False},
                },
                "routes": [
                    {"name": "app", "match": {"path_prefix": "/app"}, "upstream": upstream_thread.url, "timeout": "5s"},
                    {"name": "public", "upstream": upstream_thread.url, "auth": "none"},
                ],
            }
            proxy = start_proxy(config, directory / f"proxy-{port}")
            cleanup.callback(proxy.kill)
            proxies.append(proxy)
        yield SoakStack(topology, proxies, listener, upstream, nodes, directory)


# ---------------------------------------------------------------------------------------- sessions


@dataclass
class Session:
    user: str
    cookie: str


async def sign_in(stack: SoakStack, user: str) -> Session | None:
    """A full login through the first replica; None when it did not complete."""
    async with ScriptedBrowser(user_agent=f"soak-{uuid.uuid4()}") as browser:
        page = await login_demo(browser, stack.public_url + "/app/", user)
        cookie = browser.cookies.get(COOKIE, "127.0.0.1")
        if page.status != 200 or cookie is None:
            return None
        return Session(user, cookie)


# ---------------------------------------------------------------------------------------- load and faults


@dataclass
class Phase:
    """A stretch of the run: ``begin`` starts a fault, ``end`` repairs it; ``allowed`` error kinds."""

    name: str
    seconds: float
    allowed: frozenset[str] = frozenset()
    begin: Callable[[SoakStack], None] | None = None
    end: Callable[[SoakStack], None] | None = None
    # a check run once while the phase lasts (logins during an outage); it notes what it saw
    during: Callable[[SoakStack, Report], Awaitable[None]] | None = None


@dataclass
class Report:
    topology: str
    served: int = 0
    requests: int = 0
    by_phase: dict[str, Counter[str]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    fail_open: int = 0
    spoofed_seen: int = 0
    wrong_identity: int = 0
    anonymous_probes: int = 0
    anonymous_let_through: int = 0
    sessions: int = 0
    sessions_lost: int = 0
    notes: list[str] = field(default_factory=list)

    def errors(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self.by_phase.values():
            total.update({kind: n for kind, n in counts.items() if kind not in ("ok", "anonymous-401")})
        return total

    def lines(self) -> list[str]:
        out = [
            f"topology {self.topology}: {self.requests} requests, {self.served} served with the right identity",
            f"  errors by kind: {dict(self.errors()) or 'none'}",
            f"  sessions lost: {self.sessions_lost} of {self.sessions}",
            f"  fail-open: {self.fail_open} (spoofed identity seen upstream: {self.spoofed_seen}, "
            f"wrong user: {self.wrong_identity}, anonymous probes let through: "
            f"{self.anonymous_let_through} of {self.anonymous_probes})",
        ]
        for name, counts in self.by_phase.items():
            out.append(f"  phase {name}: {dict(counts)}")
        out += [f"  unexpected: {u}" for u in self.unexpected[:20]]
        out += [f"  note: {n}" for n in self.notes]
        return out


def _kind(status: int) -> str:
    return "ok" if status == 200 else str(status)


async def _client_loop(
    client: aiohttp.ClientSession,
    stack: SoakStack,
    sessions: Sequence[Session],
    report: Report,
    current: list[str],
    stop: asyncio.Event,
    seed: int,
) -> None:
    """One closed-loop client: signed-in requests over both replicas, now and then an anonymous one."""
    count = seed
    while not stop.is_set():
        count += 1
        proxy = stack.proxies[count % len(stack.proxies)]
        anonymous = count % 10 == 0
        session = sessions[count % len(sessions)]
        headers = {**JSON, "X-Forwarded-User": SPOOFED_USER, "X-Forwarded-Email": SPOOFED_USER + "@example.com"}
        if not anonymous:
            headers["Cookie"] = f"{COOKIE}={session.cookie}"
        try:
            async with client.get(f"{proxy.url}/app/item/{count}", headers=headers, allow_redirects=False) as answer:
                body = await answer.read()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as e:
            phase = current[0]
            kind = "connection" if not isinstance(e, TimeoutError) else "client-timeout"
            report.by_phase.setdefault(phase, Counter())[kind] += 1
            report.requests += 1
            continue
        # counted in the phase it ended in: a request begun before a fault may meet it mid-way
        phase = current[0]
        report.requests += 1
        if anonymous:
            report.anonymous_probes += 1
            if status == 200:
                report.anonymous_let_through += 1
                report.unexpected.append(f"{phase}: an anonymous request was served")
            kind = "anonymous-" + _kind(status)
            report.by_phase.setdefault(phase, Counter())[kind] += 1
            continue
        kind = _kind(status)
        if status == 200:
            user = _user_of(body)
            if user == session.user:
                report.served += 1
            else:
                kind = "wrong-identity"
                report.wrong_identity += 1
        report.by_phase.setdefault(phase, Counter())[kind] += 1


def _user_of(body: bytes) -> str | None:
    import json

    try:
        value = json.loads(body).get("user")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


async def _check_sessions(stack: SoakStack, sessions: Sequence[Session], report: Report, attempts: int = 20) -> None:
    """After the faults: every session must work on every replica (retried while the store settles)."""
    lost = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        for session in sessions:
            works = False
            for _ in range(attempts):
                statuses = []
                for proxy in stack.proxies:
                    headers = {**JSON, "Cookie": f"{COOKIE}={session.cookie}"}
                    try:
                        async with client.get(proxy.url + "/app/check", headers=headers) as answer:
                            statuses.append((answer.status, _user_of(await answer.read())))
                    except (aiohttp.ClientError, TimeoutError):
                        statuses.append((0, None))
                if all(s == (200, session.user) for s in statuses):
                    works = True
                    break
                if any(status == 401 for status, _ in statuses):
                    break  # the proxy says there is no such session: it is gone
                await asyncio.sleep(0.25)
            lost += not works
    report.sessions_lost = lost


async def run_soak(
    stack: SoakStack, phases: Sequence[Phase], *, concurrency: int = 8, users_per_name: int = 2
) -> Report:
    """Sign users in, keep ``concurrency`` clients busy through ``phases``, then count and check."""
    report = Report(stack.topology)
    sessions = [s for s in [await sign_in(stack, user) for user in USERS for _ in range(users_per_name)] if s]
    report.sessions = len(sessions)
    if not sessions:
        report.unexpected.append("no session could sign in")
        return report
    current = [phases[0].name]
    stop = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as client:
        clients = [
            asyncio.create_task(_client_loop(client, stack, sessions, report, current, stop, seed=i * 1000))
            for i in range(concurrency)
        ]
        try:
            for phase in phases:
                current[0] = phase.name
                if phase.begin is not None:
                    await asyncio.to_thread(phase.begin, stack)
                started = time.monotonic()
                if phase.during is not None:
                    await phase.during(stack, report)
                await asyncio.sleep(max(0.0, phase.seconds - (time.monotonic() - started)))
                if phase.end is not None:
                    await asyncio.to_thread(phase.end, stack)
        finally:
            stop.set()
            await asyncio.gather(*clients, return_exceptions=True)
    for phase in phases:
        counts = report.by_phase.get(phase.name, Counter())
        for kind, n in counts.items():
            if kind not in phase.allowed and kind not in ("ok", "anonymous-401"):
                report.unexpected.append(f"{phase.name}: {n} x {kind}")
    await _check_sessions(stack, sessions, report)
    record = stack.upstream.record
    report.spoofed_seen = record.spoofed
    report.fail_open = record.without_identity + record.spoofed + report.wrong_identity + report.anonymous_let_through
    return report


# ---------------------------------------------------------------------------------------- fault plans


def _restart_redis(stack: SoakStack) -> None:
    assert stack.stopped_node is not None
    stack.stopped_node.start()


def _stop_redis(stack: SoakStack) -> None:
    # a cluster spreads sessions over its masters by key slot: stop one that holds a session, or
    # the outage may touch none of the soak's few sessions and go unfelt
    holding = [node for node in stack.redis_nodes if holds_keys(node.port, "*session:*")]
    stack.stopped_node = holding[0] if holding else stack.redis_nodes[0]
    stack.stopped_node.stop()  # SIGKILL: a crash, not a shutdown


def _set_resetting(on: bool) -> Callable[[SoakStack], None]:
    def apply(stack: SoakStack) -> None:
        stack.upstream.resetting = on

    return apply


# the store is down: protected requests fail closed (503); a moment after it returns they pass again
STORE_DOWN = frozenset({"503"})
# right after a repair, a request that started during the fault may still end with its error
SETTLING = frozenset({"503", "502"})


def standalone_plan(scale: float = 1.0) -> list[Phase]:
    """Redis restart, provider outage (logins tried during it), upstream resets; ``scale`` stretches it."""
    return [
        Phase("warm-up", 1.0 * scale),
        Phase("redis-down", 1.5 * scale, STORE_DOWN, begin=_stop_redis, end=_restart_redis),
        Phase("redis-back", 1.5 * scale, SETTLING),
        Phase(
            "provider-down",
            2.0 * scale,
            begin=lambda s: s.provider.stop(),
            end=lambda s: s.provider.start(),
            during=login_while_provider_is_down,
        ),
        Phase("provider-back", 1.0 * scale, during=login_after_provider_returns),
        Phase(
            "upstream-resets", 1.5 * scale, frozenset({"502"}), begin=_set_resetting(True), end=_set_resetting(False)
        ),
        Phase("upstream-back", 1.5 * scale, SETTLING),
    ]


def store_restart_plan(scale: float = 1.0) -> list[Phase]:
    """Cluster or Sentinel: the node holding sessions (a cluster master, the Sentinel's master) restarts."""
    return [
        Phase("warm-up", 1.0 * scale),
        Phase("node-down", 1.5 * scale, STORE_DOWN, begin=_stop_redis, end=_restart_redis),
        Phase("node-back", 2.5 * scale, SETTLING),
    ]


async def login_while_provider_is_down(stack: SoakStack, report: Report) -> None:
    """A login started with the provider stopped must not end in a session."""
    async with ScriptedBrowser(user_agent=f"soak-{uuid.uuid4()}") as browser:
        page = await browser.get(stack.public_url + "/oauth2/start?rd=/app/", follow_redirects=False)
        status = page.status
        location = page.location or ""
        if status == 302 and location.startswith(f"http://{PROVIDER_HOST}"):
            try:
                await browser.get(location)
                report.unexpected.append("provider-down: the stopped provider answered")
            except (aiohttp.ClientError, OSError):
                pass  # the browser cannot reach the provider: the login cannot go on
        if browser.cookies.get(COOKIE, "127.0.0.1") is not None:
            report.unexpected.append("provider-down: a login produced a session")
        report.notes.append(f"login started during the provider outage: /oauth2/start answered {status}, no session")


async def login_after_provider_returns(stack: SoakStack, report: Report) -> None:
    """Once the provider is back, a new login works again."""
    session = await sign_in(stack, USERS[0])
    if session is None:
        report.unexpected.append("provider-back: a new login did not complete")
    else:
        report.notes.append("a new login completed after the provider came back")
