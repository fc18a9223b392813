"""The machine description written beside the results: CPU, memory, OS, and each peer's version.

Only read-only commands are run (``--version`` flags, ``dpkg-query``, ``git rev-parse`` and
``git status --porcelain``), and a missing tool reads as "unknown" rather than failing the run.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from bench.processes import Pinning


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        # only the fixed version/status commands of describe_machine
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=cwd, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def _package(name: str) -> str:
    return _run(["dpkg-query", "-W", "-f", "${Version}", name]) or "unknown"


def _python_package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def describe_machine(repo: Path, pinning: Pinning) -> list[str]:
    """Markdown bullet lines describing the machine and the software measured."""
    commit = _run(["git", "rev-parse", "--short", "HEAD"], cwd=repo) or "unknown"
    dirty = " (with uncommitted changes)" if _run(["git", "status", "--porcelain"], cwd=repo) else ""
    nginx = _run(["/usr/sbin/nginx", "-v"]).replace("nginx version: ", "") or "unknown"
    return [
        f"- CPU: {_cpu_model()}, {os.cpu_count()} logical cores; memory {_memory_gib()}",
        f"- OS: {_os_name()}, kernel {platform.release()}",
        f"- Pinning: {pinning.describe()}",
        f"- Load average when the run started: {load_average()} (other work on the machine adds noise)",
        f"- authproxy {_python_package('authproxy')} at commit {commit}{dirty}; Python "
        f"{sys.version.split()[0]}, aiohttp {_python_package('aiohttp')}, uvloop {_python_package('uvloop')}, "
        f"redis-py {_python_package('redis')}",
        f"- nginx {nginx}; Apache httpd {_package('apache2')} (mpm_event) with mod_auth_openidc "
        f"{_package('libapache2-mod-auth-openidc')}; redis-server {_package('redis-server')}; wrk {_package('wrk')}",
    ]
