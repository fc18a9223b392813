"""A real ``redis-server`` on a free 127.0.0.1 port, for tests of the Redis session store.

def test_x(redis_server):
    store = RedisStore(redis_server.url)
    redis_server.stop()     # refuses connections from now on
    redis_server.start()    # back on the same port, empty
    redis_server.freeze()   # SIGSTOP: accepts connections and never answers (a hung server)
    redis_server.thaw()

The process is killed by its PID at teardown. ``start_redis_server(directory)`` gives the same
object outside a fixture (it must then be ``kill()``-ed by its caller).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.net import free_port

START_TIMEOUT = 10.0


def redis_server_binary() -> str:
    """The path of ``redis-server``; fails the test with the fix when it is missing."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if binary is None:
        pytest.fail("redis-server is not installed: `apt-get install -y redis-server` (or `make system-deps`)")
    return binary


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One redis-server process; ``start``/``stop`` keep the port for fault tests."""

    port: int
    directory: Path
    extra_args: tuple[str, ...] = ()
    config_file: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / f"redis-{self.port}.log"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        """Start (or restart) the server on ``port`` and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    redis_server_binary(),
                    # a config file, when there is one, must be the first argument
                    *([str(self.config_file)] if self.config_file else []),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers_ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"redis-server did not start on port {self.port}:\n{self.log_path.read_text()}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Kill the server (no shutdown courtesy: this is a crash) and wait until it is gone."""
        self.kill()

    def freeze(self) -> None:
        """Stop the process without closing its socket: clients connect and then hear nothing."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)  # also ends a frozen (SIGSTOPped) process
        self.process.wait(timeout=10)
        self.process = None


def start_redis_server(directory: Path, *extra_args: str, port: int | None = None) -> RedisServer:
    """A started server on ``port`` (default: a free one); the caller kills it."""
    server = RedisServer(port or free_port(), directory, tuple(extra_args))
    server.start()
    return server


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty redis-server for one test."""
    server = start_redis_server(tmp_path / "redis")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


def holds_keys(port: int, pattern: str) -> bool:
    """Whether the server on ``port`` holds a key matching ``pattern`` (KEYS: for small test data)."""
    answer = _command(port, "KEYS", pattern)
    return answer.startswith(b"*") and not answer.startswith(b"*0\r\n")


def publishes_taken(port: int) -> int:
    """How many PUBLISH commands the server on ``port`` has run (its ``INFO commandstats``)."""
    stats = _command(port, "INFO", "commandstats").decode()
    line = next((line for line in stats.splitlines() if line.startswith("cmdstat_publish:")), "calls=0,")
    return int(line.split("calls=")[1].split(",")[0])


def _command(port: int, *args: str) -> bytes:
    """One inline command over a raw socket (no client library needed); the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall((" ".join(args) + "\r\n").encode())
        return sock.recv(65536)


@dataclass
class RedisCluster:
    """A Redis Cluster of masters only, each its own redis-server on a free port."""

    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def node_of(self, key: str) -> RedisServer:
        """The master serving ``key``'s slot (as the cluster's first node sees it)."""
        slot = int(_command(self.nodes[0].port, "CLUSTER", "KEYSLOT", key).strip().lstrip(b":"))
        for line in _command(self.nodes[0].port, "CLUSTER", "NODES").decode().splitlines():
            fields = line.split()
            if len(fields) < 9 or "master" not in fields[2]:
                continue
            port = int(fields[1].split("@")[0].rpartition(":")[2])
            for served in fields[8:]:
                first, _, last = served.partition("-")
                if first.isdigit() and int(first) <= slot <= int(last or first):
                    return next(node for node in self.nodes if node.port == port)
        raise AssertionError(f"no master serves slot {slot}")

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


def _free_cluster_port() -> int:
    """A free port <= 55535 whose cluster bus port (+10000) is free too (Redis's own limit)."""
    for _ in range(100):
        port = random.randint(20000, 55535)  # a port number, not a secret
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    pytest.fail("no free port pair for a Redis cluster node")


def start_redis_cluster(directory: Path, masters: int = 3, extra_args: tuple[str, ...] = ()) -> RedisCluster:
    """A ready ``masters``-node cluster (all 16384 slots covered); the caller kills it.

    ``extra_args`` go to every node (e.g. append-only persistence, so a restarted node keeps its data).
    """
    cluster = RedisCluster([])
    try:
        for _ in range(masters):
            port = _free_cluster_port()
            cluster.nodes.append(
                start_redis_server(
                    directory / f"cluster-{port}",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "5000",
                    *extra_args,
                    port=port,
                )
            )
        subprocess.run(
            [
                shutil.which("redis-cli") or "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in cluster.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not all(b"cluster_state:ok" in _command(node.port, "CLUSTER", "INFO") for node in cluster.nodes):
            if time.monotonic() > deadline:
                pytest.fail("the Redis cluster did not reach cluster_state:ok")
            time.sleep(0.05)
    except BaseException:
        cluster.kill()
        raise
    return cluster


@dataclass
class RedisSentinel:
    """A master and one Sentinel watching it under ``master_name``."""

    master: RedisServer
    sentinel: RedisServer
    master_name: str = "authproxy-test"

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{self.sentinel.port}"]

    def kill(self) -> None:
        self.sentinel.kill()
        self.master.kill()


def start_redis_sentinel(directory: Path, extra_args: tuple[str, ...] = ()) -> RedisSentinel:
    """A master plus a Sentinel that already reports it; the caller kills both.

    ``extra_args`` go to the master (e.g. append-only persistence, so a restart keeps its data).
    """
    master = start_redis_server(directory / "master", *extra_args)
    try:
        port = free_port()
        sentinel_dir = directory / f"sentinel-{port}"
        sentinel_dir.mkdir(parents=True, exist_ok=True)
        config = sentinel_dir / "sentinel.conf"
        name = RedisSentinel.master_name
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {sentinel_dir}\n"
            f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n"
            f"sentinel down-after-milliseconds {name} 5000\n"
        )
        sentinel = RedisServer(port, sentinel_dir, ("--sentinel",), config)
        sentinel.start()
        deadline = time.monotonic() + START_TIMEOUT
        while str(master.port).encode() not in _command(port, "SENTINEL", "get-master-addr-by-name", name):
            if time.monotonic() > deadline:
                sentinel.kill()
                pytest.fail(f"the Sentinel does not report its master:\n{sentinel.log_path.read_text()}")
            time.sleep(0.05)
    except BaseException:
        master.kill()
        raise
    return RedisSentinel(master, sentinel)
