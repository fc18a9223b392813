"""The refresh target alone: authproxy's cost of a refresh beside mod_auth_openidc's, in ~1.5 minutes.

    .venv/bin/python bench/refresh_cost.py
    BENCH_REFRESH_ROUNDS=8 BENCH_REFRESH_SECONDS=5 .venv/bin/python bench/refresh_cost.py

The target compares the cost of a refresh (p50 of a request that refreshes, less p50 of one
that does not) with mod_auth_openidc's. ``make bench`` measures it once among everything else;
this starts what ``make bench`` starts (``bench/suite.py``), signs in, and then runs only that
comparison: per round, for each proxy, a 1-connection wrk run of plain requests and one of
refreshing requests (a proxy that refreshes on every request; the check counts only when the
provider's counter shows a refresh grant for each of them). The proxies' order flips each
round; each round's cost takes that round's plain p50, and the cost shown is the median of the
rounds' costs (the other columns the medians of the rounds' figures). The
pinning and priority are ``make bench``'s; everything runs on 127.0.0.1 (the provider on
127.0.0.2) and is ended by PID.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Final

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report
from bench.configs import REFRESH_PREFIX
from bench.measure import measure_point, provider_refresh_grants
from bench.paths import isolated_processes
from bench.suite import OUT, ensure_tools, sign_in, start_stack

RUN_DIR: Final = OUT / "refresh_cost"


async def measure(rounds: int, seconds: float) -> list[report.Refresh]:
    """Each proxy's refresh figures, combined over ``rounds`` interleaved rounds."""
    processes = isolated_processes(RUN_DIR)
    try:
        stack, bench = await start_stack(processes, RUN_DIR)
        await sign_in(stack)
        # (target, the proxy for plain requests, the one that refreshes on every request, its path)
        pairs = [
            (report.OIDC, stack.oidc, stack.oidc, REFRESH_PREFIX),
            (report.AUTHPROXY, stack.authproxy, stack.authproxy_refresh, "/"),
        ]
        for _, _, refreshing, path in pairs:
            # the first refreshes open the provider's connections
            await measure_point(bench, refreshing, stack.cookies[refreshing.name], 1, 1.0, path)
        per_target: dict[str, list[report.Refresh]] = {target: [] for target, *_ in pairs}
        for index in range(rounds):
            for target, plain, refreshing, path in pairs if index % 2 == 0 else pairs[::-1]:
                without = await measure_point(bench, plain, stack.cookies[plain.name], 1, seconds)
                before = await provider_refresh_grants(stack.provider_url)
                point = await measure_point(bench, refreshing, stack.cookies[refreshing.name], 1, seconds, path)
                grants = await provider_refresh_grants(stack.provider_url) - before
                result = report.Refresh(
                    target=target,
                    requests=point.wrk.requests,
                    refresh_grants=grants,
                    p50_ms=point.wrk.p50_ms,
                    p99_ms=point.wrk.p99_ms,
                    errors=point.errors + without.errors,
                    plain_p50_ms=without.wrk.p50_ms,
                    cpu_us=point.cpu_us_per_request,
                    plain_cpu_us=without.cpu_us_per_request,
                )
                per_target[target].append(result)
                label = report.TARGET_LABELS.get(target, target)
                print(
                    f"[round {index + 1}/{rounds}] {label}: p50 {result.p50_ms:.2f} ms with a refresh,"
                    f" {result.plain_p50_ms:.2f} ms without, cost {result.cost_ms:+.2f} ms;"
                    f" {result.requests} requests, {grants} refresh grants, errors {result.errors}",
                    flush=True,
                )
        return [report.combine_refreshes(per_target[target]) for target, *_ in pairs]
    finally:
        processes.stop_all()


def main() -> int:
    rounds = int(os.environ.get("BENCH_REFRESH_ROUNDS", "6"))
    seconds = float(os.environ.get("BENCH_REFRESH_SECONDS", "3"))
    ensure_tools()
    refreshes = asyncio.run(measure(rounds, seconds))
    print()
    print(report.refresh_table(refreshes))
    print()
    print(report.checks_list(report.refresh_checks(refreshes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
