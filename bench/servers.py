"""Starting the benchmark's servers on 127.0.0.1 and waiting until each one answers.

All of them (except the provider, which belongs with the load generators) run on the servers'
CPUs: ``redis-server``, the upstream nginx, nginx as a plain proxy, Apache httpd with
mod_auth_openidc, and authproxy (one worker, ``--workers auto``, and a variant that refreshes on
every request). Each writes its log under the run directory; a server that does not come up
fails the run with the tail of its log.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
import yaml

from bench.configs import (
    Client,
    apache_conf,
    authproxy_config,
    nginx_proxy_conf,
    nginx_upstream_conf,
)
from bench.processes import Processes, Started
from tests.support.net import free_port

REPO: Final = Path(__file__).resolve().parent.parent
PROVIDER_HOST: Final = "127.0.0.2"
START_TIMEOUT: Final = 30.0


class StartError(RuntimeError):
    """A server did not come up; the message carries the tail of its log."""


@dataclass(frozen=True)
class Server:
    """A started server: its process, where to reach it, and (for proxies) the cookie name."""

    name: str
    started: Started
    url: str
    cookie_name: str | None = None


async def wait_http(
    started: Started, url: str, *, ok: frozenset[int] = frozenset({200}), within: float = START_TIMEOUT
) -> None:
    """Poll ``url`` until it answers one of ``ok``; StartError if the process dies or time runs out.

    Asked as an API client would (``Accept: application/json``), so an authenticating proxy
    answers 401 rather than a login redirect.
    """
    deadline = time.monotonic() + within
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout, headers={"Accept": "application/json"}) as http:
        while time.monotonic() < deadline:
            if not started.alive():
                raise StartError(f"{started.name} exited:\n{started.log_tail()}")
            try:
                async with http.get(url, allow_redirects=False) as answer:
                    if answer.status in ok:
                        return
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    raise StartError(f"{started.name} did not answer {url} within {within:g}s:\n{started.log_tail()}")


async def wait_redis(started: Started, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not started.alive():
            raise StartError(f"redis-server exited:\n{started.log_tail()}")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PING\r\n")
            answer = await reader.read(16)
            writer.close()
            await writer.wait_closed()
            if answer.startswith(b"+PONG"):
                return
        except OSError:
            pass
        await asyncio.sleep(0.05)
    raise StartError(f"redis-server did not answer PING:\n{started.log_tail()}")


def write_file(path: Path, text: str) -> Path:
    """Write a configuration file (and its directory): setup, before anything is measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


async def start_redis(processes: Processes, directory: Path) -> tuple[Started, int]:
    port = free_port()
    write_file(directory / "README", "redis-server --dir (no persistence: --save '' --appendonly no)\n")
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    started = processes.start("redis-server", [*argv, "--dir", str(directory)], log_path=directory / "redis.log")
    await wait_redis(started, port)
    return started, port


def _nginx_binary() -> str:
    return "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "nginx"


def _prepare_nginx(directory: Path, conf: str) -> Path:
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / "temp" / sub).mkdir(parents=True, exist_ok=True)
    path = directory / "nginx.conf"
    path.write_text(conf)
    return path


async def start_upstream(processes: Processes, directory: Path, big_file: Path) -> tuple[Server, int]:
    """The upstream nginx; also the port of its request counter (``stub_status``)."""
    port, status_port = free_port(), free_port()
    conf = _prepare_nginx(directory, nginx_upstream_conf(directory, port, status_port, big_file, os.geteuid() == 0))
    started = processes.start(
        "nginx upstream", [_nginx_binary(), "-p", str(directory), "-c", str(conf)], log_path=directory / "stderr.log"
    )
    url = f"http://127.0.0.1:{port}"
    await wait_http(started, url + "/")
    return Server("upstream", started, url), status_port


async def start_nginx_proxy(processes: Processes, directory: Path, upstream_port: int) -> Server:
    port = free_port()
    conf = _prepare_nginx(directory, nginx_proxy_conf(directory, port, upstream_port, os.geteuid() == 0))
    started = processes.start(
        "nginx proxy", [_nginx_binary(), "-p", str(directory), "-c", str(conf)], log_path=directory / "stderr.log"
    )
    url = f"http://127.0.0.1:{port}"
    await wait_http(started, url + "/")
    return Server("nginx", started, url)


