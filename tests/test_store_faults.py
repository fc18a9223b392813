"""Session store faults (SPEC section 5): fail closed while Redis is gone, recover by itself.

A proxy subprocess with ``session.store: redis`` (a real redis-server, no persistence) serves a
signed-in browser's steady stream of requests while Redis is killed and restarted on the same
port, and while it hangs (SIGSTOP). While the store cannot answer, every protected request is
503 (never a 200 without the session, never an anonymous pass-through), public routes keep
answering, and /readyz names the session store; afterwards the proxy serves again without a
restart. The session itself is lost with a restart (nothing persisted), so a new login must work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.ops import (
    JSON,
    OpsStack,
    login,
    metric,
    readiness,
    scrape_metrics,
    start_ops_stack,
    upstream_seen,
)
from tests.support.redis_server import RedisServer
from tests.support.scripted_browser import Page, ScriptedBrowser

STORE_TIMEOUT = 0.5  # session.redis.timeout of the proxy under test
REQUESTS = 200
INTERVAL = 0.025  # ~200 requests in ~6 s
STOP_AT = 1.5
START_AT = 3.5
RECOVERY_GRACE = 1.0  # after Redis answers again, the proxy may take this long to notice


@contextmanager
def redis_stack(directory: Path, redis: RedisServer, *, cache: bool = False) -> Iterator[OpsStack]:
    """A proxy on ``redis``; without the session cache unless asked (these tests are about the store)."""
    session: dict[str, Any] = {
        "store": "redis",
        "redis": {"url": redis.url, "timeout": f"{int(STORE_TIMEOUT * 1000)}ms"},
    }
    if not cache:
        session["cache"] = {"enabled": False}
    config = {"session": session}
    with start_ops_stack(directory, config=config) as stack:
        yield stack


@dataclass
class Sample:
    started: float
    ended: float
    path: str
    status: int
    user: str | None
    retry_after: str | None
    body: str


def user_of(page: Page) -> str | None:
    try:
        return upstream_seen(page).get("x-forwarded-user")
    except ValueError:
        return None


async def probe(b: ScriptedBrowser, url: str) -> Sample:
    started = time.monotonic()
    page = await b.get(url, headers=JSON, follow_redirects=False)
    user = user_of(page) if page.status == 200 and "/app/" in url else None
    return Sample(started, time.monotonic(), url, page.status, user, page.headers.get("Retry-After"), page.text)


def protected(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if "/app/" in s.path]


def public(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s.path.endswith("/public/p")]


def assert_never_open(samples: list[Sample]) -> None:
    """No 500 and no traceback anywhere; a protected 200 always carries the signed-in user."""
    for sample in samples:
        assert sample.status != 500 and "Traceback" not in sample.body, sample
        if "/app/" in sample.path and sample.status == 200:
            assert sample.user == "alice", sample


def assert_proxy_alive(stack: OpsStack) -> None:
    assert stack.proxy.process.poll() is None, stack.proxy.logs()
    logs = stack.proxy.logs()
    assert "Traceback" not in logs and "unhandled error" not in logs


async def test_redis_restart_under_load_fails_closed_and_recovers(tmp_path: Path, redis_server: RedisServer) -> None:
    with redis_stack(tmp_path, redis_server) as stack:
        async with stack.browser() as b:
            assert user_of(await login(b, stack, "/app/start")) == "alice"
            errors_before = metric(await scrape_metrics(stack.admin_url), "authproxy_session_store_errors_total")
            t0 = time.monotonic()
            marks: dict[str, float] = {}
            down_readiness: list[tuple[int, dict[str, Any]]] = []

            async def fault() -> None:
                await asyncio.sleep(STOP_AT)
                marks["stopping"] = time.monotonic()
                await asyncio.to_thread(redis_server.stop)
                marks["down"] = time.monotonic()
                down_readiness.append(await readiness(stack.admin_url))
                await asyncio.sleep(START_AT - STOP_AT)
                marks["starting"] = time.monotonic()
                await asyncio.to_thread(redis_server.start)
                marks["up"] = time.monotonic()

            async def load() -> list[Sample]:
                samples = []
                for i in range(REQUESTS):
                    path = "/public/p" if i % 4 == 3 else f"/app/p{i}"
                    samples.append(await probe(b, stack.url + path))
                    await asyncio.sleep(INTERVAL)
                return samples

            faulting = asyncio.create_task(fault())
            samples = await load()
            await faulting
            assert samples[-1].ended - t0 > START_AT + 1.5, "the load must outlast the outage"

            assert_never_open(samples)
            before = [s for s in samples if s.ended < marks["stopping"]]
            down = [s for s in samples if s.started > marks["down"] and s.ended < marks["starting"]]
            after = [s for s in samples if s.started > marks["up"] + RECOVERY_GRACE]

            assert len(protected(before)) >= 20 and {s.status for s in protected(before)} == {200}
            assert len(protected(down)) >= 20 and len(public(down)) >= 5
            assert {s.status for s in protected(down)} == {503}, [s.status for s in protected(down)]
            assert all(s.retry_after for s in protected(down))
            assert {s.status for s in public(down)} == {200}
            # Redis came back empty: the session is gone, so the protected route asks for a login
            assert len(protected(after)) >= 20 and {s.status for s in protected(after)} == {401}
            assert {s.status for s in public(after)} == {200}

            [(status, body)] = down_readiness
            assert status == 503 and body["ready"] is False
            assert body["checks"]["session_store"] != "ok" and body["checks"]["provider"] == "ok"
            assert await readiness(stack.admin_url) == (
                200,
                {"ready": True, "checks": body["checks"] | {"session_store": "ok"}},
            )

            page = await login(b, stack, "/app/again")
            assert page.status == 200 and user_of(page) == "alice"
            errors_after = metric(await scrape_metrics(stack.admin_url), "authproxy_session_store_errors_total")
            assert errors_after - errors_before >= len(protected(down))
        assert_proxy_alive(stack)


async def test_hung_redis_gives_503_within_the_store_timeout(tmp_path: Path, redis_server: RedisServer) -> None:
    with redis_stack(tmp_path, redis_server) as stack:
        async with stack.browser() as b:
            assert user_of(await login(b, stack, "/app/start")) == "alice"
            redis_server.freeze()
            try:
                hung = [await probe(b, f"{stack.url}/app/hung{i}") for i in range(3)]
                anonymous = await probe(b, f"{stack.url}/public/p")
                started = time.monotonic()
                status, body = await readiness(stack.admin_url)
                readiness_took = time.monotonic() - started
            finally:
                redis_server.thaw()
            assert_never_open([*hung, anonymous])
            for sample in hung:
                assert sample.status == 503 and sample.retry_after, sample
                # the per-operation deadline, plus room for a loaded test machine
                assert sample.ended - sample.started < STORE_TIMEOUT * 2 + 1.0, sample
            assert anonymous.status == 200 and anonymous.ended - anonymous.started < 1.0
            assert status == 503 and body["checks"]["session_store"] != "ok"
            assert readiness_took < STORE_TIMEOUT * 2 + 1.0
            # the frozen server kept its data: once it answers, the same session works again
            deadline = time.monotonic() + 5
            while (back := await probe(b, f"{stack.url}/app/back")).status == 503 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert back.status == 200 and back.user == "alice", back
        assert_proxy_alive(stack)


async def test_with_the_default_session_cache_a_hung_redis_still_fails_closed(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The cache (on by default) may answer from memory only until its feed stops answering."""
    with redis_stack(tmp_path, redis_server, cache=True) as stack:
        async with stack.browser() as b:
            assert user_of(await login(b, stack, "/app/start")) == "alice"
            redis_server.freeze()
            samples: list[Sample] = []
            try:
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    samples.append(await probe(b, f"{stack.url}/app/hung{len(samples)}"))
                    if samples[-1].status == 503:
                        break
                    await asyncio.sleep(0.1)
                # once failed closed, it stays closed while Redis hangs
                after = [await probe(b, f"{stack.url}/app/still{i}") for i in range(3)]
            finally:
                redis_server.thaw()
            assert_never_open(samples + after)
            assert samples[-1].status == 503 and samples[-1].retry_after, samples[-1]
            assert all(sample.status == 503 for sample in after), after
        assert_proxy_alive(stack)
