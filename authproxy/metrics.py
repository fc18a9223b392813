"""Prometheus metrics of SPEC section 6, in a registry of their own per process.

With ``--workers N`` each worker keeps its own registry and serves it on the shared admin port
(SO_REUSEPORT), so one scrape sees one worker; every series carries a ``worker`` label so that
sums over scrapes stay meaningful.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Metrics:
    """Every metric authproxy exports."""

    def __init__(self, worker: str = "0") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.worker = worker
        registry = self.registry
        self.requests = Counter(
            "authproxy_requests_total",
            "Requests answered, by route and status code.",
            ["route", "code", "worker"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "authproxy_request_duration_seconds",
            "Time to answer a request (to response headers for streams).",
            ["route", "worker"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.logins = Counter(
            "authproxy_logins_total",
            "Completed login callbacks, by result.",
            ["result", "worker"],
            registry=registry,
        )
        self.refreshes = Counter(
            "authproxy_refreshes_total",
            "Token refreshes, by result.",
            ["result", "worker"],
            registry=registry,
        )
        self.logouts = Counter(
            "authproxy_logouts_total",
            "Sessions ended, by kind (user, backchannel, expired, revoked).",
            ["kind", "worker"],
            registry=registry,
        )
        self.store_errors = Counter(
            "authproxy_session_store_errors_total",
            "Session store operations that failed.",
            ["worker"],
            registry=registry,
        )
        self._request_series: dict[tuple[str, int], Counter] = {}
        self._duration_series: dict[str, Histogram] = {}
        self.upstream_errors = Counter(
            "authproxy_upstream_errors_total",
            "Upstream failures, by route and kind (refused, timeout, reset).",
            ["route", "kind", "worker"],
            registry=registry,
        )
        self.connection_handovers = Counter(
            "authproxy_connection_handovers_total",
            "Client connections handed between the fast path and aiohttp's web layer, by where to "
            "(aiohttp: a request the fast path does not serve; fast_path: given back once idle).",
            ["to", "worker"],
            registry=registry,
        )
        self._handovers = {to: self.connection_handovers.labels(to, worker) for to in ("aiohttp", "fast_path")}

    def observe_request(self, route: str, code: int, seconds: float) -> None:
        # once per request: keep each label set's series instead of looking it up every time
        counter = self._request_series.get((route, code))
        if counter is None:
            counter = self._request_series[(route, code)] = self.requests.labels(route, str(code), self.worker)
        histogram = self._duration_series.get(route)
        if histogram is None:
            histogram = self._duration_series[route] = self.request_duration.labels(route, self.worker)
        counter.inc()
        histogram.observe(seconds)

    def count_login(self, result: str) -> None:
        self.logins.labels(result, self.worker).inc()

    def count_refresh(self, result: str) -> None:
        self.refreshes.labels(result, self.worker).inc()

    def count_logout(self, kind: str) -> None:
        self.logouts.labels(kind, self.worker).inc()

    def count_store_error(self) -> None:
        self.store_errors.labels(self.worker).inc()

    def count_upstream_error(self, route: str, kind: str) -> None:
        self.upstream_errors.labels(route, kind, self.worker).inc()

    def count_handover(self, to: str) -> None:
        self._handovers[to].inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
