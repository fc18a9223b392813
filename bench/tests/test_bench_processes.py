"""Pinning plans and ending processes by PID (bench/processes.py)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from bench.processes import Pinning, Processes, cpu_seconds, pinned_argv, plan_pinning, process_tree, rss_bytes


@pytest.mark.parametrize(
    ("cpus", "taskset", "load", "servers", "pinned"),
    [
        ([0], True, {0}, {0}, False),
        ([0, 1], True, {0}, {1}, True),
        ([0, 1], False, {0, 1}, {0, 1}, False),
        ([0, 1, 2], True, {0}, {1, 2}, True),
        ([2, 3, 4, 5, 6, 7], True, {2, 3}, {4, 5, 6, 7}, True),
    ],
    ids=["one-core", "two-cores", "no-taskset", "three-cores", "six-cores-from-2"],
)
def test_plan_pinning(cpus: list[int], taskset: bool, load: set[int], servers: set[int], pinned: bool) -> None:
    plan = plan_pinning(cpus, taskset)
    assert (set(plan.load), set(plan.servers), plan.pinned) == (load, servers, pinned)


def test_pinned_argv_only_when_pinning() -> None:
    assert pinned_argv(["x"], frozenset({1}), Pinning(frozenset({0}), frozenset({1}))) == ["taskset", "-c", "1", "x"]
    assert pinned_argv(["x"], frozenset({0}), Pinning(frozenset({0}), frozenset({0}))) == ["x"]


def test_stop_all_ends_a_process_and_the_child_it_left_behind(tmp_path: Path) -> None:
    """A parent that ignores SIGTERM and a child of its own: both end, each by its PID."""
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    processes = Processes(Pinning(frozenset(), frozenset()), stop_timeout=1.0, grace=1.0)
    started = processes.start("stubborn", [sys.executable, "-c", script], log_path=tmp_path / "log")
    deadline = time.monotonic() + 10
    while len(process_tree(started.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = process_tree(started.pid)
    assert len(tree) == 2
    assert rss_bytes(tree) > 0 and cpu_seconds(tree) >= 0
    processes.stop_all()
    assert not started.alive() and processes.started == []
    for pid in tree:
        with pytest.raises(ProcessLookupError):
            _signal_zero_unless_zombie(pid)


def _signal_zero_unless_zombie(pid: int) -> None:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        raise ProcessLookupError(pid) from None
    if state[state.rfind(")") + 2] == "Z":
        raise ProcessLookupError(pid)
    os.kill(pid, 0)
