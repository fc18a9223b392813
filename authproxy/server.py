"""Serving: listeners, worker processes, graceful shutdown (SPEC sections 1 and 6).

One worker runs both listeners in one event loop. ``--workers N`` starts N such processes that
bind the same ports with SO_REUSEPORT; the parent only supervises them and passes SIGTERM on.
On SIGTERM a worker stops accepting, lets in-flight requests finish (bounded by
``server.shutdown_timeout``), closes its clients and exits 0.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from authproxy.admin import create_admin_app
from authproxy.app import create_app, readiness
from authproxy.config import Config, load_config
from authproxy.fast_path import FastSite
from authproxy.logs import LOG, configure_logging
from authproxy.metrics import Metrics

_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    tls = config.server.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


async def serve(
    config: Config, *, worker: int = 0, reuse_port: bool = False, on_started: Callable[[], None] | None = None
) -> None:
    """Run both listeners until SIGTERM or SIGINT, then drain and return."""
    metrics = Metrics(worker=str(worker))
    app, services = create_app(config, metrics)
    admin = create_admin_app(metrics, lambda: readiness(services))
    timeout = config.server.shutdown_timeout
    # aiohttp's keep-alive timer runs from connection start (and after each response) until a
    # complete request head has arrived, and closes idle connections: with it set to the client
    # header timeout, a slowloris client that trickles header bytes is cut off.
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=timeout,
        handler_cancellation=True,
        keepalive_timeout=config.server.client_header_timeout,
    )
    admin_runner = web.AppRunner(admin, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await admin_runner.setup()
    try:
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
        await site.start()
        admin_host, admin_port = config.server.admin_host_port()
        await web.TCPSite(admin_runner, admin_host, admin_port, reuse_port=reuse_port).start()
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
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        LOG.info(
            "shutting down: draining in-flight requests", extra={"fields": {"worker": worker, "timeout_s": timeout}}
        )
    finally:
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


def run_worker(config: Config, worker: int = 0, reuse_port: bool = False) -> None:
    run_async(serve(config, worker=worker, reuse_port=reuse_port))


def _child(config_path: str, worker: int, log_level: str, log_format: str) -> None:
    configure_logging(log_level, log_format)
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    config = load_config(config_path)
    run_worker(config, worker=worker, reuse_port=True)


def run_workers(config_path: Path, workers: int, log_level: str, log_format: str) -> int:
    """Start ``workers`` processes on the same ports; return the exit code for the CLI."""
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_child, args=(str(config_path), i, log_level, log_format), name=f"authproxy-worker-{i}")
        for i in range(workers)
    ]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    for sig in _STOP_SIGNALS:
        signal.signal(sig, forward)
    for child in children:
        child.start()
    LOG.info("workers started", extra={"fields": {"workers": workers}})
    failed = False
    while any(child.is_alive() for child in children):
        for child in children:
            child.join(timeout=0.5)
            if not child.is_alive() and child.exitcode not in (0, None) and not stopping:
                LOG.error(
                    "worker exited unexpectedly; stopping the others",
                    extra={"fields": {"worker": child.name, "exitcode": child.exitcode}},
                )
                failed = True
                forward(signal.SIGTERM, None)
    return 1 if failed or any(c.exitcode != 0 for c in children) else 0
