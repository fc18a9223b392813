"""authproxy's instructions per request, per refresh and per login, counted by valgrind.

    .venv/bin/python bench/instructions.py                 # plain, refresh and login, ~5 minutes
    .venv/bin/python bench/instructions.py login           # some of them

The CPU time ``bench/paths.py`` and ``make bench`` measure follows the shared machine: the same
code costs 10-25% more within minutes, and up to twice as much in a slow hour. The number of
instructions authproxy executes for the same work does not: two runs of 202 and 380 logins
counted 3.41 million per login each. So this is the measure for telling whether a change to the
code made it cheaper: run it before and after. What it leaves out is what the instruction count
cannot show: the kernel's share (system calls, the loopback network), and how fast the machine
gets through the instructions (cache misses, a busy neighbour).

It starts what ``bench/paths.py`` starts (Redis, the nginx upstream, the development provider,
authproxy with the Redis store and the default configuration, and for ``refresh`` a second one
that refreshes on every request) with authproxy under ``valgrind --tool=callgrind``, about 50
times slower than usual. After a warm-up (the provider's keys fetched, connections open) the
counters are zeroed, the work runs for ``BENCH_INSTRUCTIONS_SECONDS`` (default 15), and the
counters are dumped (``callgrind_control``): authproxy's own instructions in user space, in
every library it runs, divided by the requests or logins completed meanwhile, with the share of
each library. Dumps go to ``bench/out/instructions/``; everything runs on 127.0.0.1 (the
provider on 127.0.0.2) and is ended by PID when the run ends.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Final

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import Bench, log_in, measure_logins, measure_point
from bench.paths import Proxy, chosen_paths, isolated_processes, start_authproxies
from bench.servers import Server
from bench.suite import LOGIN_CONCURRENCY, OUT

RUN_DIR: Final = OUT / "instructions"
# valgrind makes start-up (imports, discovery) take a minute or more on this machine
START_WITHIN: Final = 300.0
PLAIN_CONNECTIONS: Final = 16
SHOWN_LIBRARIES: Final = 4

_NAMED: Final = re.compile(r"\((\d+)\)(?: (.*))?")


def summary_cost(dump: str) -> int:
    """The total cost of a callgrind dump (its ``summary:`` line: instructions, by default)."""
    for line in dump.splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise ValueError("not a callgrind dump: no summary line")


def cost_by_object(dump: str) -> dict[str, int]:
    """The instructions of a callgrind dump spent in each object file's own code (not its callees).

    The format (valgrind's "Callgrind Format Specification"): ``ob=`` names the object file of the
    cost lines that follow, and names may be compressed (``(id) name`` the first time, ``(id)``
    after, shared with ``cob=``); a ``calls=`` line is followed by the inclusive cost of that
    call, which belongs to the callee and is skipped.
    """
    names: dict[str, str] = {}
    costs: Counter[str] = Counter()
    current = "???"
    after_calls = False

    def named(text: str) -> str:
        match = _NAMED.fullmatch(text)
        if match is None:
            return text
        ident, name = match.groups()
        if name is not None:
            names[ident] = name
        return names.get(ident, text)

    for line in dump.splitlines():
        if line.startswith("ob="):
            current = named(line[3:])
        elif line.startswith("cob="):
            named(line[4:])
        elif line.startswith("calls="):
            after_calls = True
        elif line[:1].isdigit() or line[:1] in ("+", "-", "*"):
            if after_calls:
                after_calls = False
                continue
            fields = line.split()
            if len(fields) >= 2:
                costs[current] += int(fields[1])
    return dict(costs)


def library_shares(costs: dict[str, int], shown: int = SHOWN_LIBRARIES) -> str:
    """``libpython3.11.so.1.0 71%, _rust.abi3.so 12%, ..., other 7%``: the largest ``shown``."""
    total = sum(costs.values())
    if total == 0:
        return "nothing counted"
    ranked = sorted(costs.items(), key=lambda item: item[1], reverse=True)
    parts = [f"{Path(name).name} {cost / total:.0%}" for name, cost in ranked[:shown]]
    rest = sum(cost for _, cost in ranked[shown:])
    if rest:
        parts.append(f"other {rest / total:.0%}")
    return ", ".join(parts)


async def _control(option: str, pid: int) -> None:
    process = await asyncio.create_subprocess_exec(
        "callgrind_control", option, str(pid), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    if await process.wait() != 0:
        raise RuntimeError(f"callgrind_control {option} {pid} failed")


class Counted:
    """Zero a proxy's counters, let work run, then read what it cost (``async with``)."""

    def __init__(self, server: Server) -> None:
        self.pid = server.started.pid
        self.dump = ""

    async def __aenter__(self) -> Counted:
        await _control("-z", self.pid)
        return self

    async def __aexit__(self, *exc: object) -> None:
        before = set(RUN_DIR.glob(f"callgrind.out.{self.pid}.*"))
        await _control("-d", self.pid)
        (written,) = set(RUN_DIR.glob(f"callgrind.out.{self.pid}.*")) - before
        self.dump = written.read_text()


def _report(path: str, dump: str, units: int, unit: str) -> None:
    if units == 0:
        print(f"{path:<8} no {unit} completed", flush=True)
        return
    per_unit = summary_cost(dump) / units
    print(
        f"{path:<8} {per_unit / 1e6:6.3f} M instructions per {unit} ({units:,} {unit}s);"
        f" {library_shares(cost_by_object(dump))}",
        flush=True,
    )


async def measure(paths: tuple[str, ...], seconds: float) -> None:
    processes = isolated_processes(RUN_DIR)
    launcher = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={RUN_DIR}/callgrind.out.%p")
    wanted = [Proxy("authproxy", launcher=launcher, start_within=START_WITHIN)]
    if "refresh" in paths:
        wanted.append(
            Proxy("authproxy-refresh", refresh_every_request=True, launcher=launcher, start_within=START_WITHIN)
        )
    try:
        proxies, status_url = await start_authproxies(processes, RUN_DIR, wanted)
        bench = Bench(processes, RUN_DIR, status_url)
        cookies = {name: await log_in(server) for name, server in proxies.items()}
        plain = proxies["authproxy"]
        await measure_logins(plain, 3, 2)  # warm: connections to Redis and the provider, the keys

        if "plain" in paths:
            await measure_point(bench, plain, cookies["authproxy"], PLAIN_CONNECTIONS, 2)
            async with Counted(plain) as counted:
                point = await measure_point(bench, plain, cookies["authproxy"], PLAIN_CONNECTIONS, seconds)
            _report("plain", counted.dump, point.wrk.requests, "request")

        if "refresh" in paths:
            refreshing = proxies["authproxy-refresh"]
            await measure_point(bench, refreshing, cookies["authproxy-refresh"], 1, 2)
            async with Counted(refreshing) as counted:
                point = await measure_point(bench, refreshing, cookies["authproxy-refresh"], 1, seconds)
            _report("refresh", counted.dump, point.wrk.requests, "request")

        if "login" in paths:
            async with Counted(plain) as counted:
                logins = await measure_logins(plain, seconds, LOGIN_CONCURRENCY)
            _report("login", counted.dump, logins.completed, "login")
    finally:
        processes.stop_all()


def main(argv: list[str]) -> int:
    paths = chosen_paths(argv, "bench/instructions.py")
    if paths is None:
        return 2
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        needed = " and ".join(missing)
        print(f"bench/instructions.py: needs {needed} (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    seconds = float(os.environ.get("BENCH_INSTRUCTIONS_SECONDS", "15"))
    asyncio.run(measure(paths, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
