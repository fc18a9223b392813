"""Ports and process helpers for tests that run real servers on 127.0.0.1."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# ports this process has handed out: the kernel may offer a port again as soon as the probe
# closes, so two calls for one configuration (say listen and admin_listen) could get the same one
_HANDED_OUT: set[tuple[str, int]] = set()


def ours(port: int, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``port`` is in this test process's share: under pytest-xdist each process takes its
    own ports, so two of them never start servers on one (Linux's bind to port 0 hands out odd
    ports only, hence the shift)."""
    count = int(environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    return (port >> 1) % count == index


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``, in this process's share, and not handed
    out before by this process."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if (host, port) not in _HANDED_OUT and ours(port):
            _HANDED_OUT.add((host, port))
            return port
    raise AssertionError(f"no fresh free port on {host}")


def proc_stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from its state on (proc(5) fields 3 onwards), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces and parentheses itself
    return stat[stat.rfind(")") + 2 :].split() or None


def stat_cpu_seconds(fields: list[str]) -> float:
    """User + system CPU seconds of a process, from its :func:`proc_stat_fields` (utime, stime)."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connection_key(host: str = "idp.example.com", port: int = 443) -> Any:
    """What aiohttp's connector errors carry about their connection (only host and port are read),
    for building such an error without a connection."""
    return SimpleNamespace(host=host, port=port, ssl=port == 443)
