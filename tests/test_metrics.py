"""Metrics (SPEC section 6): the counters move for what really happened, the histogram adds up.

One proxy subprocess; the admin listener's /metrics is scraped before and after a scripted run
(two logins, a failed one, refreshes, a refused refresh, a 502, a sign-out) and every counter
must have moved by exactly what the run did.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from authproxy.metrics import Metrics
from authproxy.metrics_peers import merge_expositions
from tests.support.ops import JSON, OpsStack, Samples, login, metric, parse_metrics, scrape_metrics, start_ops_stack

FAMILIES = {
    "authproxy_requests": "counter",
    "authproxy_request_duration_seconds": "histogram",
    "authproxy_logins": "counter",
    "authproxy_refreshes": "counter",
    "authproxy_logouts": "counter",
    "authproxy_session_store_errors": "counter",
    "authproxy_upstream_errors": "counter",
}


@dataclass
class Run:
    before: Samples
    after: Samples
    app_200: int
    metrics_text: str
    content_type: str

    def delta(self, name: str, **labels: str) -> float:
        return metric(self.after, name, **labels) - metric(self.before, name, **labels)


async def _scenario(stack: OpsStack) -> Run:
    before = await scrape_metrics(stack.admin_url)
    app_200 = 0
    async with stack.browser() as b:
        page = await login(b, stack, "/app/one")  # login ok, then a refresh (tokens live 30 s)
        assert page.status == 200
        app_200 += 1
        for _ in range(3):
            assert (await b.get(f"{stack.url}/app/more", headers=JSON)).status == 200
            app_200 += 1
        assert (await b.get(f"{stack.url}/dead/x", headers=JSON)).status == 502
        assert (await b.get(f"{stack.url}/oauth2/callback?state=forged&code=forged", headers=JSON)).status == 400
        stack.provider.set_fault("invalid_grant_on_refresh")
        assert (await b.get(f"{stack.url}/app/refused", headers=JSON)).status == 401
        stack.provider.set_fault(None)
        page = await login(b, stack, "/app/two")
        assert page.status == 200
        app_200 += 1
        assert (await b.get(f"{stack.url}/oauth2/sign_out", follow_redirects=False)).status == 302
    async with aiohttp.ClientSession() as client, client.get(stack.admin_url + "/metrics") as answer:
        text = await answer.text()
        content_type = answer.headers["Content-Type"]
    after = await scrape_metrics(stack.admin_url)
    return Run(before, after, app_200, text, content_type)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    directory = tmp_path_factory.mktemp("metrics")
    with start_ops_stack(directory, config={"session": {"refresh_before_expiry": "60s"}}, access_token_ttl=30) as stack:
        yield asyncio.run(_scenario(stack))


def test_exposition_format_and_families(run: Run) -> None:
    assert run.content_type.startswith("text/plain")
    families = {family.name: family.type for family in text_string_to_metric_families(run.metrics_text)}
    for name, kind in FAMILIES.items():
        assert families.get(name) == kind, (name, families.get(name))


def test_logins_counted_by_result(run: Run) -> None:
    assert run.delta("authproxy_logins_total", result="ok") == 2
    assert run.delta("authproxy_logins_total", result="bad_state") == 1
    assert run.delta("authproxy_logins_total") == 3


def test_refreshes_counted_by_result(run: Run) -> None:
    # each signed-in request refreshes (tokens live 30 s, refresh_before_expiry is 60 s): the
    # 200s of the app route and the 502 of the dead one
    assert run.delta("authproxy_refreshes_total", result="ok") == run.app_200 + 1
    assert run.delta("authproxy_refreshes_total", result="invalid_grant") == 1


def test_logouts_counted(run: Run) -> None:
    assert run.delta("authproxy_logouts_total", kind="user") == 1


def test_requests_counted_by_route_and_code(run: Run) -> None:
    assert run.delta("authproxy_requests_total", route="app", code="200") == run.app_200
    assert run.delta("authproxy_requests_total", route="app", code="401") == 1
    assert run.delta("authproxy_requests_total", route="dead", code="502") == 1
    assert run.delta("authproxy_requests_total", route="_auth", code="400") == 1
    assert run.delta("authproxy_requests_total", route="_auth", code="302") >= 4  # 2 x (start, callback)


def test_upstream_errors_counted_by_route_and_kind(run: Run) -> None:
    assert run.delta("authproxy_upstream_errors_total", route="dead", kind="refused") == 1
    assert run.delta("authproxy_upstream_errors_total", route="app") == 0
    assert run.delta("authproxy_session_store_errors_total") == 0


@pytest.mark.parametrize("route", ["app", "dead", "_auth"])
def test_duration_histogram_adds_up(run: Run, route: str) -> None:
    name = "authproxy_request_duration_seconds"
    count = metric(run.after, name + "_count", route=route)
    assert count == metric(run.after, "authproxy_requests_total", route=route) > 0
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (sample, labels), value in run.after.items()
        if sample == name + "_bucket" and ("route", route) in labels
    )
    assert buckets[-1] == (math.inf, count)
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets))
    assert 0 < metric(run.after, name + "_sum", route=route) < 30 * count


# ---------------------------------------------------------------------- the request series alone


def test_request_series_count_each_route_and_code_and_fill_the_histogram_by_le() -> None:
    metrics = Metrics(worker="2")
    for route, code, seconds in [
        ("app", 200, 0.0004),
        ("app", 200, 0.001),  # on a bound: in that bound's bucket ("less than or equal")
        ("app", 404, 0.3),
        ("app", 200, 61.0),  # past the last bound: +Inf only
        ("_auth", 302, 0.002),
    ]:
        metrics.observe_request(route, code, seconds)
    samples = parse_metrics(metrics.render().decode(), without=None)

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset({**labels, "worker": "2"}.items()))]

    assert value("authproxy_requests_total", route="app", code="200") == 3
    assert value("authproxy_requests_total", route="app", code="404") == 1
    assert value("authproxy_requests_total", route="_auth", code="302") == 1
    bucket = "authproxy_request_duration_seconds_bucket"
    assert value(bucket, route="app", le="0.001") == 2
    assert value(bucket, route="app", le="0.25") == 2
    assert value(bucket, route="app", le="0.5") == 3
    assert value(bucket, route="app", le="60.0") == 3
    assert value(bucket, route="app", le="+Inf") == 4
    assert value(bucket, route="_auth", le="0.001") == 0
    assert value(bucket, route="_auth", le="0.0025") == 1
    assert value("authproxy_request_duration_seconds_count", route="app") == 4
    assert value("authproxy_request_duration_seconds_sum", route="app") == pytest.approx(61.3014)
    assert ("authproxy_requests_created", frozenset({"route": "app", "code": "404", "worker": "2"}.items())) in samples


def test_request_series_stay_empty_until_a_request_is_answered() -> None:
    families = {family.name: family.samples for family in text_string_to_metric_families(Metrics().render().decode())}
    assert families["authproxy_requests"] == []
    assert families["authproxy_request_duration_seconds"] == []


def test_request_series_leave_out_created_series_when_the_client_library_is_told_to() -> None:
    metrics = Metrics()
    metrics.observe_request("app", 200, 0.01)
    metrics.count_login("ok")
    prometheus_client.disable_created_metrics()
    try:
        text = metrics.render().decode()
    finally:
        prometheus_client.enable_created_metrics()
    assert "authproxy_requests_total{" in text and "_created" not in text
    assert "authproxy_requests_created{" in metrics.render().decode()


def test_the_store_error_counter_is_exported_at_zero_before_the_first_error() -> None:
    # an alert on increase() or rate() needs the series before the first error, or misses it
    metrics = Metrics(worker="3")
    text = metrics.render().decode()
    assert 'authproxy_session_store_errors_total{worker="3"} 0.0' in text
    metrics.count_store_error()
    assert 'authproxy_session_store_errors_total{worker="3"} 1.0' in metrics.render().decode()


# ---------------------------------------------------------------- every worker in one scrape


def _worker_metrics(worker: str, requests: int) -> bytes:
    metrics = Metrics(worker=worker)
    for _ in range(requests):
        metrics.observe_request("app", 200, 0.01)
    metrics.count_login("ok")
    return metrics.render()


def test_one_workers_exposition_merged_alone_is_itself_byte_for_byte() -> None:
    own = _worker_metrics("0", 3)
    assert merge_expositions([own.decode()]) == own


def test_merged_expositions_hold_each_family_once_with_every_workers_samples() -> None:
    merged = merge_expositions([_worker_metrics("0", 3).decode(), _worker_metrics("1", 5).decode()]).decode()
    assert merged.count("# TYPE authproxy_requests_total counter") == 1
    assert merged.count("# TYPE authproxy_request_duration_seconds histogram") == 1
    requests = {
        sample.labels["worker"]: sample.value
        for family in text_string_to_metric_families(merged)
        for sample in family.samples
        if sample.name == "authproxy_requests_total"
    }
    assert requests == {"0": 3.0, "1": 5.0}


def test_a_workers_exposition_that_cannot_be_read_is_left_out_not_a_failed_scrape() -> None:
    own = _worker_metrics("0", 1)
    assert merge_expositions([own.decode(), 'authproxy_requests_total{route="app" garbage\n']) == own
