"""Sentinel failover (SPEC section 5): sessions survive the loss of the Redis master.

A master, a replica and a Sentinel on loopback; authproxy finds the master through the
Sentinel. After a login the master is killed: while Sentinel fails over, requests may get 503
(fail closed) but never 200 without the session's identity; afterwards the same cookie works.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from authproxy.errors import StoreUnavailable
from authproxy.sessions.redis import RedisStore
from tests.support.logout import COOKIE, browser, fault_stack, log_in, session_cookie, status_with_cookie
from tests.support.net import free_port
from tests.support.ops import login, start_ops_stack, upstream_seen
from tests.support.redis_server import RedisServer, _command, start_redis_server
from tests.support.tls import self_signed

MASTER_NAME = "authproxy-failover"


def _start_sentinel(directory: Path, master: RedisServer) -> RedisServer:
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
        f"sentinel failover-timeout {MASTER_NAME} 5000\n"
    )
    sentinel = RedisServer(port, directory, ("--sentinel",), config)
    sentinel.start()
    return sentinel


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_sessions_survive_a_sentinel_failover(tmp_path: Path) -> None:
    master = start_redis_server(tmp_path / "master")
    replica = start_redis_server(tmp_path / "replica", "--replicaof", "127.0.0.1", str(master.port))
    sentinel = _start_sentinel(tmp_path / "sentinel", master)
    try:
        assert _wait(lambda: b"connected_slaves:1" in _command(master.port, "INFO", "replication"), 15)
        assert _wait(
            lambda: (
                str(master.port).encode() in _command(sentinel.port, "SENTINEL", "get-master-addr-by-name", MASTER_NAME)
            ),
            15,
        )
        config = {
            "session": {
                "store": "redis",
                "redis": {"sentinel": {"master_name": MASTER_NAME, "nodes": [f"127.0.0.1:{sentinel.port}"]}},
            }
        }
        with start_ops_stack(tmp_path / "stack", config=config) as stack:

            async def run() -> None:
                async with stack.browser() as b:
                    page = await login(b, stack, "/app/before")
                    assert page.status == 200
                    # the session must have reached the replica before the master dies
                    assert _wait(lambda: int(_command(replica.port, "DBSIZE").strip()[1:] or 0) > 0, 10)
                    time.sleep(0.5)
                    master.kill()
                    statuses: list[int] = []
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        answer = await b.get(
                            stack.url + "/app/during", headers={"Accept": "application/json"}, follow_redirects=False
                        )
                        statuses.append(answer.status)
                        if answer.status == 200:
                            assert upstream_seen(answer)["x-forwarded-user"] == "alice"
                            break
                        assert answer.status == 503, answer  # fail closed while there is no master
                        await asyncio.sleep(0.2)
                    assert statuses[-1] == 200, statuses
                    again = await b.get(stack.url + "/app/after", headers={"Accept": "application/json"})
                    assert again.status == 200 and upstream_seen(again)["x-forwarded-user"] == "alice"
                async with stack.browser() as fresh:
                    assert (await login(fresh, stack, "/app/new")).status == 200

            asyncio.run(run())
    finally:
        for server in (sentinel, replica, master):
            server.kill()


async def test_a_sign_out_after_a_failover_reaches_every_replica_when_the_old_master_comes_back(
    tmp_path: Path,
) -> None:
    # the master pauses (a VM stall, a network partition) long enough for Sentinel to promote the
    # replica, then answers again, still believing it is the master until Sentinel demotes it
    # (seconds later). Meanwhile every replica must write, read and hear invalidations on the
    # master Sentinel names: a sign-out on one must end the session on the other at once
    master = start_redis_server(tmp_path / "master")
    replica = start_redis_server(tmp_path / "replica", "--replicaof", "127.0.0.1", str(master.port))
    sentinel = _start_sentinel(tmp_path / "sentinel", master)
    try:
        assert _wait(lambda: b"connected_slaves:1" in _command(master.port, "INFO", "replication"), 15)
        session = {
            "store": "redis",
            "redis": {
                "url": master.url,
                "sentinel": {"master_name": MASTER_NAME, "nodes": [f"127.0.0.1:{sentinel.port}"]},
            },
            # the default cache, with a backstop longer than the test: only invalidations may end a session
            "cache": {"max_age": "60s"},
        }
        with fault_stack(tmp_path / "stack", replicas=2, session_options=session) as stack:
            cookies = []
            for user in ("alice", "bob"):
                async with browser() as b:
                    await log_in(stack, user, b)
                    cookies.append(session_cookie(b))
            assert _wait(lambda: int(_command(replica.port, "DBSIZE").strip()[1:] or 0) > 0, 10)
            time.sleep(0.5)

            # users keep browsing on both replicas while the master hangs
            stalled = True

            async def browsing() -> None:
                while stalled:
                    await asyncio.gather(*(status_with_cookie(p.url + "/app", cookies[0]) for p in stack.proxies))
                    await asyncio.sleep(0.1)

            users = asyncio.create_task(browsing())
            master.freeze()
            try:
                replica_named = str(replica.port).encode()
                assert _wait(
                    lambda: (
                        replica_named in _command(sentinel.port, "SENTINEL", "get-master-addr-by-name", MASTER_NAME)
                    ),
                    30,
                )
            finally:
                master.thaw()
                stalled = False
                await users
            await asyncio.sleep(1.0)  # the failover is over; the old master answers, not yet demoted
            for cookie in cookies:
                for proxy in stack.proxies:
                    assert await status_with_cookie(proxy.url + "/app", cookie) == 200
            for signing_out, cookie in enumerate(cookies):
                async with browser() as b:
                    b.cookies.receive(stack.proxies[signing_out].url, [f"{COOKIE}={cookie}; Path=/"])
                    answer = await b.get(stack.proxies[signing_out].url + "/oauth2/sign_out", follow_redirects=False)
                    assert answer.status == 302
                for proxy in stack.proxies:
                    assert await status_with_cookie(proxy.url + "/app", cookie) == 401
    finally:
        for server in (sentinel, replica, master):
            server.kill()


def _start_tls_master_and_sentinel(directory: Path) -> tuple[RedisServer, RedisServer, Path, int]:
    """A master serving TLS (a self-signed certificate) and a Sentinel naming its TLS port."""
    cert, key = self_signed(directory)
    tls = ("--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert))
    tls_port = free_port()
    master = start_redis_server(directory / "master", "--tls-port", str(tls_port), *tls, "--tls-auth-clients", "no")
    sentinel_dir = directory / "sentinel"
    sentinel_dir.mkdir()
    config = sentinel_dir / "sentinel.conf"
    port = free_port()
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {sentinel_dir}\n"
        f"tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {cert}\ntls-replication yes\n"
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {tls_port} 1\n"
    )
    sentinel = RedisServer(port, sentinel_dir, ("--sentinel",), config)
    sentinel.start()
    return master, sentinel, cert, port


@pytest.mark.parametrize(("trusted", "works"), [(True, True), (False, False)], ids=["ca-in-url", "no-ca"])
async def test_a_sentinel_managed_master_over_tls_trusts_the_ca_the_url_names(
    tmp_path: Path, trusted: bool, works: bool
) -> None:
    # with sentinel the URL gives credentials, database and TLS: a ?ssl_ca_certs= for a private
    # CA is TLS too, and the master's connections must trust it (and nothing else)
    master, sentinel, cert, port = _start_tls_master_and_sentinel(tmp_path)
    query = f"?ssl_ca_certs={cert}" if trusted else ""
    store = RedisStore(
        f"rediss://{MASTER_NAME}/0{query}", sentinel_master=MASTER_NAME, sentinel_nodes=[f"127.0.0.1:{port}"]
    )
    try:
        if works:
            await store.ping()
        else:
            with pytest.raises(StoreUnavailable):
                await store.ping()
    finally:
        await store.close()
        sentinel.kill()
        master.kill()


async def test_a_sentinel_managed_master_takes_a_url_that_a_standalone_server_takes(tmp_path: Path) -> None:
    # ?timeout= is how long a request waits for a free pooled connection: the configuration
    # accepts it, and with Sentinel it must not reach the master's connections as a keyword
    # they do not take (a TypeError on every command, every protected request a 500)
    master = start_redis_server(tmp_path / "master")
    sentinel = _start_sentinel(tmp_path / "sentinel", master)
    store = RedisStore(
        f"redis://{MASTER_NAME}/0?timeout=1&max_connections=8",
        sentinel_master=MASTER_NAME,
        sentinel_nodes=[f"127.0.0.1:{sentinel.port}"],
    )
    try:
        await store.ping()
    finally:
        await store.close()
        sentinel.kill()
        master.kill()
