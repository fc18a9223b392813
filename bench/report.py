"""Turning measurements into the results table and the verdict on the targets (pure).

Each point is measured ``rounds`` times, interleaved with the other targets; the table shows the
median of the rounds (req/s, p50, p99, CPU per request), the spread of req/s, and the errors of
all rounds added up (a single error anywhere counts).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from bench.wrk import Point

UPSTREAM: Final = "upstream"
NGINX: Final = "nginx"
PASSTHROUGH: Final = "passthrough"
OIDC: Final = "mod_auth_openidc"
AUTHPROXY: Final = "authproxy"
AUTHPROXY_AUTO: Final = "authproxy-auto"
TARGET_LABELS: Final = {
    UPSTREAM: "upstream direct (nginx)",
    NGINX: "nginx plain proxy",
    PASSTHROUGH: "aiohttp pass-through (no auth)",
    OIDC: "Apache + mod_auth_openidc",
    AUTHPROXY: "authproxy, 1 worker",
    AUTHPROXY_AUTO: "authproxy, --workers auto",
}
# what the issue asks of authproxy
MIN_VS_OIDC: Final = 2.0
MIN_VS_NGINX: Final = 0.35
NGINX_RATIO_CONNECTIONS: Final = (16, 64)
ZERO_ERRORS_AT: Final = 256
# no request slower than this at ZERO_ERRORS_AT connections, one worker (no starved connection)
MAX_LATENCY_MS: Final = 1000.0
MAX_CPU_US_PER_REQUEST: Final = 100.0
MAX_CPU_MS_PER_LOGIN: Final = 1.5
MIN_DOWNLOAD_VS_NGINX: Final = 0.5
# "flat" memory while 100 MiB stream through: the peak may rise by less than this
FLAT_RSS_GROWTH: Final = 16 * 1024 * 1024


@dataclass(frozen=True)
class Summary:
    target: str
    connections: int
    rps: float
    rps_min: float
    rps_max: float
    p50_ms: float
    p99_ms: float
    max_ms: float  # the slowest request of any round
    errors: int
    timeouts: int
    cpu_us: float
    background_cores: float
    rounds: int


@dataclass(frozen=True)
class Download:
    target: str
    mb_per_s: float  # 10^6 bytes per second, median of the repeats
    rss_before: int
    rss_peak: int
    failures: int

    @property
    def growth(self) -> int:
        return max(0, self.rss_peak - self.rss_before)


@dataclass(frozen=True)
class Logins:
    target: str
    completed: int
    failed: int
    seconds: float
    concurrency: int
    p50_ms: float
    proxy_cpu_s: float
    # each round's proxy CPU ms per login, when several rounds were combined
    rounds_cpu_ms: tuple[float, ...] = ()

    @property
    def per_second(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_per_login(self) -> float:
        return self.proxy_cpu_s / self.completed * 1000 if self.completed else 0.0


def combine_logins(rounds: Sequence[Logins]) -> Logins:
    """One target's login rounds as one: logins, failures, time and CPU added up, the median p50."""
    first = rounds[0]
    return Logins(
        target=first.target,
        completed=sum(item.completed for item in rounds),
        failed=sum(item.failed for item in rounds),
        seconds=sum(item.seconds for item in rounds),
        concurrency=first.concurrency,
        p50_ms=statistics.median(item.p50_ms for item in rounds),
        proxy_cpu_s=sum(item.proxy_cpu_s for item in rounds),
        rounds_cpu_ms=tuple(item.cpu_ms_per_login for item in rounds),
    )


@dataclass(frozen=True)
class Refresh:
    target: str
    requests: int
    refresh_grants: int
    p50_ms: float
    p99_ms: float
    errors: int
    plain_p50_ms: float
    cpu_us: float
    plain_cpu_us: float
    # the rounds' own costs, once rounds are combined
    round_costs_ms: tuple[float, ...] = ()

    @property
    def cost_ms(self) -> float:
        """p50 with a refresh less p50 without; over combined rounds, the median of each round's own."""
        if self.round_costs_ms:
            return statistics.median(self.round_costs_ms)
        return self.p50_ms - self.plain_p50_ms


