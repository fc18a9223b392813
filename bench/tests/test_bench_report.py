"""The results table and the verdict on the issue's targets (bench/report.py)."""

from __future__ import annotations

import pytest

from bench import report
from bench.report import Check, Download, Summary, check_targets, summarize
from bench.wrk import Point, WrkResult


def _point(
    target: str, connections: int, rps: float, p99: float = 10.0, timeouts: int = 0, slowest: float | None = None
) -> Point:
    wrk = WrkResult(int(rps * 5), 5.0, p99 / 2, p99, slowest or p99 * 2, 0, timeouts, timeouts)
    # CPU: 0.4 s over rps * 5 requests
    return Point(target, connections, wrk, int(rps * 5) + connections, 0.4)


def test_summary_takes_medians_and_adds_errors_up() -> None:
    points = [_point("a", 16, rate, timeouts=t) for rate, t in ((100, 0), (300, 2), (200, 1))]
    summary = summarize(points)[("a", 16)]
    assert (summary.rps, summary.rps_min, summary.rps_max) == (200, 100, 300)
    assert summary.errors == 3 and summary.timeouts == 3 and summary.rounds == 3


def _summaries(ap: float, oidc: float, nginx: float, ap_p99: float, oidc_p99: float) -> dict[tuple[str, int], Summary]:
    points = []
    for c in (16, 64):
        points += [
            _point(report.AUTHPROXY, c, ap, ap_p99),
            _point(report.OIDC, c, oidc, oidc_p99),
            _point(report.NGINX, c, nginx),
        ]
    return summarize(points)


def _verdicts(checks: list[Check]) -> dict[str, bool]:
    return {check.name: check.passed for check in checks}


@pytest.mark.parametrize(
    ("ap", "oidc", "nginx", "ap_p99", "oidc_p99", "expected"),
    [
        (3000, 1500, 8000, 5, 9, {"x2": True, "p99": True, "nginx": True}),
        (2999, 1500, 8000, 5, 9, {"x2": False, "p99": True, "nginx": True}),
        (3000, 1500, 8000, 9, 9, {"x2": True, "p99": True, "nginx": True}),
        (3000, 1500, 8000, 10, 9, {"x2": True, "p99": False, "nginx": True}),
        (3000, 1500, 9000, 5, 9, {"x2": True, "p99": True, "nginx": False}),
    ],
    ids=["all-met", "just-under-2x", "equal-p99-is-enough", "higher-p99", "under-0.35x-nginx"],
)
def test_check_targets(
    ap: float, oidc: float, nginx: float, ap_p99: float, oidc_p99: float, expected: dict[str, bool]
) -> None:
    verdicts = _verdicts(check_targets(_summaries(ap, oidc, nginx, ap_p99, oidc_p99), (16, 64), []))
    assert verdicts["authproxy >= 2x mod_auth_openidc req/s at 16"] is expected["x2"]
    assert verdicts["authproxy p99 <= mod_auth_openidc p99 at 64"] is expected["p99"]
    assert verdicts["authproxy (1 worker) >= 0.35x nginx proxy at 64"] is expected["nginx"]


@pytest.mark.parametrize(
    ("download", "fast", "flat"),
    [
        (Download(report.AUTHPROXY, 500.0, 70 << 20, 72 << 20, 0), True, True),
        (Download(report.AUTHPROXY, 499.0, 70 << 20, 72 << 20, 0), False, True),
        (Download(report.AUTHPROXY, 900.0, 70 << 20, 170 << 20, 0), True, False),
        (Download(report.AUTHPROXY, 900.0, 70 << 20, 72 << 20, 1), False, True),
    ],
    ids=["half-of-nginx-and-flat", "under-half", "memory-grew-with-the-body", "a-failed-download"],
)
def test_download_checks(download: Download, fast: bool, flat: bool) -> None:
    checks = _verdicts(check_targets({}, (), [Download(report.NGINX, 1000.0, 10 << 20, 11 << 20, 0), download]))
    assert checks["authproxy, 1 worker: 100 MiB download >= 0.5x nginx MB/s"] is fast
    assert checks["authproxy, 1 worker: flat RSS during the download"] is flat


def test_zero_errors_check_names_timeouts() -> None:
    summaries = summarize([_point(report.AUTHPROXY, 256, 900, timeouts=4)])
    checks = {check.name: check for check in check_targets(summaries, (256,), [])}
    check = checks["authproxy, 1 worker: zero errors at 256 connections"]
    assert not check.passed and "4 took longer than wrk's 2 s timeout" in check.detail


@pytest.mark.parametrize(
    ("slowest", "timeouts", "passed"),
    [(999.0, 0, True), (1000.0, 0, False), (500.0, 1, False)],
    ids=["under-a-second", "a-second", "a-timeout-is-slower-still"],
)
def test_no_request_slower_than_a_second_at_256(slowest: float, timeouts: int, passed: bool) -> None:
    summaries = summarize(
        [_point(report.AUTHPROXY, 256, 900, timeouts=timeouts, slowest=slowest), _point(report.AUTHPROXY, 256, 900)]
    )
    checks = _verdicts(check_targets(summaries, (256,), []))
    assert checks["authproxy, 1 worker: no request slower than 1 s at 256 connections"] is passed


