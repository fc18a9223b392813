"""Two versions of authproxy side by side, their CPU per login or per request in interleaved rounds.

    .venv/bin/python bench/compare.py /path/to/other/checkout login        # 8 rounds of 3 s each
    .venv/bin/python bench/compare.py /path/to/other/checkout plain:16     # wrk at 16 connections
    .venv/bin/python bench/compare.py /path/to/other/checkout download     # MB/s of the 100 MiB file
    BENCH_COMPARE_ROUNDS=12 BENCH_COMPARE_SECONDS=5 .venv/bin/python bench/compare.py ../base refresh

On a shared machine the CPU a process needs for the same work drifts by 10-25% within minutes,
more than most changes are worth. Here both versions run at once, on one Redis, one upstream and
one provider, and the measured work alternates between them every few seconds (the order flips
each round), so a drift hits both alike. ``A`` is the other checkout (started with it first on
``PYTHONPATH``), ``B`` this one; the output is each version's CPU per login (or per request)
over all its rounds, and each round's figure (for requests, also the median of the rounds' p50
latency). The pinning and priority are ``make bench``'s.
Everything runs on 127.0.0.1 (the provider on 127.0.0.2) and is ended by PID.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
from pathlib import Path
from typing import Final

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import Bench, log_in, measure_download, measure_logins, measure_point
from bench.paths import Proxy, isolated_processes, start_authproxies
from bench.suite import BIG_FILE_SIZE, LOGIN_CONCURRENCY, OUT

RUN_DIR: Final = OUT / "compare"
NAMES: Final = ("A", "B")


async def compare(other: Path, what: str, rounds: int, seconds: float) -> None:
    processes = isolated_processes(RUN_DIR)
    try:
        refresh = what == "refresh"
        servers, status_url = await start_authproxies(
            processes,
            RUN_DIR,
            [Proxy("A", refresh_every_request=refresh, checkout=other), Proxy("B", refresh_every_request=refresh)],
        )
        bench = Bench(processes, RUN_DIR, status_url)
        cookies = {name: await log_in(server) for name, server in servers.items()}
        cpu = {name: 0.0 for name in NAMES}
        units = {name: 0 for name in NAMES}
        per_round: dict[str, list[float]] = {name: [] for name in NAMES}
        p50s: dict[str, list[float]] = {name: [] for name in NAMES}
        for index in range(rounds):
            for name in NAMES if index % 2 == 0 else NAMES[::-1]:
                if what == "login":
                    logins = await measure_logins(servers[name], seconds, LOGIN_CONCURRENCY)
                    cpu[name] += logins.proxy_cpu_s
                    units[name] += logins.completed
                    per_round[name].append(logins.cpu_ms_per_login * 1000)
                elif what == "download":
                    download = await measure_download(bench, servers[name], cookies[name], 3, BIG_FILE_SIZE)
                    per_round[name].append(download.mb_per_s)
                else:
                    connections = int(what.split(":", 1)[1]) if ":" in what else 1
                    point = await measure_point(bench, servers[name], cookies[name], connections, seconds)
                    per_round[name].append(point.cpu_us_per_request)
                    p50s[name].append(point.wrk.p50_ms)
        if what == "download":
            for name in NAMES:
                label = f"{name} ({other if name == 'A' else 'this checkout'})"
                rounds_text = " ".join(f"{value:.0f}" for value in per_round[name])
                print(f"{label}: {statistics.median(per_round[name]):,.0f} MB/s (median); rounds {rounds_text}")
            return
        unit = "login" if what == "login" else "request"
        for name in NAMES:
            label = f"{name} ({other if name == 'A' else 'this checkout'})"
            rounds_text = " ".join(f"{value:.0f}" for value in per_round[name])
            overall = cpu[name] / units[name] * 1e6 if units[name] else statistics.median(per_round[name])
            latency = f"; p50 {statistics.median(p50s[name]):.2f} ms (median of rounds)" if p50s[name] else ""
            print(f"{label}: {overall:,.0f} µs per {unit}; rounds {rounds_text}{latency}", flush=True)
    finally:
        processes.stop_all()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not (argv[1] in ("login", "refresh", "download") or argv[1].split(":", 1)[0] == "plain"):
        print("usage: bench/compare.py OTHER_CHECKOUT login|refresh|download|plain[:CONNECTIONS]", file=sys.stderr)
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
