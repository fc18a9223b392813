"""Bodies stream both ways (SPEC section 4): SSE and chunked as written, flat memory for 200 MB."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import BLOCK, MIB, Route, Upstream, serve_proxy, upstream_fixture  # noqa: F401

T = TypeVar("T")
BIG_MB = 200
RSS_GROWTH_LIMIT = 50 * MIB


async def test_sse_first_event_arrives_before_upstream_finishes(upstream: Upstream) -> None:
    async with (
        serve_proxy(Route(upstream.url)) as url,
        aiohttp.ClientSession() as client,
        client.get(url + "/sse", headers={"Accept": "text/event-stream"}) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert "Content-Length" not in resp.headers
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
        assert first == b"id: 1\ndata: first\n\n"
        # the upstream is still waiting to be released: the event came through on its own
        assert not upstream.release.is_set()
        upstream.release.set()
        rest = await asyncio.wait_for(resp.content.read(), 5)
        assert rest == b"id: 2\ndata: second\n\nid: 3\ndata: third\n\n"


async def test_chunked_response_passed_through_as_chunks(upstream: Upstream) -> None:
    async with (
        serve_proxy(Route(upstream.url)) as url,
        aiohttp.ClientSession() as client,
        client.get(url + "/chunked") as resp,
    ):
        assert resp.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in resp.headers
        lines = [await asyncio.wait_for(resp.content.readline(), 5) for _ in range(3)]
        assert lines == [b"alpha\n", b"beta\n", b"gamma\n"]
        assert await resp.content.read() == b""


async def test_active_download_longer_than_route_timeout_completes(upstream: Upstream) -> None:
    """8 chunks 0.25 s apart (2 s) through a 1 s route timeout: idle gaps count, total time does not."""
    async with (
        serve_proxy(Route(upstream.url, timeout=1.0)) as url,
        aiohttp.ClientSession() as client,
        client.get(url + "/drip?n=8&interval=0.25") as resp,
    ):
        assert resp.status == 200
        body = await resp.read()
    assert body.count(b"drop ") == 8


async def generated(total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        block = BLOCK[: min(len(BLOCK), total - sent)]
        sent += len(block)
        yield block


def expected_sha256(total: int) -> str:
    digest = hashlib.sha256()
    for _ in range(total // len(BLOCK)):
        digest.update(BLOCK)
    digest.update(BLOCK[: total % len(BLOCK)])
    return digest.hexdigest()


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
async def test_upload_streams_intact(upstream: Upstream, with_length: bool) -> None:
    total = 8 * MIB + 123
    headers = {"Content-Length": str(total)} if with_length else {}
    async with (
        serve_proxy(Route(upstream.url)) as url,
        aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as client,
        client.post(url + "/upload", data=generated(total), headers=headers) as resp,
    ):
        assert resp.status == 200
        answer = await resp.json()
    assert answer["size"] == total
    assert answer["sha256"] == expected_sha256(total)
    if with_length:
        assert answer["content_length"] == str(total)
        assert answer["transfer_encoding"] is None
    else:
        assert answer["content_length"] is None
        assert answer["transfer_encoding"] == "chunked"
    assert answer["content_type"] is None


async def test_download_keeps_content_length(upstream: Upstream) -> None:
    async with (
        serve_proxy(Route(upstream.url)) as url,
        aiohttp.ClientSession() as client,
        client.get(url + "/big?mb=3") as resp,
    ):
        assert resp.headers["Content-Length"] == str(3 * MIB)
        assert "Transfer-Encoding" not in resp.headers
        assert len(await resp.read()) == 3 * MIB


# ---------------------------------------------------------------- memory, in a real proxy process


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


async def rss_growth_during(pid: int, work: Callable[[], Awaitable[T]]) -> tuple[int, T]:
    """Peak RSS minus the RSS before ``work``, in bytes (VmHWM reset via clear_refs, and sampled)."""
    clear_refs = Path(f"/proc/{pid}/clear_refs")
    try:
        clear_refs.write_text("5")  # resets the peak (VmHWM) to the current RSS
        reset = True
    except OSError:
        reset = False
    baseline = _status_kib(pid, "VmRSS")
    peak = baseline
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _status_kib(pid, "VmRSS"))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        result = await work()
    finally:
        stop.set()
        await sampler
    if reset:
        peak = max(peak, _status_kib(pid, "VmHWM"))
    return (peak - baseline) * 1024, result


@pytest.fixture
async def proxy_process(run_proxy: Callable[..., ProxyProcess], upstream: Upstream) -> AsyncIterator[ProxyProcess]:
    """``authproxy run`` with one public route to ``upstream``, warmed up (pool, buffers, imports)."""
    proxy = await asyncio.to_thread(
        run_proxy, {"routes": [{"name": "app", "upstream": upstream.url, "auth": "none", "timeout": "30s"}]}
    )
    async with aiohttp.ClientSession() as client:
        for _ in range(3):
            async with client.get(proxy.url + "/big?mb=8") as resp:
                assert len(await resp.read()) == 8 * MIB
            async with client.post(proxy.url + "/upload", data=generated(8 * MIB)) as resp:
                assert (await resp.json())["size"] == 8 * MIB
    yield proxy
    await asyncio.to_thread(proxy.terminate)


async def test_200mb_download_keeps_proxy_memory_flat(proxy_process: ProxyProcess) -> None:
    async def download() -> tuple[int, float]:
        received = 0
        started = time.monotonic()
        async with aiohttp.ClientSession() as client, client.get(f"{proxy_process.url}/big?mb={BIG_MB}") as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(MIB):
                received += len(chunk)
        return received, time.monotonic() - started

    growth, (received, _seconds) = await rss_growth_during(proxy_process.pid, download)
    assert received == BIG_MB * MIB
    assert growth < RSS_GROWTH_LIMIT, f"proxy RSS grew by {growth / MIB:.1f} MiB"


async def test_200mb_upload_keeps_proxy_memory_flat(proxy_process: ProxyProcess) -> None:
    total = BIG_MB * MIB

    async def upload() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as client,
            client.post(f"{proxy_process.url}/upload", data=generated(total)) as resp,
        ):
            assert resp.status == 200
            answer: dict[str, Any] = await resp.json()
            return answer

    growth, answer = await rss_growth_during(proxy_process.pid, upload)
    assert answer["size"] == total
    assert answer["sha256"] == expected_sha256(total)
    assert growth < RSS_GROWTH_LIMIT, f"proxy RSS grew by {growth / MIB:.1f} MiB"
