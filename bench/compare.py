"""Two versions of authproxy side by side, their CPU per login or per request in interleaved rounds.

    .venv/bin/python bench/compare.py /path/to/other/checkout login        # 8 rounds of 3 s each
    .venv/bin/python bench/compare.py /path/to/other/checkout plain:16     # wrk at 16 connections
    BENCH_COMPARE_ROUNDS=12 BENCH_COMPARE_SECONDS=5 .venv/bin/python bench/compare.py ../base refresh

On a shared machine the CPU a process needs for the same work drifts by 10-25% within minutes,
more than most changes are worth. Here both versions run at once, on one Redis, one upstream and
one provider, and the measured work alternates between them every few seconds (the order flips
each round), so a drift hits both alike. ``A`` is the other checkout (started with it first on
``PYTHONPATH``), ``B`` this one; the output is each version's CPU per login (or per request)
over all its rounds, and each round's figure. The pinning and priority are ``make bench``'s.
Everything runs on 127.0.0.1 (the provider on 127.0.0.2) and is ended by PID.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import shutil
import statistics
import sys
from pathlib import Path
from typing import Final

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.configs import Client
from bench.measure import Bench, log_in, measure_logins, measure_point
from bench.processes import Processes, current_pinning, raise_priority
from bench.servers import PROVIDER_HOST, Server, start_authproxy, start_provider, start_redis, start_upstream
from bench.suite import BIG_FILE_SIZE, LOGIN_CONCURRENCY, OUT, make_big_file
from tests.support.net import free_port

RUN_DIR: Final = OUT / "compare"
NAMES: Final = ("A", "B")


async def _start_both(processes: Processes, other: Path, refresh: bool) -> tuple[dict[str, Server], str]:
    _, redis_port = await start_redis(processes, RUN_DIR / "redis")
    big = OUT / "big.bin"
    if not big.exists() or big.stat().st_size != BIG_FILE_SIZE:
        make_big_file(big)
    upstream, status_port = await start_upstream(processes, RUN_DIR / "upstream", big)
    upstream_port = int(upstream.url.rsplit(":", 1)[1])
    ports = {name: free_port() for name in NAMES}
    clients = {
        name: Client(f"bench-{name}", secrets.token_urlsafe(24), f"http://127.0.0.1:{port}/oauth2/callback")
        for name, port in ports.items()
    }
    provider_port = free_port(PROVIDER_HOST)
    provider_url = f"http://{PROVIDER_HOST}:{provider_port}"
    await start_provider(processes, RUN_DIR / "provider", provider_port, list(clients.values()))
    servers: dict[str, Server] = {}
    for name in NAMES:
        saved = os.environ.get("PYTHONPATH")
        if name == "A":  # the child inherits the environment: A imports the other checkout
            os.environ["PYTHONPATH"] = str(other)
        try:
            servers[name] = await start_authproxy(
                processes,
                RUN_DIR / "authproxy",
                name=name,
                port=ports[name],
                upstream_port=upstream_port,
                provider_url=provider_url,
                client=clients[name],
                redis_port=redis_port,
                refresh_every_request=refresh,
            )
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
    return servers, f"http://127.0.0.1:{status_port}/"


async def compare(other: Path, what: str, rounds: int, seconds: float) -> None:
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True)
    pinning = current_pinning()
    if pinning.pinned:
        os.sched_setaffinity(0, pinning.load)
    raise_priority()
    processes = Processes(pinning)
    atexit.register(processes.stop_all)
    try:
        servers, status_url = await _start_both(processes, other, refresh=what == "refresh")
        bench = Bench(processes, RUN_DIR, status_url)
        cookies = {name: await log_in(server) for name, server in servers.items()}
        cpu = {name: 0.0 for name in NAMES}
        units = {name: 0 for name in NAMES}
        per_round: dict[str, list[float]] = {name: [] for name in NAMES}
        for index in range(rounds):
            for name in NAMES if index % 2 == 0 else NAMES[::-1]:
                if what == "login":
                    logins = await measure_logins(servers[name], seconds, LOGIN_CONCURRENCY)
                    cpu[name] += logins.proxy_cpu_s
                    units[name] += logins.completed
                    per_round[name].append(logins.cpu_ms_per_login * 1000)
                else:
                    connections = int(what.split(":", 1)[1]) if ":" in what else 1
                    point = await measure_point(bench, servers[name], cookies[name], connections, seconds)
                    per_round[name].append(point.cpu_us_per_request)
        unit = "login" if what == "login" else "request"
        for name in NAMES:
            label = f"{name} ({other if name == 'A' else 'this checkout'})"
            rounds_text = " ".join(f"{value:.0f}" for value in per_round[name])
            overall = cpu[name] / units[name] * 1e6 if units[name] else statistics.median(per_round[name])
            print(f"{label}: {overall:,.0f} µs per {unit}; rounds {rounds_text}", flush=True)
    finally:
        processes.stop_all()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not (argv[1] in ("login", "refresh") or argv[1].split(":", 1)[0] == "plain"):
        print("usage: bench/compare.py OTHER_CHECKOUT login|refresh|plain[:CONNECTIONS]", file=sys.stderr)
        return 2
    other = Path(argv[0]).resolve()
    if not (other / "authproxy" / "__init__.py").exists():
        print(f"bench/compare.py: {other} is not an authproxy checkout", file=sys.stderr)
        return 2
    rounds = int(os.environ.get("BENCH_COMPARE_ROUNDS", "8"))
    seconds = float(os.environ.get("BENCH_COMPARE_SECONDS", "3"))
    asyncio.run(compare(other, argv[1], rounds, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