def combine_refreshes(rounds: Sequence[Refresh]) -> Refresh:
    """One target's refresh rounds as one: counts added up, latencies and CPU the medians of the rounds
    (the plain figures too, when each round measured its own), the cost the median of the rounds'
    costs, so that a round's refreshing run is set against its own plain run."""
    first = rounds[0]
    return Refresh(
        target=first.target,
        requests=sum(item.requests for item in rounds),
        refresh_grants=sum(item.refresh_grants for item in rounds),
        p50_ms=statistics.median(item.p50_ms for item in rounds),
        p99_ms=statistics.median(item.p99_ms for item in rounds),
        errors=sum(item.errors for item in rounds),
        plain_p50_ms=statistics.median(item.plain_p50_ms for item in rounds),
        cpu_us=statistics.median(item.cpu_us for item in rounds),
        plain_cpu_us=statistics.median(item.plain_cpu_us for item in rounds),
        round_costs_ms=tuple(item.cost_ms for item in rounds),
    )


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def refresh_checks(refreshes: Sequence[Refresh]) -> list[Check]:
    """The refresh target: authproxy's cost of a refresh (p50 with less p50 without) <= mod_auth_openidc's,
    counted only when the provider saw a refresh grant for every request of both runs."""
    by_target = {item.target: item for item in refreshes}
    ap, oidc = by_target.get(AUTHPROXY), by_target.get(OIDC)
    if ap is None or oidc is None:
        return []
    every = ap.refresh_grants >= ap.requests and oidc.refresh_grants >= oidc.requests
    return [
        Check(
            "authproxy's cost of a refresh <= mod_auth_openidc's",
            every and ap.cost_ms <= oidc.cost_ms,
            f"{ap.cost_ms:+.2f} ms vs {oidc.cost_ms:+.2f} ms"
            + ("" if every else "; some requests did not refresh, so the figures do not count"),
        )
    ]


def summarize(points: Iterable[Point]) -> dict[tuple[str, int], Summary]:
    grouped: dict[tuple[str, int], list[Point]] = {}
    for point in points:
        grouped.setdefault((point.target, point.connections), []).append(point)
    summaries = {}
    for (target, connections), runs in grouped.items():
        rates = [run.wrk.rps for run in runs]
        summaries[(target, connections)] = Summary(
            target=target,
            connections=connections,
            rps=statistics.median(rates),
            rps_min=min(rates),
            rps_max=max(rates),
            p50_ms=statistics.median(run.wrk.p50_ms for run in runs),
            p99_ms=statistics.median(run.wrk.p99_ms for run in runs),
            max_ms=max(run.wrk.max_ms for run in runs),
            errors=sum(run.errors for run in runs),
            timeouts=sum(run.wrk.timeouts for run in runs),
            cpu_us=statistics.median(run.cpu_us_per_request for run in runs),
            background_cores=statistics.median(run.background_cores for run in runs),
            rounds=len(runs),
        )
    return summaries


def ratio(summaries: Mapping[tuple[str, int], Summary], target: str, base: str, connections: int) -> float | None:
    top, bottom = summaries.get((target, connections)), summaries.get((base, connections))
    if top is None or bottom is None or bottom.rps <= 0:
        return None
    return top.rps / bottom.rps


