"""Driving ``wrk`` (https://github.com/wg/wrk) and reading its results.

wrk's own summary rounds and changes units; a ``done`` hook (Lua, run once after the test, so it
costs nothing per request) prints one JSON line with exact counts and microsecond percentiles
instead. wrk counts a response as an error only when its status is above 399, so an
authenticating proxy that lost the session must answer 401 (both do for non-browser requests:
wrk sends no ``Accept: text/html``), and the upstream's request counter catches anything else
that did not reach it (see ``errors`` in :class:`Point`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

RESULT_MARKER: Final = "BENCH-RESULT "
DONE_SCRIPT: Final = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p99_us":%d,'
    .. '"max_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: completed requests, wall time, latency percentiles and error counts."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float  # the slowest request that completed (timeouts are counted, not timed)
    status_errors: int
    socket_errors: int  # connect, read and write errors, and timeouts
    timeouts: int  # no answer within wrk's timeout (2 s); part of socket_errors

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def wrk_argv(
    url: str, *, connections: int, seconds: float, threads: int, script: str, headers: Sequence[str] = ()
) -> list[str]:
    """The wrk command line: latency recorded, the JSON ``done`` hook, one header per ``-H``."""
    argv = [
        "wrk",
        f"-t{max(1, min(threads, connections))}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "-s",
        script,
    ]
    for header in headers:
        argv += ["-H", header]
    return [*argv, url]


def parse_wrk_output(output: str) -> WrkResult:
    """The :class:`WrkResult` in wrk's output; ValueError when the ``done`` line is missing."""
    for line in output.splitlines():
        if line.startswith(RESULT_MARKER):
            raw = json.loads(line[len(RESULT_MARKER) :])
            return WrkResult(
                requests=int(raw["requests"]),
                seconds=raw["duration_us"] / 1e6,
                p50_ms=raw["p50_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                max_ms=raw["max_us"] / 1000,
                status_errors=int(raw["status"]),
                socket_errors=int(raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]),
                timeouts=int(raw["timeout"]),
            )
    raise ValueError(f"wrk printed no result line:\n{output[-2000:]}")


@dataclass(frozen=True)
class Point:
    """One measured point: a wrk run, the requests the upstream saw, the target's CPU time, and
    how many cores' worth of CPU other processes on the machine used meanwhile (noise)."""

    target: str
    connections: int
    wrk: WrkResult
    upstream_requests: int
    cpu_seconds: float
    background_cores: float = 0.0

    @property
    def missing(self) -> int:
        """Completed requests that never reached the upstream (answered by the proxy itself).

        The upstream may see up to one request per connection more than wrk completed: those in
        flight when wrk stopped.
        """
        return max(0, self.wrk.requests - self.upstream_requests)

    @property
    def errors(self) -> int:
        # a 401 or 5xx is both a status error and a request the upstream never saw: count it once
        return self.wrk.socket_errors + max(self.wrk.status_errors, self.missing)

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / self.wrk.requests * 1e6 if self.wrk.requests else 0.0
