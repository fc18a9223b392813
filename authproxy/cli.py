"""The commands of SPEC section 1: run, check, demo, gen-secret.

Exit codes: 0 ok, 2 configuration error (nothing served), 1 other failure. This is the only
module that configures logging.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from authproxy import __version__
from authproxy.config import Config, config_warnings, load_config, summarize
from authproxy.errors import ConfigError, ListenError
from authproxy.logs import LOG, configure_logging

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2


def _workers(value: str) -> int:
    if value == "auto":
        # the CPUs this process may run on (taskset, cgroup cpusets), not every CPU of the host
        return len(os.sched_getaffinity(0)) or 1
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number or 'auto'") from None
    if count < 1:
        raise argparse.ArgumentTypeError("at least 1 worker")
    return count


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError("a port is a number from 1 to 65535")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authproxy", description="OpenID Connect authentication reverse proxy.")
    parser.add_argument("--version", action="version", version=f"authproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c",
            "--config",
            default=os.environ.get("AUTHPROXY_CONFIG"),
            help="configuration file (default: $AUTHPROXY_CONFIG)",
        )

    def log_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
        p.add_argument("--log-format", default="json", choices=["json", "text"])

    run = commands.add_parser("run", help="serve")
    config_arg(run)
    run.add_argument("--workers", type=_workers, default=1, help="processes on the same port (N or auto)")
    log_args(run)

    check = commands.add_parser("check", help="validate a configuration without serving")
    config_arg(check)
    check.add_argument("--online", action="store_true", help="also fetch provider discovery and ping the store")
    check.add_argument("--workers", type=_workers, default=1, help="validate for this many workers")

    demo = commands.add_parser("demo", help="try it out: development provider + echo app + proxy")
    demo.add_argument("--port", type=_port, default=4180, help="the proxy's port (default 4180)")
    log_args(demo)
    demo.set_defaults(log_format="text")

    commands.add_parser("gen-secret", help="print a new random session secret")
    return parser


def _load(path: str | None, workers: int) -> Config:
    if not path:
        raise ConfigError(["(command line): no configuration file: give -c FILE or set AUTHPROXY_CONFIG"])
    config = load_config(path, workers=workers)
    from authproxy.factories import material_problems

    problems = material_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def _report_config_error(error: ConfigError) -> int:
    for problem in error.problems:
        print(problem, file=sys.stderr)
    return EXIT_CONFIG


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        config = _load(args.config, args.workers)
    except ConfigError as e:
        return _report_config_error(e)
    for warning in config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    if args.online:
        from authproxy.factories import read_private_key
        from authproxy.online import check_online

        private_key = read_private_key(config.provider) if config.provider else None
        failures = asyncio.run(check_online(config, private_key))
        for failure in failures:
            print(failure, file=sys.stderr)
        if failures:
            return EXIT_FAILURE
    print(summarize(config))
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    try:
        config = _load(args.config, args.workers)
    except ConfigError as e:
        return _report_config_error(e)
    for warning in config_warnings(config):
        LOG.warning(warning)
    from authproxy import server, workers

    try:
        if args.workers > 1:
            # one clear line for a port in use, before N workers each fail on it
            server.check_listeners(config)
            from authproxy.app import stop_bound

            stop_within = stop_bound(config)
            return workers.run_workers(Path(args.config), args.workers, args.log_level, args.log_format, stop_within)
        server.run_worker(config)
    except ListenError as e:
        LOG.error(str(e))
        return EXIT_FAILURE
    except ConfigError as e:
        # what only building the services finds (the checks above catch what they can)
        for problem in e.problems:
            LOG.error(problem)
        return EXIT_CONFIG
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    from authproxy.demo.run import run_demo

    return run_demo(port=args.port)


def _cmd_gen_secret(args: argparse.Namespace) -> int:
    print(base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode())
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"run": _cmd_run, "check": _cmd_check, "demo": _cmd_demo, "gen-secret": _cmd_gen_secret}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        return EXIT_OK