def check_targets(
    summaries: Mapping[tuple[str, int], Summary],
    connections: Sequence[int],
    downloads: Sequence[Download],
    logins: Sequence[Logins] = (),
    refreshes: Sequence[Refresh] = (),
) -> list[Check]:
    """The issues' acceptance figures, each with the numbers behind its verdict.

    authproxy here is the configuration a new user gets (the README's: session cache on by
    default) with the Redis store, one worker.
    """
    checks: list[Check] = []
    for c in connections:
        ap, oidc = summaries.get((AUTHPROXY, c)), summaries.get((OIDC, c))
        if ap is None or oidc is None:
            continue
        r = ap.rps / oidc.rps if oidc.rps else float("inf")
        checks.append(
            Check(f"authproxy >= {MIN_VS_OIDC:g}x mod_auth_openidc req/s at {c}", r >= MIN_VS_OIDC, f"{r:.2f}x")
        )
        checks.append(
            Check(
                f"authproxy p99 <= mod_auth_openidc p99 at {c}",
                ap.p99_ms <= oidc.p99_ms,
                f"{ap.p99_ms:.2f} ms vs {oidc.p99_ms:.2f} ms",
            )
        )
    for c in connections:
        ap = summaries.get((AUTHPROXY, c))
        if ap is not None:
            checks.append(
                Check(
                    f"authproxy CPU per authenticated request <= {MAX_CPU_US_PER_REQUEST:g} µs at {c}",
                    ap.cpu_us <= MAX_CPU_US_PER_REQUEST,
                    f"{ap.cpu_us:.0f} µs",
                )
            )
    ap_max = summaries.get((AUTHPROXY, ZERO_ERRORS_AT))
    if ap_max is not None:
        checks.append(
            Check(
                f"authproxy, 1 worker: no request slower than {MAX_LATENCY_MS / 1000:g} s"
                f" at {ZERO_ERRORS_AT} connections",
                ap_max.max_ms < MAX_LATENCY_MS and ap_max.timeouts == 0,
                f"slowest {ap_max.max_ms:.0f} ms over {ap_max.rounds} runs, {ap_max.timeouts} timeouts",
            )
        )
    checks.extend(refresh_checks(refreshes))
    for login in logins:
        if login.target == AUTHPROXY:
            checks.append(
                Check(
                    f"authproxy, 1 worker: proxy CPU per full login <= {MAX_CPU_MS_PER_LOGIN:g} ms",
                    login.completed > 0 and login.cpu_ms_per_login <= MAX_CPU_MS_PER_LOGIN,
                    f"{login.cpu_ms_per_login:.2f} ms",
                )
            )
    for c in NGINX_RATIO_CONNECTIONS:
        r_or_none = ratio(summaries, AUTHPROXY, NGINX, c)
        if r_or_none is not None:
            checks.append(
                Check(
                    f"authproxy (1 worker) >= {MIN_VS_NGINX:g}x nginx proxy at {c}",
                    r_or_none >= MIN_VS_NGINX,
                    f"{r_or_none:.2f}x",
                )
            )
    for c in connections:
        r_or_none = ratio(summaries, AUTHPROXY_AUTO, AUTHPROXY, c)
        if r_or_none is not None:
            checks.append(Check(f"--workers auto faster than 1 worker at {c}", r_or_none > 1.0, f"{r_or_none:.2f}x"))
    for target in (AUTHPROXY, AUTHPROXY_AUTO):
        at_max = summaries.get((target, ZERO_ERRORS_AT))
        if at_max is not None:
            checks.append(
                Check(
                    f"{TARGET_LABELS[target]}: zero errors at {ZERO_ERRORS_AT} connections",
                    at_max.errors == 0,
                    f"{at_max.errors} errors over {at_max.rounds} runs, of which {at_max.timeouts} "
                    "took longer than wrk's 2 s timeout",
                )
            )
    by_target = {download.target: download for download in downloads}
    nginx = by_target.get(NGINX)
    for target in (AUTHPROXY, AUTHPROXY_AUTO):
        download = by_target.get(target)
        if download is None or nginx is None:
            continue
        r = download.mb_per_s / nginx.mb_per_s if nginx.mb_per_s else 0.0
        checks.append(
            Check(
                f"{TARGET_LABELS[target]}: 100 MiB download >= {MIN_DOWNLOAD_VS_NGINX:g}x nginx MB/s",
                r >= MIN_DOWNLOAD_VS_NGINX and download.failures == 0,
                f"{download.mb_per_s:.0f} vs {nginx.mb_per_s:.0f} MB/s = {r:.2f}x",
            )
        )
        checks.append(
            Check(
                f"{TARGET_LABELS[target]}: flat RSS during the download",
                download.growth < FLAT_RSS_GROWTH,
                f"peak {_mib(download.rss_peak)} MiB, +{_mib(download.growth)} MiB over idle",
            )
        )
    return checks


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _mib(value: int) -> str:
    return f"{value / 1024 / 1024:.1f}"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _errors(summary: Summary) -> str:
    if summary.timeouts and summary.timeouts == summary.errors:
        return f"{summary.errors} (all timeouts)"
    if summary.timeouts:
        return f"{summary.errors} ({summary.timeouts} timeouts)"
    return str(summary.errors)


