"""The whole benchmark, in one run: start everything on 127.0.0.1, measure, report, end everything.

1. Start redis-server, the upstream nginx (small fixed body, a 100 MiB file, a request counter),
   nginx as a plain proxy, the development provider (127.0.0.2), Apache + mod_auth_openidc, and
   authproxy with the Redis store (1 worker; ``--workers auto``; 1 worker refreshing on every
   request).
2. Log in once through each authenticating proxy with a scripted browser; keep its cookie.
3. Throughput: every target at every connection count, ``rounds`` times, interleaved (the target
   order rotates each round), median of the rounds.
4. A 100 MiB download through each (MB/s, RSS of the process tree idle and at its peak).
5. Full logins per second (fresh browsers, concurrently) through each authenticating proxy,
   ``rounds`` times, interleaved.
6. The cost of a refresh: a 1-connection run against proxies that refresh on every request,
   ``rounds`` times, interleaved.
7. Optionally (``BENCH_PROFILE``) a py-spy profile of authproxy's worker under load.

Settings come from the environment: ``BENCH_QUICK=1`` (a ~2 minute smoke run, written to
``bench/out/results-quick.md``), ``BENCH_SECONDS`` (per point, default 5), ``BENCH_ROUNDS``
(default 3), ``BENCH_CONNECTIONS`` (default ``1,16,64,256``), ``BENCH_PROFILE`` (seconds of
profiling, 0/unset = off), ``BENCH_RESULTS`` (where to write the table).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from bench import report
from bench.configs import REFRESH_PREFIX, Client
from bench.machine import describe_machine, load_average
from bench.measure import (
    Bench,
    check_server,
    log_in,
    measure_download,
    measure_logins,
    measure_point,
    provider_refresh_grants,
    run_wrk,
)
from bench.processes import BENCH_NICE, Processes, current_pinning, raise_priority, rss_bytes
from bench.profile import aggregate, py_spy_path, render, start_py_spy
from bench.servers import (
    PROVIDER_HOST,
    REPO,
    Server,
    start_apache,
    start_authproxy,
    start_nginx_proxy,
    start_passthrough,
    start_provider,
    start_redis,
    start_upstream,
)
from bench.wrk import Point
from tests.support.net import free_port

OUT: Final = REPO / "bench" / "out"
RESULTS: Final = REPO / "bench" / "results.md"
BIG_FILE_SIZE: Final = 100 * 1024 * 1024
# Debian packages the benchmark runs, beyond `make system-deps` (redis-server, nginx)
APT_PACKAGES: Final = {
    "wrk": "wrk",
    "apache2": "apache2",
    "curl": "curl",
    "mod_auth_openidc": "libapache2-mod-auth-openidc",
}
LOGIN_CONCURRENCY: Final = 8


@dataclass(frozen=True)
class Settings:
    seconds: float
    rounds: int
    connections: tuple[int, ...]
    warmup_seconds: float
    download_repeats: int
    login_seconds: float
    refresh_seconds: float
    profile_seconds: float
    quick: bool
    results_path: Path
    command: str  # the command line that reproduces the run, its BENCH_* variables first


def command_line(env: Mapping[str, str]) -> str:
    """``bench/run.py`` as run, with the ``BENCH_*`` variables that were set (sorted, shell-quoted)."""
    variables = [f"{name}={shlex.quote(value)}" for name, value in sorted(env.items()) if name.startswith("BENCH_")]
    return " ".join([*variables, ".venv/bin/python bench/run.py"])


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The run's settings from ``BENCH_*`` variables (see the module docstring)."""
    quick = env.get("BENCH_QUICK", "") not in ("", "0")
    seconds = float(env.get("BENCH_SECONDS", "2" if quick else "5"))
    rounds = int(env.get("BENCH_ROUNDS", "1" if quick else "3"))
    connections = tuple(int(c) for c in env.get("BENCH_CONNECTIONS", "1,16,64,256").split(",") if c.strip())
    default_results = OUT / "results-quick.md" if quick else RESULTS
    return Settings(
        seconds=seconds,
        rounds=rounds,
        connections=connections,
        warmup_seconds=1.0 if quick else 2.0,
        download_repeats=1 if quick else 3,
        login_seconds=3.0 if quick else 10.0,
        refresh_seconds=2.0 if quick else seconds,
        profile_seconds=float(env.get("BENCH_PROFILE", "0") or 0),
        quick=quick,
        results_path=Path(env.get("BENCH_RESULTS", str(default_results))),
        command=command_line(env),
    )


