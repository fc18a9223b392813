"""Faults under load (short version of ``make soak``): signed-in traffic through two proxy
processes while Redis restarts (with persistence), the provider goes down and comes back and the
upstream resets connections. Nothing fails open, no session is lost, service comes back by itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.soak import Report, run_soak, soak_stack, standalone_plan, store_restart_plan

pytestmark = pytest.mark.slow


def assert_held_up(report: Report) -> None:
    text = "\n".join(report.lines())
    assert report.sessions > 0, text
    assert report.served > 0, text
    assert report.fail_open == 0, text
    assert report.spoofed_seen == 0, text
    assert report.anonymous_probes > 0 and report.anonymous_let_through == 0, text
    assert report.sessions_lost == 0, text
    assert report.unexpected == [], text
    last = list(report.by_phase.values())[-1]
    assert last["ok"] > 0, f"service did not come back after the last fault\n{text}"


async def test_standalone_redis_restart_provider_outage_and_upstream_resets(tmp_path: Path) -> None:
    async with soak_stack(tmp_path, "standalone") as stack:
        report = await run_soak(stack, standalone_plan())
    print("\n".join(report.lines()))
    assert_held_up(report)
    # each fault was felt: the store outage failed closed, the resets became 502s
    assert report.by_phase["redis-down"]["503"] > 0, "\n".join(report.lines())
    assert report.by_phase["upstream-resets"]["502"] > 0, "\n".join(report.lines())
    assert report.by_phase["provider-down"]["ok"] > 0, "signed-in traffic needs no provider"


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
async def test_a_store_node_restart_under_load_loses_no_session(tmp_path: Path, topology: str) -> None:
    async with soak_stack(tmp_path, topology) as stack:  # type: ignore[arg-type]
        report = await run_soak(stack, store_restart_plan())
    print("\n".join(report.lines()))
    assert_held_up(report)
    assert report.by_phase["node-down"]["503"] > 0, "\n".join(report.lines())