def throughput_table(
    summaries: Mapping[tuple[str, int], Summary], targets: Sequence[str], connections: Sequence[int]
) -> str:
    rows = []
    for c in connections:
        for target in targets:
            s = summaries.get((target, c))
            if s is None:
                continue
            rows.append(
                [
                    str(c),
                    TARGET_LABELS.get(target, target),
                    f"{s.rps:,.0f}",
                    f"{s.rps_min:,.0f}-{s.rps_max:,.0f}",
                    f"{s.p50_ms:.2f}",
                    f"{s.p99_ms:.2f}",
                    f"{s.max_ms:,.0f}",
                    _errors(s),
                    f"{s.cpu_us:.0f}",
                    f"{s.background_cores:.2f}",
                    _x(ratio(summaries, target, OIDC, c)) if target in (AUTHPROXY, AUTHPROXY_AUTO) else "",
                    _x(ratio(summaries, target, NGINX, c)) if target in (AUTHPROXY, AUTHPROXY_AUTO) else "",
                ]
            )
    header = [
        "conns",
        "target",
        "req/s",
        "req/s range",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "CPU µs/req",
        "other load (cores)",
        "vs mod_auth_openidc",
        "vs nginx",
    ]
    return _table(header, rows)


def ratio_table(summaries: Mapping[tuple[str, int], Summary], connections: Sequence[int]) -> str:
    rows = [
        [
            str(c),
            _x(ratio(summaries, AUTHPROXY, OIDC, c)),
            _x(ratio(summaries, AUTHPROXY, NGINX, c)),
            _x(ratio(summaries, AUTHPROXY_AUTO, OIDC, c)),
            _x(ratio(summaries, AUTHPROXY_AUTO, NGINX, c)),
        ]
        for c in connections
    ]
    header = ["conns", "authproxy / mod_auth_openidc", "authproxy / nginx", "auto / mod_auth_openidc", "auto / nginx"]
    return _table(header, rows)


def download_table(downloads: Sequence[Download]) -> str:
    rows = [
        [
            TARGET_LABELS.get(d.target, d.target),
            f"{d.mb_per_s:,.0f}",
            _mib(d.rss_before),
            _mib(d.rss_peak),
            f"+{_mib(d.growth)}",
            str(d.failures),
        ]
        for d in downloads
    ]
    return _table(["target", "MB/s", "idle RSS MiB", "peak RSS MiB", "growth MiB", "failures"], rows)


def logins_table(logins: Sequence[Logins]) -> str:
    rows = [
        [
            TARGET_LABELS.get(item.target, item.target),
            f"{item.per_second:.1f}",
            str(item.completed),
            str(item.failed),
            str(item.concurrency),
            f"{item.p50_ms:.1f}",
            f"{item.cpu_ms_per_login:.2f}",
            f"{min(item.rounds_cpu_ms):.2f}-{max(item.rounds_cpu_ms):.2f}" if item.rounds_cpu_ms else "",
        ]
        for item in logins
    ]
    header = [
        "target",
        "logins/s",
        "completed",
        "failed",
        "browsers",
        "p50 ms per login",
        "proxy CPU ms/login",
        "per round",
    ]
    return _table(header, rows)


def refresh_table(refreshes: Sequence[Refresh]) -> str:
    rows = [
        [
            TARGET_LABELS.get(item.target, item.target),
            str(item.requests),
            str(item.refresh_grants),
            f"{item.p50_ms:.2f}",
            f"{item.p99_ms:.2f}",
            f"{item.plain_p50_ms:.2f}",
            f"{item.cost_ms:+.2f}",
            f"{item.cpu_us:.0f} vs {item.plain_cpu_us:.0f}",
            str(item.errors),
        ]
        for item in refreshes
    ]
    header = [
        "target",
        "requests",
        "refresh grants seen by the provider",
        "p50 ms",
        "p99 ms",
        "plain p50 ms",
        "cost of a refresh (p50)",
        "proxy CPU µs/req (refresh vs plain)",
        "errors",
    ]
    return _table(header, rows)


def checks_list(checks: Sequence[Check]) -> str:
    return "\n".join(f"- {'PASS' if c.passed else 'FAIL'}: {c.name} ({c.detail})" for c in checks)