def ensure_tools() -> None:
    """Install the Debian packages the benchmark needs when they are missing (root or sudo)."""
    present = {
        "wrk": shutil.which("wrk") is not None,
        "apache2": shutil.which("apache2") is not None or Path("/usr/sbin/apache2").exists(),
        "curl": shutil.which("curl") is not None,
        "mod_auth_openidc": Path("/usr/lib/apache2/modules/mod_auth_openidc.so").exists(),
    }
    missing = [APT_PACKAGES[tool] for tool, ok in present.items() if not ok]
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    print(f"bench: installing {' '.join(missing)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # fixed commands and Debian package names from APT_PACKAGES: no outside input
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"


def make_big_file(path: Path) -> None:
    if path.exists() and path.stat().st_size == BIG_FILE_SIZE:
        return
    chunk = secrets.token_bytes(1024 * 1024)  # incompressible, so no layer can cheat
    with path.open("wb") as out:
        for _ in range(BIG_FILE_SIZE // len(chunk)):
            out.write(chunk)


@dataclass
class Stack:
    """The running servers and the cookies that sign into them."""

    upstream: Server
    nginx: Server
    passthrough: Server
    oidc: Server
    authproxy: Server
    authproxy_auto: Server
    authproxy_refresh: Server
    provider_url: str
    cookies: dict[str, str] = field(default_factory=dict)

    def targets(self) -> list[Server]:
        return [self.upstream, self.nginx, self.passthrough, self.oidc, self.authproxy, self.authproxy_auto]


async def start_stack(processes: Processes, run_dir: Path) -> tuple[Stack, Bench]:
    big = OUT / "big.bin"
    make_big_file(big)
    _, redis_port = await start_redis(processes, run_dir / "redis")
    upstream, status_port = await start_upstream(processes, run_dir / "upstream", big)
    upstream_port = int(upstream.url.rsplit(":", 1)[1])
    nginx = await start_nginx_proxy(processes, run_dir / "nginx", upstream_port)
    passthrough = await start_passthrough(processes, run_dir / "passthrough", upstream_port)
    ports = {name: free_port() for name in ("oidc", "authproxy", "authproxy-auto", "authproxy-refresh")}
    clients = {
        "oidc": Client("bench-apache", secrets.token_urlsafe(24), f"http://127.0.0.1:{ports['oidc']}/redirect_uri"),
        **{
            name: Client(f"bench-{name}", secrets.token_urlsafe(24), f"http://127.0.0.1:{ports[name]}/oauth2/callback")
            for name in ("authproxy", "authproxy-auto", "authproxy-refresh")
        },
    }
    provider_port = free_port(PROVIDER_HOST)
    provider_url = f"http://{PROVIDER_HOST}:{provider_port}"
    await start_provider(processes, run_dir / "provider", provider_port, list(clients.values()))
    oidc = await start_apache(
        processes,
        run_dir / "apache",
        port=ports["oidc"],
        upstream_port=upstream_port,
        provider_url=provider_url,
        client=clients["oidc"],
        redis_port=redis_port,
    )
    proxies = {
        name: await start_authproxy(
            processes,
            run_dir / "authproxy",
            name=name,
            port=ports[name],
            upstream_port=upstream_port,
            provider_url=provider_url,
            client=clients[name],
            redis_port=redis_port,
            workers=workers,
            refresh_every_request=name == "authproxy-refresh",
        )
        for name, workers in (("authproxy", "1"), ("authproxy-auto", "auto"), ("authproxy-refresh", "1"))
    }
    stack = Stack(
        upstream=upstream,
        nginx=nginx,
        passthrough=passthrough,
        oidc=oidc,
        authproxy=proxies["authproxy"],
        authproxy_auto=proxies["authproxy-auto"],
        authproxy_refresh=proxies["authproxy-refresh"],
        provider_url=provider_url,
    )
    bench = Bench(processes, run_dir, f"http://127.0.0.1:{status_port}/")
    return stack, bench


async def sign_in(stack: Stack) -> None:
    for server in (stack.oidc, stack.authproxy, stack.authproxy_auto, stack.authproxy_refresh):
        stack.cookies[server.name] = await log_in(server)
        print(f"bench: signed in through {server.name} with a scripted browser", flush=True)
    await check_server(stack.upstream, None)
    await check_server(stack.nginx, None)
    await check_server(stack.passthrough, None)
    for server in (stack.oidc, stack.authproxy, stack.authproxy_auto):
        await check_server(server, stack.cookies[server.name])


async def throughput(stack: Stack, bench: Bench, settings: Settings) -> list[Point]:
    targets = stack.targets()
    for server in targets:
        await run_wrk(bench, server.url + "/", 64, settings.warmup_seconds, _headers(stack, server))
    points = []
    for round_index in range(settings.rounds):
        shift = round_index % len(targets)
        order = targets[shift:] + targets[:shift]
        for connections in settings.connections:
            for server in order:
                point = await measure_point(
                    bench, server, stack.cookies.get(server.name), connections, settings.seconds
                )
                points.append(point)
                print(
                    f"[round {round_index + 1}/{settings.rounds}] {connections:>3} conns {server.name:<17}"
                    f"{point.wrk.rps:>9,.0f} req/s  p50 {point.wrk.p50_ms:7.2f} ms  p99 {point.wrk.p99_ms:7.2f} ms"
                    f"  errors {point.errors}  cpu {point.cpu_us_per_request:5.0f} µs/req",
                    flush=True,
                )
    return points


def _headers(stack: Stack, server: Server) -> list[str]:
    cookie = stack.cookies.get(server.name)
    return [] if cookie is None else [f"Cookie: {server.cookie_name}={cookie}"]


async def downloads(stack: Stack, bench: Bench, settings: Settings) -> list[report.Download]:
    results = []
    for server in stack.targets():
        result = await measure_download(
            bench, server, stack.cookies.get(server.name), settings.download_repeats, BIG_FILE_SIZE
        )
        results.append(result)
        print(
            f"download {server.name:<17}{result.mb_per_s:>8,.0f} MB/s  RSS idle {result.rss_before / 2**20:.1f} MiB"
            f"  peak {result.rss_peak / 2**20:.1f} MiB  failures {result.failures}",
            flush=True,
        )
    return results


async def logins(stack: Stack, settings: Settings) -> list[report.Logins]:
    """Each authenticating proxy's logins in ``rounds`` interleaved rounds (order rotating), combined.

    A login's CPU is measured over seconds, and the machine's speed drifts by 10-25% within
    minutes: one window per target would compare one moment of the machine with another.
    """
    servers = [stack.oidc, stack.authproxy, stack.authproxy_auto]
    rounds: dict[str, list[report.Logins]] = {server.name: [] for server in servers}
    for round_index in range(settings.rounds):
        shift = round_index % len(servers)
        for server in servers[shift:] + servers[:shift]:
            result = await measure_logins(server, settings.login_seconds, LOGIN_CONCURRENCY)
            rounds[server.name].append(result)
            print(
                f"[round {round_index + 1}/{settings.rounds}] logins {server.name:<17}{result.per_second:>7.1f}/s"
                f"  completed {result.completed}  failed {result.failed}"
                f"  proxy CPU {result.cpu_ms_per_login:.2f} ms/login",
                flush=True,
            )
    return [report.combine_logins(rounds[server.name]) for server in servers]


async def refreshes(
    stack: Stack, bench: Bench, settings: Settings, summaries: Mapping[tuple[str, int], report.Summary]
) -> list[report.Refresh]:
    pairs = [(stack.oidc, REFRESH_PREFIX, report.OIDC), (stack.authproxy_refresh, "/", report.AUTHPROXY)]
    rounds: dict[str, list[report.Refresh]] = {target: [] for _, _, target in pairs}
    # interleaved rounds, as for throughput and logins (the order flips each round)
    for round_index in range(settings.rounds):
        for server, path, plain_target in pairs if round_index % 2 == 0 else pairs[::-1]:
            before = await provider_refresh_grants(stack.provider_url)
            point = await measure_point(bench, server, stack.cookies[server.name], 1, settings.refresh_seconds, path)
            grants = await provider_refresh_grants(stack.provider_url) - before
            plain = summaries.get((plain_target, 1))
            rounds[plain_target].append(
                report.Refresh(
                    target=plain_target,
                    requests=point.wrk.requests,
                    refresh_grants=grants,
                    p50_ms=point.wrk.p50_ms,
                    p99_ms=point.wrk.p99_ms,
                    errors=point.errors,
                    plain_p50_ms=plain.p50_ms if plain else 0.0,
                    cpu_us=point.cpu_us_per_request,
                    plain_cpu_us=plain.cpu_us if plain else 0.0,
                )
            )
            print(
                f"[round {round_index + 1}/{settings.rounds}] refresh {server.name:<17} {point.wrk.requests} requests,"
                f" {grants} refresh grants, p50 {point.wrk.p50_ms:.2f} ms, errors {point.errors}",
                flush=True,
            )
    return [report.combine_refreshes(rounds[target]) for _, _, target in pairs]


async def profile(stack: Stack, bench: Bench, seconds: float) -> str:
    """py-spy on the 1-worker authproxy while wrk drives it at 64 connections."""
    py_spy = py_spy_path()
    if py_spy is None:
        return "py-spy is not installed (`.venv/bin/pip install py-spy`); no profile taken.\n"
    raw_path = bench.run_dir / "profile.raw"
    server = stack.authproxy
    spy = await start_py_spy(py_spy, server.started.pid, seconds, raw_path)
    await asyncio.sleep(0.5)
    point = await measure_point(bench, server, stack.cookies[server.name], 64, seconds - 1)
    await spy.wait()
    raw = _read_if_present(raw_path)
    if raw is None:
        return "py-spy could not attach (it needs ptrace permission); no profile taken.\n"
    return render(aggregate(raw), point.cpu_us_per_request)


def _read_if_present(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def compose(
    settings: Settings,
    machine: list[str],
    summaries: Mapping[tuple[str, int], report.Summary],
    checks: list[report.Check],
    download_results: list[report.Download],
    login_results: list[report.Logins],
    refresh_results: list[report.Refresh],
    profile_text: str | None,
    elapsed: float,
) -> str:
    targets = [report.UPSTREAM, report.NGINX, report.PASSTHROUGH, report.OIDC, report.AUTHPROXY, report.AUTHPROXY_AUTO]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    passed = sum(check.passed for check in checks)
    parts = [
        "# authproxy benchmark results",
        "",
        f"Written by `make bench` (`bench/run.py`) on {stamp}, in {elapsed / 60:.1f} minutes. "
        f"{settings.seconds:g} s per point, median of {settings.rounds} interleaved rounds"
        f"{' (BENCH_QUICK smoke run: not for conclusions)' if settings.quick else ''}"
        f"{f', then a {settings.profile_seconds:g} s py-spy profile' if settings.profile_seconds else ''}. "
        "See `docs/performance.md` for the method and how to read this.",
        "",
        f"Command: `{settings.command}` (`make bench` runs it without variables, then the soak).",
        "",
        "## Machine",
        "",
        *machine,
        "",
        f"## Targets from the issues: {passed} of {len(checks)} met",
        "",
        report.checks_list(checks),
        "",
        "## Throughput: small body, signed-in session cookie (wrk, keep-alive)",
        "",
        "CPU µs/req is the target's own process tree (not the upstream's, not Redis's). "
        "Errors: HTTP status >= 400, socket errors and timeouts (wrk's 2 s), and requests the "
        "upstream never saw, over all rounds.",
        "",
        report.throughput_table(summaries, targets, settings.connections),
        "",
        report.ratio_table(summaries, settings.connections),
        "",
        "## 100 MiB download (curl, one at a time)",
        "",
        report.download_table(download_results),
        "",
        f"## Full logins (fresh scripted browsers, {LOGIN_CONCURRENCY} at a time)",
        "",
        "Each login: protected URL -> 302 to the provider -> login page -> form POST -> callback "
        "(code exchange, ID token validation) -> session cookie -> the upstream's page. The provider and "
        "the login driver (Python) share the load CPU, so logins/s is bounded by them; proxy CPU "
        "ms/login is the proxy's own cost.",
        "",
        report.logins_table(login_results),
        "",
        "## The cost of a refresh (1 connection, every request refreshes)",
        "",
        "Proxies configured to refresh whenever the access token expires within 2 h (it lives 1 h), so "
        "each request spends the refresh token at the provider before forwarding; the provider's "
        "own time (RSA signing of two tokens) is included.",
        "",
        report.refresh_table(refresh_results),
        "",
    ]
    if profile_text is not None:
        parts += ["## Profile: authproxy, 1 worker, 64 connections (py-spy)", "", profile_text]
    return "\n".join(parts)


async def run(settings: Settings) -> int:
    started_at = time.monotonic()
    ensure_tools()
    run_dir = OUT / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    pinning = current_pinning()
    if pinning.pinned:
        os.sched_setaffinity(0, pinning.load)
    print(f"bench: {pinning.describe()}", flush=True)
    boosted = raise_priority()
    machine = describe_machine(REPO, pinning)
    machine.append(
        f"- Priority: every benchmark process at nice {BENCH_NICE}, so background jobs take less from the measurement"
        if boosted
        else "- Priority: normal (not root: could not raise the benchmark's priority)"
    )
    processes = Processes(pinning)
    # SIGTERM (and Ctrl-C, which asyncio.run already handles) cancel the run: the finally below
    # still ends every process, and atexit is the last resort
    main_task = asyncio.current_task()
    if main_task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    atexit.register(processes.stop_all)
    try:
        stack, bench = await start_stack(processes, run_dir)
        await sign_in(stack)
        points = await throughput(stack, bench, settings)
        summaries = report.summarize(points)
        download_results = await downloads(stack, bench, settings)
        login_results = await logins(stack, settings)
        refresh_results = await refreshes(stack, bench, settings, summaries)
        profile_text = await profile(stack, bench, settings.profile_seconds) if settings.profile_seconds else None
        idle_rss = {server.name: rss_bytes(server.started.tree()) for server in stack.targets()}
    finally:
        processes.stop_all()
    checks = report.check_targets(summaries, settings.connections, download_results, login_results, refresh_results)
    machine.append(f"- Load average when the run ended: {load_average()}")
    machine.append(
        "- RSS after the run (process trees): "
        + ", ".join(f"{name} {value / 2**20:.0f} MiB" for name, value in idle_rss.items())
    )
    text = compose(
        settings,
        machine,
        summaries,
        checks,
        download_results,
        login_results,
        refresh_results,
        profile_text,
        time.monotonic() - started_at,
    )
    settings.results_path.parent.mkdir(parents=True, exist_ok=True)
    settings.results_path.write_text(text)
    print("\n" + text, flush=True)
    print(f"bench: written to {settings.results_path}", flush=True)
    return 0


def main() -> int:
    settings = settings_from_env(os.environ)
    return asyncio.run(run(settings))
