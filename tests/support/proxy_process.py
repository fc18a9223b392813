"""Run ``authproxy run`` as a real subprocess on free loopback ports.

def test_x(run_proxy):
    proxy = run_proxy({"routes": [...]})      # listen/admin_listen filled in
    ... proxy.url, proxy.admin_url, proxy.rss(), proxy.terminate()
"""

from __future__ import annotations

import functools
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.net import free_port


@dataclass
class ProxyProcess:
    process: subprocess.Popen[bytes]
    url: str
    admin_url: str
    config_path: Path
    log_path: Path
    port: int
    admin_port: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss(self) -> int:
        """Resident set size in bytes (Linux /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def _wait_healthy(proxy: ProxyProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            raise RuntimeError(f"authproxy exited with {proxy.process.returncode}:\n{proxy.logs()}")
        try:
            with urllib.request.urlopen(proxy.admin_url + "/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"authproxy did not become healthy:\n{proxy.logs()}")


def _limit_open_files(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def start_proxy(
    config: dict[str, Any],
    directory: Path,
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: float = 20.0,
    max_open_files: int | None = None,
) -> ProxyProcess:
    """Write ``config`` (listen ports filled in) and start ``authproxy run`` on it.

    ``max_open_files`` lowers the process's file descriptor limit (RLIMIT_NOFILE), as a host
    short of them would. A port chosen here was free a moment before the proxy binds it; when
    another process took it meanwhile, the proxy is started again on fresh ports.
    """
    server = config.get("server", {})
    attempts = PORT_ATTEMPTS if "listen" not in server and "admin_listen" not in server else 1
    for attempt in range(1, attempts + 1):
        try:
            proxy = _start_once(config, directory, args, env, timeout, max_open_files)
            break
        except _PortTaken:
            if attempt == attempts:
                raise
    if "provider" in config:
        _wait_ready(proxy, READY_GRACE)
    return proxy


# how many times a proxy is started on fresh ports when one it was given was taken meanwhile
PORT_ATTEMPTS = 3


class _PortTaken(RuntimeError):
    """The proxy could not listen: another process took a port between its choice and the bind."""


def _start_once(
    config: dict[str, Any],
    directory: Path,
    args: tuple[str, ...],
    env: dict[str, str] | None,
    timeout: float,
    max_open_files: int | None,
) -> ProxyProcess:
    config = {**config}
    server = dict(config.get("server", {}))
    port = free_port()
    admin_port = free_port()
    server.setdefault("listen", f"127.0.0.1:{port}")
    server.setdefault("admin_listen", f"127.0.0.1:{admin_port}")
    port = int(server["listen"].rsplit(":", 1)[1])
    admin_port = int(server["admin_listen"].rsplit(":", 1)[1])
    config["server"] = server
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / f"authproxy-{port}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = directory / f"authproxy-{port}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "authproxy", "run", "-c", str(config_path), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        preexec_fn=None if max_open_files is None else functools.partial(_limit_open_files, max_open_files),
    )
    log.close()
    proxy = ProxyProcess(
        process,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{admin_port}",
        config_path,
        log_path,
        port,
        admin_port,
    )
    try:
        _wait_healthy(proxy, timeout)
    except Exception as e:
        proxy.kill()
        if "the address is already in use" in proxy.logs():
            raise _PortTaken(str(e)) from e
        raise
    return proxy


# with a provider, discovery runs in the background after the listener is up: give it this long to
# finish so tests do not race it (a test that starts the proxy with the provider down just waits)
READY_GRACE = 5.0


def _wait_ready(proxy: ProxyProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proxy.process.poll() is None:
        try:
            with urllib.request.urlopen(proxy.admin_url + "/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)


@pytest.fixture
def run_proxy(tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    started: list[ProxyProcess] = []

    def run(config: dict[str, Any], **kwargs: Any) -> ProxyProcess:
        proxy = start_proxy(config, tmp_path, **kwargs)
        started.append(proxy)
        return proxy

    yield run
    for proxy in started:
        proxy.kill()
