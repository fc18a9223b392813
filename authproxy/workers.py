"""``authproxy run --workers N``: a parent that supervises N worker processes on the same ports.

The parent serves nothing. It starts each worker as ``python -m authproxy.workers`` (a plain
subprocess: no multiprocessing helper process that could outlive it), and then:

- on SIGTERM or SIGINT it starts no further worker, sends SIGTERM to every worker, and waits for
  all of them; a worker still running ``stop_within`` (``app.stop_bound``: the drain's
  ``server.shutdown_timeout``, then a token refresh let finish) + ``KILL_GRACE`` seconds later
  is killed (SIGKILL) and counts as failed. Every worker is reaped before the parent exits;
- when a worker exits on its own (a crash, a bind failure) it stops the others the same way;
- it exits 0 only when every worker stopped cleanly (exit 0, or ended by the SIGTERM the parent
  sent before the worker could install its handler), else 1.

A worker asks the kernel for SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``), so even a
parent killed with SIGKILL leaves no worker behind: each drains and exits by itself.
"""

from __future__ import annotations

import signal

# first, before the slower imports below: a SIGTERM that reaches a starting worker is remembered
# and honoured once the listeners exist, instead of killing the process half-started
_stop_signal: int | None = None


def _remember_stop(signum: int, _frame: object) -> None:
    global _stop_signal
    _stop_signal = signum


if __name__ == "__main__":
    for _sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(_sig, _remember_stop)

import argparse  # noqa: E402 - after the signal handlers on purpose
import ctypes  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Final  # noqa: E402

from authproxy.logs import LOG, configure_logging  # noqa: E402

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
# beyond the bound a worker keeps itself (app.stop_bound): closing clients, flushing logs
KILL_GRACE: Final = 5.0
POLL_INTERVAL: Final = 0.1
_PR_SET_PDEATHSIG: Final = 1


def worker_command(
    config_path: Path, index: int, log_level: str, log_format: str, peers_directory: Path | None = None
) -> list[str]:
    """The command line of worker ``index``."""
    peers = [] if peers_directory is None else ["--peers", str(peers_directory)]
    return [
        sys.executable,
        "-m",
        "authproxy.workers",
        "--config",
        str(config_path),
        "--index",
        str(index),
        "--parent",
        str(os.getpid()),
        "--log-level",
        log_level,
        "--log-format",
        log_format,
        *peers,
    ]


def clean_exit(returncode: int, *, stop_sent: bool) -> bool:
    """Whether a worker's exit status is a clean stop.

    0 always is. Death by SIGTERM is clean only once the parent has sent one: a worker that was
    still starting had no handler yet and simply did what it was asked.
    """
    return returncode == 0 or (stop_sent and returncode == -signal.SIGTERM)


class Supervisor:
    """Starts the workers, forwards stop signals, reaps every worker within a bound."""

    def __init__(self, commands: Sequence[list[str]], stop_within: float) -> None:
        self._commands = list(commands)
        self._stop_within = stop_within
        self._processes: list[subprocess.Popen[bytes]] = []
        self._stop_signal: int | None = None
        self._stop_sent = False
        self._deadline: float | None = None
        self.failed = False

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stop_signal = signum

    def run(self) -> int:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        for index, command in enumerate(self._commands):
            if self._stop_signal is not None:
                break  # told to stop while starting: the rest never start
            self._processes.append(subprocess.Popen(command))  # noqa: S603 - our own interpreter and module
            LOG.info("worker started", extra={"fields": {"worker": index, "pid": self._processes[-1].pid}})
        reported: set[int] = set()
        while True:
            if self._stop_signal is not None and not self._stop_sent:
                self._stop_all("stop signal received", self._stop_signal)
            for index, process in enumerate(self._processes):
                code = process.poll()
                if code is None or index in reported:
                    continue
                reported.add(index)
                self._on_exit(index, process, code)
            if len(reported) == len(self._processes):
                break
            if self._deadline is not None and time.monotonic() > self._deadline:
                self._kill_remaining()
            time.sleep(POLL_INTERVAL)
        return 1 if self.failed else 0

    def _on_exit(self, index: int, process: subprocess.Popen[bytes], code: int) -> None:
        fields = {"worker": index, "pid": process.pid, "exitcode": code}
        if clean_exit(code, stop_sent=self._stop_sent):
            LOG.info("worker stopped", extra={"fields": fields})
            return
        self.failed = True
        if self._stop_sent:
            LOG.error("worker failed while stopping", extra={"fields": fields})
        else:
            LOG.error("worker exited unexpectedly; stopping the others", extra={"fields": fields})
            self._stop_all("a worker exited", None)

    def _stop_all(self, reason: str, signum: int | None) -> None:
        self._stop_sent = True
        self._deadline = time.monotonic() + self._stop_within + KILL_GRACE
        LOG.info(
            "stopping workers",
            extra={"fields": {"reason": reason, "signal": signum, "timeout_s": self._stop_within + KILL_GRACE}},
        )
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    def _kill_remaining(self) -> None:
        for index, process in enumerate(self._processes):
            if process.poll() is None:
                LOG.error(
                    "worker did not stop in time; killing it",
                    extra={"fields": {"worker": index, "pid": process.pid}},
                )
                process.kill()
                self.failed = True
        self._deadline = None  # killed: the next polls reap them


def run_workers(config_path: Path, workers: int, log_level: str, log_format: str, stop_within: float) -> int:
    """Supervise ``workers`` processes serving ``config_path``; the exit code for the CLI."""
    # where the workers serve each other their metrics (authproxy.metrics_peers): this user's alone
    peers_directory = Path(tempfile.mkdtemp(prefix="authproxy-workers-"))
    try:
        commands = [worker_command(config_path, i, log_level, log_format, peers_directory) for i in range(workers)]
        LOG.info("starting workers", extra={"fields": {"workers": workers}})
        return Supervisor(commands, stop_within).run()
    finally:
        shutil.rmtree(peers_directory, ignore_errors=True)


# ---------------------------------------------------------------- the worker side


def _stop_with_parent(parent_pid: int) -> None:
    """Ask for SIGTERM when the parent dies; if it is already gone, stop at once."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:
        # the parent died before the request above: nobody would ever tell this worker to stop
        _remember_stop(signal.SIGTERM, None)


def _worker_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="authproxy.workers")
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="json")
    parser.add_argument("--peers", type=Path, default=None)
    args = parser.parse_args(argv)
    _stop_with_parent(args.parent)
    configure_logging(args.log_level, args.log_format)

    from authproxy.config import load_config
    from authproxy.errors import ConfigError, ListenError
    from authproxy.server import run_worker

    try:
        # the parent validated this file a moment ago; a change since then is reported the same
        # way as what only building the services finds
        config = load_config(args.config)
        if _stop_signal is not None:
            return 0  # told to stop before serving anything
        run_worker(
            config,
            worker=args.index,
            reuse_port=True,
            stop_requested=lambda: _stop_signal is not None,
            peers_directory=args.peers,
        )
    except ListenError as e:
        LOG.error(str(e), extra={"fields": {"worker": args.index}})
        return 1
    except ConfigError as e:
        for problem in e.problems:
            LOG.error(problem, extra={"fields": {"worker": args.index}})
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
