"""Reading wrk's results (bench/wrk.py): the JSON ``done`` line, and error accounting per point."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from aiohttp import web

from bench.wrk import DONE_SCRIPT, RESULT_MARKER, Point, WrkResult, parse_wrk_output, wrk_argv
from tests.support.net import free_port


def _line(**overrides: int) -> str:
    raw = {"requests": 5000, "duration_us": 2_000_000, "bytes": 1, "p50_us": 1500, "p99_us": 9000, "max_us": 30_000}
    raw |= {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0} | overrides
    return RESULT_MARKER + json.dumps(raw)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (_line(), WrkResult(5000, 2.0, 1.5, 9.0, 30.0, 0, 0, 0)),
        (
            "Running 2s test @ http://127.0.0.1:1/\n  1 threads and 16 connections\n" + _line(status=7) + "\n",
            WrkResult(5000, 2.0, 1.5, 9.0, 30.0, 7, 0, 0),
        ),
        (_line(connect=1, read=2, write=3, timeout=4), WrkResult(5000, 2.0, 1.5, 9.0, 30.0, 0, 10, 4)),
    ],
    ids=["bare-line", "amid-wrk-output", "socket-errors-include-timeouts"],
)
def test_parse_wrk_output(output: str, expected: WrkResult) -> None:
    assert parse_wrk_output(output) == expected
    assert parse_wrk_output(output).rps == 2500


def test_missing_result_line_is_an_error_not_zero() -> None:
    with pytest.raises(ValueError, match="no result line"):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def _point(requests: int, upstream: int, status: int = 0, socket: int = 0) -> Point:
    return Point("t", 16, WrkResult(requests, 1.0, 1.0, 2.0, 3.0, status, socket, 0), upstream, 0.5)


@pytest.mark.parametrize(
    ("point", "errors"),
    [
        (_point(1000, 1000), 0),
        (_point(1000, 1016), 0),  # in flight when wrk stopped: seen upstream, not completed
        (_point(1000, 990, status=10), 10),  # 401s never reach the upstream: counted once
        (_point(1000, 900), 100),  # answered by the proxy itself with a 2xx/3xx (a login redirect)
        (_point(1000, 1000, socket=3), 3),
        (_point(1000, 990, status=10, socket=3), 13),
    ],
    ids=["clean", "in-flight-extra", "status-counted-once", "never-reached-upstream", "socket", "both"],
)
def test_point_errors(point: Point, errors: int) -> None:
    assert point.errors == errors


def test_cpu_per_request() -> None:
    assert _point(1000, 1000).cpu_us_per_request == 500


def test_wrk_argv_pins_threads_to_connections_and_passes_headers() -> None:
    argv = wrk_argv("http://x/", connections=1, seconds=5, threads=4, script="s.lua", headers=["Cookie: a=b"])
    assert argv == ["wrk", "-t1", "-c1", "-d5s", "-s", "s.lua", "-H", "Cookie: a=b", "http://x/"]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
async def test_real_wrk_done_hook_reports_what_the_server_saw(tmp_path: Path) -> None:
    """The Lua hook prints counts that match the server's, and a 401 counts as a status error."""
    served = {"ok": 0, "denied": 0}

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/denied":
            served["denied"] += 1
            return web.Response(status=401)
        served["ok"] += 1
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    script = tmp_path / "done.lua"
    script.write_text(DONE_SCRIPT)
    try:
        results = {}
        for path in ("/ok", "/denied"):
            argv = wrk_argv(f"http://127.0.0.1:{port}{path}", connections=2, seconds=1, threads=1, script=str(script))
            process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
            output, _ = await process.communicate()
            results[path] = parse_wrk_output(output.decode())
    finally:
        await runner.cleanup()
    ok, denied = results["/ok"], results["/denied"]
    assert ok.requests > 0 and ok.status_errors == 0
    assert 0 <= served["ok"] - ok.requests <= 2  # at most one in flight per connection
    assert denied.status_errors == denied.requests > 0
    assert ok.p50_ms <= ok.p99_ms