@pytest.mark.parametrize(("rps", "passed"), [(800, True), (799, False)], ids=["100-us", "over-100-us"])
def test_cpu_per_request_check(rps: float, passed: bool) -> None:
    # 0.4 s of CPU over rps * 5 s requests: 100 µs each at 800 req/s
    summaries = summarize([_point(report.AUTHPROXY, 16, rps)])
    (cpu,) = (c for c in check_targets(summaries, (16,), []) if "CPU per authenticated request" in c.name)
    assert cpu.passed is passed


def test_refresh_and_login_checks() -> None:
    refreshes = [
        report.Refresh(report.OIDC, 100, 100, 1.8, 3.0, 0, 0.3, 700.0, 260.0),
        report.Refresh(report.AUTHPROXY, 100, 100, 1.7, 3.0, 0, 0.15, 900.0, 150.0),
    ]
    logins = [report.Logins(report.AUTHPROXY, 100, 0, 10.0, 8, 20.0, 0.151)]
    checks = _verdicts(check_targets({}, (), [], logins, refreshes))
    assert checks["authproxy's cost of a refresh <= mod_auth_openidc's"] is False  # +1.55 vs +1.50 ms
    assert checks["authproxy, 1 worker: proxy CPU per full login <= 1.5 ms"] is False  # 1.51 ms


def test_throughput_table_shows_ratios_only_for_authproxy() -> None:
    table = report.throughput_table(_summaries(3000, 1500, 8000, 5, 9), [report.NGINX, report.AUTHPROXY], (16,))
    nginx_row, authproxy_row = table.splitlines()[2:]
    assert "2.00x" in authproxy_row and "0.38x" in authproxy_row
    assert "x |" not in nginx_row


def test_login_rounds_combine_into_cpu_per_login_over_all_of_them() -> None:
    rounds = [
        report.Logins(report.AUTHPROXY, 100, 0, 10.0, 8, 20.0, 0.20),  # 2.0 ms per login
        report.Logins(report.AUTHPROXY, 300, 1, 10.0, 8, 30.0, 0.30),  # 1.0 ms per login
        report.Logins(report.AUTHPROXY, 100, 0, 10.0, 8, 25.0, 0.15),  # 1.5 ms per login
    ]
    combined = report.combine_logins(rounds)
    assert (combined.completed, combined.failed, combined.seconds) == (500, 1, 30.0)
    assert combined.cpu_ms_per_login == pytest.approx(1.3)  # 0.65 s over 500 logins
    assert combined.p50_ms == 25.0
    assert combined.rounds_cpu_ms == pytest.approx((2.0, 1.0, 1.5))
    assert "1.00-2.00" in report.logins_table([combined])


def test_refresh_rounds_combine_into_medians() -> None:
    rounds = [
        report.Refresh(report.AUTHPROXY, 100, 100, 2.0, 3.0, 0, 0.1, 800.0, 60.0),
        report.Refresh(report.AUTHPROXY, 120, 120, 2.4, 3.4, 1, 0.1, 900.0, 60.0),
        report.Refresh(report.AUTHPROXY, 110, 110, 2.2, 9.0, 0, 0.1, 850.0, 60.0),
    ]
    combined = report.combine_refreshes(rounds)
    assert (combined.requests, combined.refresh_grants, combined.errors) == (330, 330, 1)
    assert (combined.p50_ms, combined.p99_ms, combined.cpu_us) == (2.2, 3.4, 850.0)
    assert combined.cost_ms == pytest.approx(2.1)


def test_refresh_rounds_that_each_measured_their_own_plain_request_combine_into_its_median() -> None:
    rounds = [
        report.Refresh(report.OIDC, 100, 100, 2.3, 3.0, 0, 0.30, 900.0, 300.0),
        report.Refresh(report.OIDC, 100, 100, 2.4, 3.0, 0, 0.50, 950.0, 340.0),
        report.Refresh(report.OIDC, 100, 100, 2.2, 3.0, 0, 0.32, 940.0, 310.0),
    ]
    combined = report.combine_refreshes(rounds)
    assert (combined.plain_p50_ms, combined.plain_cpu_us) == (0.32, 310.0)
    # each round's refreshing run against its own plain run: 2.00, 1.90, 1.88, not 2.3 - 0.32
    assert combined.cost_ms == pytest.approx(1.90)


@pytest.mark.parametrize(
    ("grants", "passed"),
    [
        pytest.param(100, True, id="every-request-refreshed"),
        pytest.param(101, True, id="one-more-grant-than-requests-counted"),
        pytest.param(60, False, id="some-requests-did-not-refresh"),
    ],
)
def test_the_refresh_target_counts_only_runs_where_every_request_refreshed(grants: int, passed: bool) -> None:
    refreshes = [
        report.Refresh(report.OIDC, 100, 100, 2.3, 3.0, 0, 0.3, 900.0, 300.0),
        report.Refresh(report.AUTHPROXY, 100, grants, 1.9, 3.0, 0, 0.1, 800.0, 80.0),  # +1.80 vs +2.00 ms
    ]
    (check,) = report.refresh_checks(refreshes)
    assert check.passed is passed
