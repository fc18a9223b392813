"""``authproxy run --workers N`` (SPEC sections 1 and 6): the parent passes SIGTERM on, waits for
every worker within a bound, exits 0 only when all stopped cleanly, and never leaves one behind.

Every check is on real processes, by PID: the parent's children are read from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from authproxy.workers import clean_exit
from tests.support.net import free_port, proc_stat_fields
from tests.support.proxy_process import ProxyProcess

WAIT = 30.0


def children_of(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid`` (every thread's list: the kernel keeps one per task)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            found |= {int(child) for child in (task / "children").read_text().split()}
    return sorted(found)


def running(pid: int) -> bool:
    """Whether ``pid`` still exists as a process that has not exited (a zombie has exited)."""
    fields = proc_stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def exists(pid: int) -> bool:
    """Whether any process, zombie included, still holds ``pid``."""
    return Path(f"/proc/{pid}").exists()


def wait_until(condition: Any, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def two_workers(run_proxy, redis_url: str, **server: Any) -> tuple[ProxyProcess, list[int]]:
    config = {
        "server": server,
        "session": {"store": "redis", "redis": {"url": redis_url}},
        "routes": [{"name": "app", "upstream": "http://127.0.0.1:9", "auth": "none"}],
    }
    proxy = run_proxy(config, args=("--workers", "2"))
    assert wait_until(lambda: proxy.logs().count('"msg":"listening"') == 2), proxy.logs()
    workers = children_of(proxy.pid)
    assert len(workers) == 2, f"expected two worker processes, found {workers}"
    return proxy, workers


def test_sigterm_stops_every_worker_and_the_parent_exits_0_after_reaping_them(run_proxy, redis_url) -> None:
    proxy, workers = two_workers(run_proxy, redis_url)
    assert proxy.terminate(timeout=WAIT) == 0, proxy.logs()
    # the parent reaped them before exiting: not even a zombie is left for PID 1
    assert [pid for pid in workers if exists(pid)] == []
    assert proxy.logs().count('"msg":"worker stopped"') == 2


def test_a_worker_that_crashes_stops_the_others_and_the_parent_exits_1(run_proxy, redis_url) -> None:
    proxy, workers = two_workers(run_proxy, redis_url)
    os.kill(workers[0], signal.SIGKILL)
    assert proxy.process.wait(timeout=WAIT) == 1, proxy.logs()
    assert [pid for pid in workers if exists(pid)] == []
    assert "worker exited unexpectedly" in proxy.logs()


def test_a_worker_that_does_not_stop_in_time_is_killed_and_the_parent_exits_1(run_proxy, redis_url) -> None:
    proxy, workers = two_workers(run_proxy, redis_url, shutdown_timeout="1s")
    os.kill(workers[1], signal.SIGSTOP)  # hung: it will never act on the SIGTERM
    try:
        assert proxy.terminate(timeout=WAIT) == 1, proxy.logs()
    finally:
        if exists(workers[1]):
            os.kill(workers[1], signal.SIGCONT)
    assert [pid for pid in workers if exists(pid)] == []
    assert "worker did not stop in time; killing it" in proxy.logs()


def test_workers_stop_by_themselves_when_the_parent_is_killed(run_proxy, redis_url) -> None:
    proxy, workers = two_workers(run_proxy, redis_url)
    proxy.kill()  # SIGKILL: the parent cannot pass anything on
    assert wait_until(lambda: not any(running(pid) for pid in workers)), "a worker outlived its parent"
    assert proxy.logs().count('"msg":"stopped"') == 2, "each worker should drain and stop, not be killed"


def test_sigterm_while_the_workers_are_still_starting_leaves_none_behind(tmp_path: Path, redis_url) -> None:
    config = {
        "server": {"listen": f"127.0.0.1:{free_port()}", "admin_listen": f"127.0.0.1:{free_port()}"},
        "session": {"store": "redis", "redis": {"url": redis_url}},
        "routes": [{"name": "app", "upstream": "http://127.0.0.1:9", "auth": "none"}],
    }
    path = tmp_path / "authproxy.yaml"
    path.write_text(yaml.safe_dump(config))
    parent = subprocess.Popen(
        [sys.executable, "-m", "authproxy", "run", "-c", str(path), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: len(children_of(parent.pid)) >= 1 or parent.poll() is not None)
        workers = children_of(parent.pid)
        parent.send_signal(signal.SIGTERM)  # the workers are still importing, not serving yet
        _, stderr = parent.communicate(timeout=WAIT)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert parent.returncode == 0, stderr.decode()
    assert [pid for pid in workers if exists(pid)] == []


@pytest.mark.parametrize(
    ("returncode", "stop_sent", "clean"),
    [
        pytest.param(0, False, True, id="exit-0"),
        pytest.param(0, True, True, id="exit-0-after-stop"),
        pytest.param(1, True, False, id="exit-1-after-stop"),
        pytest.param(-signal.SIGTERM, True, True, id="sigterm-we-sent-before-its-handler"),
        pytest.param(-signal.SIGTERM, False, False, id="sigterm-from-someone-else"),
        pytest.param(-signal.SIGKILL, True, False, id="killed"),
    ],
)
def test_which_worker_exits_count_as_a_clean_stop(returncode: int, stop_sent: bool, clean: bool) -> None:
    assert clean_exit(returncode, stop_sent=stop_sent) is clean


async def test_an_in_flight_request_finishes_when_the_parent_is_told_to_stop(run_proxy, redis_url) -> None:
    started = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(2)
        return web.Response(text="finished")

    app = web.Application()
    app.router.add_get("/slow", slow)
    upstream = TestServer(app, host="127.0.0.1")
    await upstream.start_server()
    try:
        config = {
            "session": {"store": "redis", "redis": {"url": redis_url}},
            "routes": [{"name": "app", "upstream": str(upstream.make_url("/")).rstrip("/"), "auth": "none"}],
        }
        proxy = run_proxy(config, args=("--workers", "2"))
        async with aiohttp.ClientSession() as client:
            request = asyncio.create_task(client.get(proxy.url + "/slow"))
            await asyncio.wait_for(started.wait(), 15)
            proxy.process.send_signal(signal.SIGTERM)
            answer = await asyncio.wait_for(request, 20)
            assert answer.status == 200 and await answer.text() == "finished"
        assert await asyncio.to_thread(proxy.process.wait, WAIT) == 0, proxy.logs()
    finally:
        await upstream.close()


def _requests_by_worker(exposition: str) -> dict[str, float]:
    """``authproxy_requests_total`` of route ``app`` summed per ``worker`` label."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "authproxy_requests_total" and sample.labels["route"] == "app":
                worker = sample.labels["worker"]
                counts[worker] = counts.get(worker, 0.0) + sample.value
    return counts


