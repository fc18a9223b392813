"""The measurements: wrk points, downloads with memory sampling, scripted logins, refreshes.

Load generators (wrk, curl, this process's login driver) run on the load CPUs; what is measured
runs on the servers' CPUs. CPU time is read for the target's whole process tree around each run.
Nothing here prints or logs a cookie value: cookies travel only in wrk's and curl's arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp

from bench.configs import BIG_PATH, UPSTREAM_BODY
from bench.processes import (
    Pinning,
    Processes,
    busy_cpu_seconds,
    cpu_seconds,
    own_cpu_seconds,
    pinned_argv,
    process_tree,
    rss_bytes,
)
from bench.report import Download, Logins
from bench.servers import Server
from bench.wrk import DONE_SCRIPT, Point, WrkResult, parse_wrk_output, wrk_argv
from tests.support.scripted_browser import ScriptedBrowser, login_demo

USERNAME: Final = "alice"
RSS_SAMPLE_INTERVAL: Final = 0.01
WRK_GRACE: Final = 30.0


class MeasureError(RuntimeError):
    """A measurement could not be taken (a login failed, a tool is missing)."""


@dataclass
class Bench:
    """What every measurement needs: the processes, where wrk's script is, the upstream counter."""

    processes: Processes
    run_dir: Path
    status_url: str

    @property
    def pinning(self) -> Pinning:
        return self.processes.pinning

    @property
    def script(self) -> Path:
        path = self.run_dir / "done.lua"
        if not path.exists():
            path.write_text(DONE_SCRIPT)
        return path

    @property
    def threads(self) -> int:
        return len(self.pinning.load)


def cookie_header(server: Server, cookie: str | None) -> list[str]:
    return [] if cookie is None or server.cookie_name is None else [f"Cookie: {server.cookie_name}={cookie}"]


async def upstream_requests(bench: Bench) -> int:
    """The upstream's total request counter (nginx ``stub_status``: accepts handled requests)."""
    async with aiohttp.ClientSession() as http, http.get(bench.status_url) as answer:
        text = await answer.text()
    return int(text.splitlines()[2].split()[2])


async def run_wrk(bench: Bench, url: str, connections: int, seconds: float, headers: Sequence[str]) -> WrkResult:
    argv = wrk_argv(
        url, connections=connections, seconds=seconds, threads=bench.threads, script=str(bench.script), headers=headers
    )
    process = await asyncio.create_subprocess_exec(
        *pinned_argv(argv, bench.pinning.load, bench.pinning),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), seconds + WRK_GRACE)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return parse_wrk_output(output.decode(errors="replace"))


async def measure_point(
    bench: Bench, server: Server, cookie: str | None, connections: int, seconds: float, path: str = "/"
) -> Point:
    """One wrk run against ``server``, with the upstream's count and the server's CPU time.

    Also the CPU other processes took meanwhile: all CPUs' busy time less what the benchmark's
    own processes (servers, this process, wrk) used.
    """
    tree = server.started.tree()
    everything = bench.processes.all_pids()
    before_requests = await upstream_requests(bench)
    before_cpu, before_busy, before_own = cpu_seconds(tree), busy_cpu_seconds(), own_cpu_seconds(everything)
    started = time.monotonic()
    result = await run_wrk(bench, server.url + path, connections, seconds, cookie_header(server, cookie))
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(tree) - before_cpu
    foreign = (busy_cpu_seconds() - before_busy) - (own_cpu_seconds(everything) - before_own)
    # the second status read counts itself
    seen = await upstream_requests(bench) - before_requests - 1
    return Point(server.name, connections, result, seen, cpu, max(0.0, foreign) / elapsed)


# ---------------------------------------------------------------------------------------------
# Sessions and sanity
# ---------------------------------------------------------------------------------------------


async def log_in(server: Server) -> str:
    """Sign in once through the provider with a scripted browser; the session cookie's value."""
    assert server.cookie_name is not None
    async with ScriptedBrowser() as browser:
        page = await login_demo(browser, server.url + "/", USERNAME)
        cookie = browser.cookies.get(server.cookie_name, host="127.0.0.1")
    if page.status != 200 or page.text != UPSTREAM_BODY or cookie is None:
        hops = " -> ".join(str(status) for status, _ in page.history)
        raise MeasureError(f"the scripted login through {server.name} failed (hops {hops}, final {page.status})")
    return cookie


