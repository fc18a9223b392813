"""authproxy's own cost on its three paths, quickly: a signed-in request, a refresh, a full login.

    .venv/bin/python bench/paths.py                      # all three, ~1 minute
    .venv/bin/python bench/paths.py plain refresh        # some of them
    BENCH_PATHS_PROFILE=1 .venv/bin/python bench/paths.py refresh   # and a py-spy profile of each

For working on the proxy: it starts only what authproxy needs (Redis, the nginx upstream, the
development provider, and authproxy with the Redis store and the default configuration, plus one
that refreshes on every request), signs in with a scripted browser and prints the proxy's CPU per
request at 1/16/64/256 connections, per refresh and per login, the same figures ``make bench``
reports beside mod_auth_openidc (``bench/suite.py``). The machine's pinning and priority are
those of ``make bench``. ``BENCH_PATHS_SECONDS`` sets the length of each point (default 5);
profiles go to ``bench/out/paths/<path>.md``. Everything runs on 127.0.0.1 (the provider on
127.0.0.2) and is ended by PID when the run ends.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import shutil
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.configs import Client
from bench.measure import Bench, log_in, measure_logins, measure_point
from bench.processes import Processes, current_pinning, raise_priority
from bench.profile import aggregate, py_spy_path, render, start_py_spy
from bench.servers import (
    PROVIDER_HOST,
    START_TIMEOUT,
    Server,
    start_authproxy,
    start_provider,
    start_redis,
    start_upstream,
)
from bench.suite import BIG_FILE_SIZE, LOGIN_CONCURRENCY, OUT, make_big_file
from tests.support.net import free_port

PATHS: Final = ("plain", "refresh", "login")
CONNECTIONS: Final = (1, 16, 64, 256)
RUN_DIR: Final = OUT / "paths"


async def _profiled(
    server: Server, name: str, seconds: float, profile: bool, run: Callable[[], Awaitable[float]]
) -> float:
    """``run()`` (which returns the proxy's CPU per unit, µs), under py-spy when ``profile``."""
    py_spy = py_spy_path()
    if not profile or py_spy is None:
        return await run()
    raw = RUN_DIR / f"{name}.raw"
    spy = await start_py_spy(py_spy, server.started.pid, seconds, raw)
    await asyncio.sleep(0.5)
    cost = await run()
    await spy.wait()
    if raw.exists():
        (RUN_DIR / f"{name}.md").write_text(render(aggregate(raw.read_text()), cost, 40))
    return cost


@dataclass(frozen=True)
class Proxy:
    """One authproxy to start: its name, whether it refreshes on every request, and which code."""

    name: str
    refresh_every_request: bool = False
    checkout: Path | None = None  # another checkout of authproxy to run (first on PYTHONPATH)
    launcher: tuple[str, ...] = ()  # a tool that runs it (valgrind: bench/instructions.py)
    start_within: float = START_TIMEOUT  # seconds it may take to answer /readyz


def isolated_processes(run_dir: Path) -> Processes:
    """A fresh ``run_dir``, ``make bench``'s pinning and priority for this process, and a
    :class:`Processes` whose every process is ended when this one exits."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    pinning = current_pinning()
    if pinning.pinned:
        os.sched_setaffinity(0, pinning.load)
    raise_priority()
    processes = Processes(pinning)
    atexit.register(processes.stop_all)
    return processes


async def start_authproxies(processes: Processes, run_dir: Path, proxies: list[Proxy]) -> tuple[dict[str, Server], str]:
    """Redis, the nginx upstream, the development provider and ``proxies`` with the Redis store
    and the default configuration; the proxies by name, and the upstream's request counter URL."""
    _, redis_port = await start_redis(processes, run_dir / "redis")
    big = OUT / "big.bin"
    if not big.exists() or big.stat().st_size != BIG_FILE_SIZE:
        make_big_file(big)
    upstream, status_port = await start_upstream(processes, run_dir / "upstream", big)
    upstream_port = int(upstream.url.rsplit(":", 1)[1])
    ports = {proxy.name: free_port() for proxy in proxies}
    clients = {
        name: Client(f"bench-{name}", secrets.token_urlsafe(24), f"http://127.0.0.1:{port}/oauth2/callback")
        for name, port in ports.items()
    }
    provider_port = free_port(PROVIDER_HOST)
    provider_url = f"http://{PROVIDER_HOST}:{provider_port}"
    await start_provider(processes, run_dir / "provider", provider_port, list(clients.values()))
    servers = {
        proxy.name: await start_authproxy(
            processes,
            run_dir / "authproxy",
            name=proxy.name,
            port=ports[proxy.name],
            upstream_port=upstream_port,
            provider_url=provider_url,
            client=clients[proxy.name],
            redis_port=redis_port,
            refresh_every_request=proxy.refresh_every_request,
            env=None if proxy.checkout is None else {"PYTHONPATH": str(proxy.checkout)},
            launcher=proxy.launcher,
            start_within=proxy.start_within,
        )
        for proxy in proxies
    }
    return servers, f"http://127.0.0.1:{status_port}/"


async def measure(paths: tuple[str, ...], seconds: float, profile: bool) -> None:
    processes = isolated_processes(RUN_DIR)
    try:
        proxies, status_url = await start_authproxies(
            processes, RUN_DIR, [Proxy("authproxy"), Proxy("authproxy-refresh", refresh_every_request=True)]
        )
        bench = Bench(processes, RUN_DIR, status_url)
        cookies = {name: await log_in(server) for name, server in proxies.items()}
        plain, refreshing = proxies["authproxy"], proxies["authproxy-refresh"]

        if "plain" in paths:
            for connections in CONNECTIONS:
                point = await measure_point(bench, plain, cookies["authproxy"], connections, seconds)
                print(
                    f"plain    {connections:>3} connections: {point.wrk.rps:>8,.0f} req/s"
                    f"  CPU {point.cpu_us_per_request:5.0f} µs/request  errors {point.errors}",
                    flush=True,
                )

            async def plain_point() -> float:
                point = await measure_point(bench, plain, cookies["authproxy"], 16, seconds - 1)
                return point.cpu_us_per_request

            await _profiled(plain, "plain", seconds, profile, plain_point)

        if "refresh" in paths:

            async def refresh_point() -> float:
                point = await measure_point(bench, refreshing, cookies["authproxy-refresh"], 1, seconds - 1)
                print(
                    f"refresh    1 connection:  {point.wrk.rps:>8,.0f} req/s  p50 {point.wrk.p50_ms:.2f} ms"
                    f"  CPU {point.cpu_us_per_request:5.0f} µs/request  errors {point.errors}",
                    flush=True,
                )
                return point.cpu_us_per_request

            await refresh_point()  # warm: the first refreshes open the provider's connections
            await _profiled(refreshing, "refresh", seconds, profile, refresh_point)

        if "login" in paths:

            async def login_run() -> float:
                logins = await measure_logins(plain, seconds - 1, LOGIN_CONCURRENCY)
                print(
                    f"login    {LOGIN_CONCURRENCY} browsers:       {logins.per_second:>8,.1f} logins/s"
                    f"  CPU {logins.cpu_ms_per_login:.2f} ms/login  failed {logins.failed}",
                    flush=True,
                )
                return logins.cpu_ms_per_login * 1000

            await _profiled(plain, "login", seconds, profile, login_run)
    finally:
        processes.stop_all()


def chosen_paths(argv: list[str], program: str) -> tuple[str, ...] | None:
    """The paths named on the command line (all when none), or None after saying which is unknown."""
    paths = tuple(argv) or PATHS
    unknown = [path for path in paths if path not in PATHS]
    if unknown:
        print(f"{program}: unknown path {', '.join(unknown)}; choose from {', '.join(PATHS)}", file=sys.stderr)
        return None
    return paths


def main(argv: list[str]) -> int:
    paths = chosen_paths(argv, "bench/paths.py")
    if paths is None:
        return 2
    seconds = float(os.environ.get("BENCH_PATHS_SECONDS", "5"))
    profile = os.environ.get("BENCH_PATHS_PROFILE", "") not in ("", "0")
    asyncio.run(measure(paths, seconds, profile))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
