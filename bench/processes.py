"""Starting, pinning, measuring and ending the benchmark's processes (Linux ``/proc``).

Every process is started here, in a session of its own (so a Ctrl-C in the terminal reaches the
benchmark, which then ends them in order), and recorded by PID. ``Processes.stop_all`` ends each
one by its PID (SIGTERM, then SIGKILL) and then any of its descendants still alive, also by PID:
nothing is ever matched by name.

CPU time and memory are read from ``/proc/<pid>/stat`` and ``/proc/<pid>/status`` summed over a
process and its descendants (nginx and Apache workers, authproxy's worker processes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tests.support.net import proc_stat_fields, stat_cpu_seconds

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT: Final = 15.0
# the benchmark's processes run at this nice value when allowed (root), so background jobs on a
# shared machine take less CPU from the measurement; every target gets the same boost
BENCH_NICE: Final = -10


@dataclass(frozen=True)
class Pinning:
    """Which CPUs the load generators and the servers under test may use."""

    load: frozenset[int]
    servers: frozenset[int]

    @property
    def pinned(self) -> bool:
        return bool(self.load) and bool(self.servers) and not (self.load & self.servers)

    def describe(self) -> str:
        if not self.pinned:
            return "not pinned (fewer than 2 usable cores, or no taskset): load generator and servers share the CPUs"
        return (
            f"load generators (wrk, curl, the login driver) and the OpenID provider on CPU {_cpus(self.load)}; "
            f"servers under test (upstream nginx, proxies, redis-server) on CPU {_cpus(self.servers)} (taskset)"
        )


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


def plan_pinning(available: Sequence[int], have_taskset: bool) -> Pinning:
    """One third of the CPUs (at least one) for load, the rest for the servers; none when impossible."""
    cpus = sorted(available)
    if len(cpus) < 2 or not have_taskset:
        everything = frozenset(cpus)
        return Pinning(everything, everything)
    load_count = max(1, len(cpus) // 3)
    return Pinning(frozenset(cpus[:load_count]), frozenset(cpus[load_count:]))


def current_pinning() -> Pinning:
    return plan_pinning(sorted(os.sched_getaffinity(0)), shutil.which("taskset") is not None)


def pinned_argv(argv: Sequence[str], cpus: frozenset[int], pinning: Pinning) -> list[str]:
    """``argv`` run under ``taskset -c cpus`` when pinning applies."""
    if not pinning.pinned:
        return list(argv)
    return ["taskset", "-c", _cpus(cpus), *argv]


def raise_priority() -> bool:
    """Run this process (and so every process it starts) at ``BENCH_NICE``; False if not allowed."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, BENCH_NICE)
    except PermissionError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# /proc readers
# ---------------------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = proc_stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    children = _children_map()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of ``pids`` (processes that are gone count 0)."""
    total = 0.0
    for pid in pids:
        fields = proc_stat_fields(pid)
        if fields is not None:
            total += stat_cpu_seconds(fields)
    return total


def busy_cpu_seconds() -> float:
    """CPU time all CPUs spent on anything but idling since boot (``/proc/stat``, proc(5))."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def own_cpu_seconds(trees: Sequence[int]) -> float:
    """CPU time of ``trees`` plus this process and the children it has reaped (wrk, curl)."""
    times = os.times()
    return cpu_seconds(trees) + times.user + times.system + times.children_user + times.children_system


def rss_bytes(pids: Sequence[int]) -> int:
    """Sum of the resident set sizes of ``pids`` (shared pages count once per process)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------


@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tree(self) -> list[int]:
        return process_tree(self.pid)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Processes:
    """Everything the benchmark started, to be ended by PID."""

    pinning: Pinning
    started: list[Started] = field(default_factory=list)
    stop_timeout: float = STOP_TIMEOUT
    # how long descendants may take to follow their parent out before they are killed
    grace: float = 5.0

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        cpus: frozenset[int] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Started:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = pinned_argv(argv, self.pinning.servers if cpus is None else cpus, self.pinning)
        with log_path.open("ab") as log:
            # the benchmark's own fixed command lines: no outside input
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        started = Started(name, process, log_path)
        self.started.append(started)
        return started

    def stop(self, started: Started) -> None:
        """SIGTERM by PID, wait, then SIGKILL it and any descendant left, by PID."""
        descendants = started.tree()[1:] if started.alive() else []
        if started.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(started.pid, signal.SIGTERM)
            try:
                started.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(started.pid, signal.SIGKILL)
                started.process.wait(timeout=self.stop_timeout)
        # servers end their own workers on SIGTERM; whatever is still there after a grace is killed
        _wait_gone(descendants, self.grace)
        for pid in descendants:
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _wait_gone(descendants, self.grace)

    def stop_all(self) -> None:
        """End everything, the last started first (proxies before the upstream and Redis)."""
        while self.started:
            started = self.started.pop()
            try:
                self.stop(started)
            except Exception as e:  # keep going: every other process must still be ended
                print(f"bench: could not stop {started.name} (pid {started.pid}): {e}", flush=True)

    def __iter__(self) -> Iterator[Started]:
        return iter(self.started)

    def all_pids(self) -> list[int]:
        children = _children_map()
        found: list[int] = []
        for started in self.started:
            todo = [started.pid]
            while todo:
                current = todo.pop()
                found.append(current)
                todo.extend(children.get(current, []))
        return found


def _wait_gone(pids: Sequence[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(_pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    fields = proc_stat_fields(pid)
    return fields is not None and fields[0] != "Z"