async def check_server(server: Server, cookie: str | None, path: str = "/") -> None:
    """With the cookie: the upstream's body. Without it (proxies): 401, which wrk counts as an error.

    Asked as wrk asks, as an API client (no ``text/html`` in ``Accept``): both proxies then answer
    a missing session with 401 instead of a login redirect (a 302, which wrk would count as fine).
    """
    async with aiohttp.ClientSession(headers={"Accept": "application/json"}) as http:
        headers = {} if cookie is None else {"Cookie": f"{server.cookie_name}={cookie}"}
        async with http.get(server.url + path, headers=headers, allow_redirects=False) as answer:
            body = await answer.text()
            if answer.status != 200 or body != UPSTREAM_BODY:
                raise MeasureError(f"{server.name}: expected the upstream's 200, got {answer.status}")
        if cookie is not None:
            async with http.get(server.url + path, allow_redirects=False) as answer:
                if answer.status != 401:
                    raise MeasureError(f"{server.name}: without a session expected 401, got {answer.status}")


# ---------------------------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------------------------


async def _sample_rss(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_bytes(process_tree(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_SAMPLE_INTERVAL)


async def _curl(bench: Bench, url: str, headers: Sequence[str]) -> tuple[int, int, float]:
    """Status, bytes and bytes/s of one download to /dev/null."""
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{speed_download}"]
    for header in headers:
        argv += ["-H", header]
    process = await asyncio.create_subprocess_exec(
        *pinned_argv([*argv, url], bench.pinning.load, bench.pinning), stdout=asyncio.subprocess.PIPE
    )
    output, _ = await process.communicate()
    status, size, speed = output.decode().split()
    return int(status), int(size), float(speed)


async def measure_download(bench: Bench, server: Server, cookie: str | None, repeats: int, size: int) -> Download:
    """``repeats`` downloads of the big file; median speed; the tree's RSS idle and at its peak."""
    idle = rss_bytes(server.started.tree())
    peak = [idle]
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(server.started.pid, peak, stop))
    speeds, failures = [], 0
    try:
        for _ in range(repeats):
            status, got, speed = await _curl(bench, server.url + BIG_PATH, cookie_header(server, cookie))
            if status != 200 or got != size:
                failures += 1
            speeds.append(speed / 1e6)
    finally:
        stop.set()
        await sampler
    return Download(server.name, statistics.median(speeds), idle, peak[0], failures)


# ---------------------------------------------------------------------------------------------
# Full logins
# ---------------------------------------------------------------------------------------------


async def _login_loop(url: str, index: int, deadline: float, times: list[float], failures: list[int]) -> None:
    # one browser profile per loop, with its own User-Agent: the login-loop guard counts
    # unfinished logins per address and User-Agent, and these are separate browsers
    async with ScriptedBrowser(user_agent=f"Mozilla/5.0 (authproxy bench browser {index})") as browser:
        while time.monotonic() < deadline:
            browser.cookies.clear()  # a fresh browser: no proxy session, no provider SSO session
            started = time.perf_counter()
            try:
                page = await login_demo(browser, url + "/", USERNAME)
                ok = page.status == 200 and page.text == UPSTREAM_BODY
            except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError, AssertionError):
                ok = False
            if ok:
                times.append(time.perf_counter() - started)
            else:
                failures.append(1)


async def measure_logins(server: Server, seconds: float, concurrency: int) -> Logins:
    """Complete logins (proxy -> provider login page -> callback -> upstream) for ``seconds``."""
    tree = server.started.tree()
    cpu_before = cpu_seconds(tree)
    times: list[float] = []
    failures: list[int] = []
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(*(_login_loop(server.url, i, deadline, times, failures) for i in range(concurrency)))
    elapsed = time.monotonic() - started
    return Logins(
        target=server.name,
        completed=len(times),
        failed=len(failures),
        seconds=elapsed,
        concurrency=concurrency,
        p50_ms=statistics.median(times) * 1000 if times else 0.0,
        proxy_cpu_s=cpu_seconds(tree) - cpu_before,
    )


async def provider_refresh_grants(provider_url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(provider_url + "/bench/stats") as answer:
        stats = await answer.json()
    return int(stats["refresh_grants"])
