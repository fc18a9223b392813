"""Serving: listeners, worker processes, graceful shutdown (SPEC sections 1 and 6).

One worker runs both listeners in one event loop. ``--workers N`` starts N such processes that
bind the same ports with SO_REUSEPORT (``authproxy.workers`` supervises them). On SIGTERM a
worker stops accepting, lets in-flight requests finish (bounded by ``server.shutdown_timeout``),
closes its clients and exits 0. A listener that cannot open raises ``ListenError``, which names
the config key (``server.listen``, ``server.admin_listen``) and the cause in words.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import ipaddress
import os
import signal
import socket
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from authproxy import allocator
from authproxy.admin import create_admin_app, create_own_metrics_app
from authproxy.app import create_app, readiness
from authproxy.config import Config
from authproxy.errors import ConfigError, ListenError
from authproxy.factories import server_ssl_context
from authproxy.fast_path import FastSite
from authproxy.logs import LOG
from authproxy.metrics import Metrics
from authproxy.metrics_peers import Peers, remove_socket

_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
# aiohttp's drain after the site's own (FastSite.stop): in-flight answers were given
# server.shutdown_timeout there already, so what is left is only unwinding
AFTER_DRAIN_TIMEOUT: Final = 1.0


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    # a ConfigError (exit 2) when the files are not a chain and key: `check` refuses them too
    return server_ssl_context(config.server.tls) if config.server.tls is not None else None


_BIND_CAUSES: Final = {
    errno.EADDRINUSE: "the address is already in use (another process listens on that port)",
    errno.EACCES: "permission denied (ports below 1024 need root or the CAP_NET_BIND_SERVICE capability)",
    errno.EADDRNOTAVAIL: "no network interface of this machine has that address",
}


def describe_bind_error(error: OSError) -> str:
    """Why a listener could not open, in words an operator can act on."""
    if isinstance(error, socket.gaierror):
        return "the host name does not resolve"
    if error.errno in _BIND_CAUSES:
        return _BIND_CAUSES[error.errno]
    return error.strerror or str(error)


def check_listeners(config: Config) -> None:
    """Bind both addresses once and let go: a port in use or not permitted gets one clear error.

    ``--workers N`` runs this in the parent before any worker starts, so the operator reads one
    line naming the key instead of one failure per worker. SO_REUSEPORT is set as the workers set
    it, so another authproxy sharing the port on purpose does not count as a conflict.
    """
    bound: list[set[tuple[str, int]]] = []
    for key, (host, port) in (
        ("server.listen", config.server.listen_host_port()),
        ("server.admin_listen", config.server.admin_host_port()),
    ):
        address = f"{host}:{port}"
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            for family, kind, proto, _, sockaddr in infos:
                with socket.socket(family, kind, proto) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if hasattr(socket, "SO_REUSEPORT"):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    sock.bind(sockaddr)
        except OSError as e:
            raise ListenError(key, address, describe_bind_error(e)) from e
        bound.append({(str(sockaddr[0]), int(sockaddr[1])) for *_, sockaddr in infos})
    if _same_port_and_interface(*bound):
        # the configuration check compares the addresses as written; this one, as they resolve
        # ("localhost" and "127.0.0.1"): with SO_REUSEPORT both listeners would take the port, and
        # the public one would answer the admin endpoints on some connections
        raise ConfigError(
            [
                f"server.admin_listen: {config.server.admin_listen} is also where server.listen serves "
                f"({config.server.listen}); the admin endpoints (metrics, health) need an address of their own"
            ]
        )


def _same_port_and_interface(first: set[tuple[str, int]], second: set[tuple[str, int]]) -> bool:
    """Whether two listeners' resolved ``(address, port)`` pairs share a port on one interface."""
    for address, port in first:
        for other, other_port in second:
            if port == other_port and (
                address == other
                or ipaddress.ip_address(address).is_unspecified
                or ipaddress.ip_address(other).is_unspecified
            ):
                return True
    return False


async def _start_site(site: web.BaseSite, key: str, address: str) -> None:
    try:
        await site.start()
    except OSError as e:
        raise ListenError(key, address, describe_bind_error(e)) from e