async def test_every_scrape_has_every_workers_series_whichever_worker_answers_it(run_proxy, redis_url) -> None:
    # the workers share the admin port: a scrape reaching one of them must still count the
    # requests all of them answered, or sums over the worker label jump from scrape to scrape
    proxy, workers = two_workers(run_proxy, redis_url)
    arguments = Path(f"/proc/{workers[0]}/cmdline").read_bytes().split(b"\0")
    peers_directory = Path(arguments[arguments.index(b"--peers") + 1].decode())
    assert sorted(path.name for path in peers_directory.iterdir()) == ["worker-0.sock", "worker-1.sock"]
    sent = 40
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
        for _ in range(sent):  # a connection each: the kernel spreads them over both workers
            async with client.get(proxy.url + "/") as answer:
                assert answer.status == 502  # the route's upstream refuses: an answer all the same
        scrapes = []
        for _ in range(8):  # a connection each: the scrapes reach both workers too
            async with client.get(proxy.admin_url + "/metrics") as answer:
                assert answer.status == 200
                scrapes.append(_requests_by_worker(await answer.text()))
    for counts in scrapes:
        assert set(counts) == {"0", "1"}, counts
        assert sum(counts.values()) == sent, counts
    assert proxy.terminate(timeout=WAIT) == 0, proxy.logs()
    assert not peers_directory.exists(), "the run's directory outlived it"


# ---------------------------------------------------------------- a worker's own start, deterministically


def worker_config(tmp_path: Path) -> Path:
    """A one-route configuration with the memory store, written to a file."""
    config = {
        "server": {"listen": f"127.0.0.1:{free_port()}", "admin_listen": f"127.0.0.1:{free_port()}"},
        "routes": [{"name": "app", "upstream": "http://127.0.0.1:9", "auth": "none"}],
    }
    path = tmp_path / "authproxy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_python(*args: str) -> subprocess.CompletedProcess[str]:
    """This interpreter with ``args``, to its end (at most ``WAIT`` seconds); its output as text."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=WAIT, check=False)


def test_a_worker_whose_parent_died_before_it_started_stops_without_serving(tmp_path: Path) -> None:
    # its parent died before the worker asked for PDEATHSIG: no one would ever tell it to stop,
    # so it must not start serving (an orphan on the port for ever)
    path = worker_config(tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    worker = run_python("-m", "authproxy.workers", "--config", str(path), "--index", "0", "--parent", str(gone.pid))
    assert worker.returncode == 0, worker.stderr
    assert '"msg":"listening"' not in worker.stderr


def test_a_stop_signal_that_reached_a_starting_worker_keeps_it_from_serving(tmp_path: Path) -> None:
    # the signal handlers are the module's first statements: a SIGTERM during the imports and
    # the configuration's load is remembered, and the worker ends before it listens
    path = worker_config(tmp_path)
    worker = run_python(
        "-c",
        "import os, signal, sys\n"
        "import authproxy.workers as workers\n"
        "workers._stop_signal = signal.SIGTERM\n"
        f"sys.exit(workers._worker_main(['--config', {str(path)!r}, '--index', '0', '--parent', str(os.getppid())]))\n",
    )
    assert worker.returncode == 0, worker.stderr
    assert '"msg":"listening"' not in worker.stderr


def test_a_stop_signal_that_came_before_the_servers_handlers_is_honoured_once_listening(tmp_path: Path) -> None:
    # a SIGTERM after the configuration's load but before the event loop's own signal handlers
    # exist: the server drains and stops as soon as it listens, instead of serving until killed
    path = worker_config(tmp_path)
    worker = run_python(
        "-c",
        "from authproxy.config import load_config\n"
        "from authproxy.logs import configure_logging\n"
        "from authproxy.server import run_worker\n"
        "configure_logging()\n"
        f"run_worker(load_config({str(path)!r}), stop_requested=lambda: True)\n",
    )
    assert worker.returncode == 0, worker.stderr
    assert worker.stderr.count('"msg":"listening"') == 1 and '"msg":"stopped"' in worker.stderr
