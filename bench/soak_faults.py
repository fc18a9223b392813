"""Faults under load, the long version (``make soak``; the suite runs a short one).

Signed-in traffic through two authproxy processes while Redis restarts (append-only persistence,
so sessions survive), the provider goes down and comes back, and the upstream resets
connections; then the same store-restart plan on Redis Cluster and on Sentinel. For each it
prints requests served, errors by phase and kind, sessions lost and fail-open counts, and exits 1
when anything failed open, a session was lost, or an error appeared where no fault explains it.

    SOAK_FAULT_SCALE=10 SOAK_CONCURRENCY=16 .venv/bin/python bench/soak_faults.py

``SOAK_FAULT_SCALE`` stretches every phase (1 = the suite's ~10 s per topology; default 10),
``SOAK_CONCURRENCY`` sets the closed-loop clients (default 16), ``SOAK_TOPOLOGIES`` picks
topologies (default ``standalone,cluster,sentinel``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.soak import Report, Topology, run_soak, soak_stack, standalone_plan, store_restart_plan


def problems(report: Report) -> list[str]:
    found = list(report.unexpected)
    if report.fail_open:
        found.append(f"{report.fail_open} requests failed open")
    if report.sessions_lost:
        found.append(f"{report.sessions_lost} sessions lost")
    if not report.served:
        found.append("nothing was served")
    return found


async def soak(topology: Topology, scale: float, concurrency: int) -> Report:
    with tempfile.TemporaryDirectory(prefix=f"authproxy-soak-{topology}-") as directory:
        async with soak_stack(Path(directory), topology) as stack:
            plan = standalone_plan(scale) if topology == "standalone" else store_restart_plan(scale)
            return await run_soak(stack, plan, concurrency=concurrency)


def main() -> int:
    scale = float(os.environ.get("SOAK_FAULT_SCALE", "10"))
    concurrency = int(os.environ.get("SOAK_CONCURRENCY", "16"))
    topologies = os.environ.get("SOAK_TOPOLOGIES", "standalone,cluster,sentinel").split(",")
    failed = False
    for topology in topologies:
        report = asyncio.run(soak(topology, scale, concurrency))  # type: ignore[arg-type]
        print("\n".join(report.lines()), flush=True)
        for problem in problems(report):
            print(f"  FAILED: {problem}", flush=True)
            failed = True
    print("soak with faults:", "FAILED" if failed else "ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