async def serve(
    config: Config,
    *,
    worker: int = 0,
    reuse_port: bool = False,
    on_started: Callable[[], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
    peers_directory: Path | None = None,
) -> None:
    """Run both listeners until SIGTERM or SIGINT, then drain and return.

    ``peers_directory`` (``--workers``): where the workers of this run serve each other their
    metrics, so that a scrape of any one of them has them all (``metrics_peers``).
    """
    metrics = Metrics(worker=str(worker))
    app, services = create_app(config, metrics)
    stop = asyncio.Event()
    peers = None if peers_directory is None else Peers(peers_directory, worker)
    # once stopping, the main listener accepts nothing more: /readyz says so while in-flight requests drain
    admin = create_admin_app(metrics, lambda: readiness(services, stopping=stop.is_set()), peers)
    timeout = config.server.shutdown_timeout
    # aiohttp's keep-alive timer runs from connection start (and after each response) until a
    # complete request head has arrived, and closes idle connections: with it set to the client
    # header timeout, a slowloris client that trickles header bytes is cut off.
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        # the site's stop drains both paths within ``timeout``: aiohttp's own drain afterwards
        # only finds what the deadline cut, unwinding
        shutdown_timeout=AFTER_DRAIN_TIMEOUT,
        handler_cancellation=True,
        keepalive_timeout=config.server.client_header_timeout,
    )
    admin_runner = web.AppRunner(admin, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    own_runner = None if peers is None else web.AppRunner(create_own_metrics_app(metrics), access_log=None)
    await runner.setup()
    await admin_runner.setup()
    try:
        if own_runner is not None and peers is not None:
            await own_runner.setup()
            remove_socket(peers.own_socket)
            await web.UnixSite(own_runner, str(peers.own_socket)).start()
        # what startup built lives as long as the process: moved out of the collector's sight, a
        # full collection no longer walks its ~73,000 objects (11-55 ms with every request
        # waiting). Startup's own garbage is collected first, before anything is served, or it
        # would be kept for good.
        gc.collect()
        gc.freeze()
        host, port = config.server.listen_host_port()
        # simple GET/HEAD requests are answered by the fast path, everything else by aiohttp
        site = FastSite(
            runner,
            host,
            port,
            services=services,
            header_timeout=config.server.client_header_timeout,
            shutdown_timeout=timeout,
            ssl_context=_ssl_context(config),
            reuse_port=reuse_port,
            backlog=1024,
        )
        await _start_site(site, "server.listen", config.server.listen)
        admin_host, admin_port = config.server.admin_host_port()
        admin_site = web.TCPSite(admin_runner, admin_host, admin_port, reuse_port=reuse_port)
        await _start_site(admin_site, "server.admin_listen", config.server.admin_listen)
        LOG.info(
            "listening",
            extra={
                "fields": {
                    "listen": config.server.listen,
                    "admin_listen": config.server.admin_listen,
                    "worker": worker,
                    "pid": os.getpid(),
                }
            },
        )
        if on_started is not None:
            on_started()
        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        if stop_requested is not None and stop_requested():
            stop.set()  # a signal arrived while starting, before the handlers above existed
        await stop.wait()
        LOG.info(
            "shutting down: draining in-flight requests", extra={"fields": {"worker": worker, "timeout_s": timeout}}
        )
    finally:
        if own_runner is not None and peers is not None:
            remove_socket(peers.own_socket)  # first: the other workers stop asking
            await own_runner.cleanup()
        await runner.cleanup()
        await admin_runner.cleanup()
    LOG.info("stopped", extra={"fields": {"worker": worker}})


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (a faster event loop), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional speed-up
        asyncio.run(main)
        return
    uvloop.run(main)


def run_worker(
    config: Config,
    worker: int = 0,
    reuse_port: bool = False,
    stop_requested: Callable[[], bool] | None = None,
    peers_directory: Path | None = None,
) -> None:
    allocator.tune(os.environ)
    run_async(
        serve(
            config,
            worker=worker,
            reuse_port=reuse_port,
            stop_requested=stop_requested,
            peers_directory=peers_directory,
        )
    )