async def start_passthrough(processes: Processes, directory: Path, upstream_port: int) -> Server:
    """The aiohttp pass-through proxy (``bench/passthrough.py``): the floor for Python proxies."""
    port = free_port()
    argv = [
        sys.executable,
        str(REPO / "bench" / "passthrough.py"),
        "--port",
        str(port),
        "--upstream",
        f"http://127.0.0.1:{upstream_port}",
    ]
    started = processes.start("aiohttp passthrough", argv, log_path=directory / "passthrough.log", cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    await wait_http(started, url + "/")
    return Server("passthrough", started, url)


async def start_provider(processes: Processes, directory: Path, port: int, clients: list[Client]) -> Started:
    """The development provider on 127.0.0.2, pinned with the load generators."""
    clients_file = write_file(directory / "clients.json", json.dumps([client.as_json() for client in clients]))
    argv = [
        sys.executable,
        str(REPO / "bench" / "provider.py"),
        "--host",
        PROVIDER_HOST,
        "--port",
        str(port),
        "--clients",
        str(clients_file),
    ]
    started = processes.start(
        "provider", argv, log_path=directory / "provider.log", cpus=processes.pinning.load, cwd=REPO
    )
    await wait_http(started, f"http://{PROVIDER_HOST}:{port}/.well-known/openid-configuration")
    return started


async def start_apache(
    processes: Processes,
    directory: Path,
    *,
    port: int,
    upstream_port: int,
    provider_url: str,
    client: Client,
    redis_port: int,
) -> Server:
    write_file(directory / "run" / "README", "Apache's DefaultRuntimeDir\n")
    conf = write_file(
        directory / "httpd.conf",
        apache_conf(
            directory,
            port=port,
            upstream_port=upstream_port,
            provider_url=provider_url,
            client=client,
            passphrase=secrets.token_urlsafe(32),
            redis_port=redis_port,
            run_as_root=os.geteuid() == 0,
        ),
    )
    started = processes.start(
        "apache2", ["apache2", "-f", str(conf), "-DFOREGROUND"], log_path=directory / "stderr.log"
    )
    url = f"http://127.0.0.1:{port}"
    # 401: up, and refusing an unauthenticated non-browser request (the protected location)
    await wait_http(started, url + "/", ok=frozenset({401}))
    return Server("mod_auth_openidc", started, url, cookie_name="mod_auth_openidc_session")


async def start_authproxy(
    processes: Processes,
    directory: Path,
    *,
    name: str,
    port: int,
    upstream_port: int,
    provider_url: str,
    client: Client,
    redis_port: int,
    workers: str = "1",
    refresh_every_request: bool = False,
    env: dict[str, str] | None = None,
    launcher: Sequence[str] = (),
    start_within: float = START_TIMEOUT,
) -> Server:
    """``authproxy run`` with the Redis store; ready once ``/readyz`` says provider and store are.

    ``launcher`` is put before the Python command (a tool that runs it, such as valgrind).
    """
    admin_port = free_port()
    config = authproxy_config(
        port=port,
        admin_port=admin_port,
        upstream_port=upstream_port,
        provider_url=provider_url,
        client=client,
        session_secret=secrets.token_urlsafe(32),
        redis_port=redis_port,
        key_prefix=f"{name}:",
        refresh_every_request=refresh_every_request,
    )
    path = write_file(directory / f"{name}.yaml", yaml.safe_dump(config))
    argv = [*launcher, sys.executable, "-m", "authproxy", "run", "-c", str(path), "--workers", workers]
    # the code of this checkout unless ``env`` names another copy (an A/B experiment): the
    # virtualenv's editable install may point at a different checkout than the one running the
    # benchmark. Not run from the repository: ``-m`` puts the working directory first on
    # sys.path, which would shadow that PYTHONPATH
    inherited = os.environ.get("PYTHONPATH")
    python_path = f"{REPO}{os.pathsep}{inherited}" if inherited else str(REPO)
    started = processes.start(
        name, argv, log_path=directory / f"{name}.log", cwd=directory, env={"PYTHONPATH": python_path, **(env or {})}
    )
    await wait_http(started, f"http://127.0.0.1:{admin_port}/readyz", within=start_within)
    return Server(name, started, f"http://127.0.0.1:{port}", cookie_name="authproxy_session")
