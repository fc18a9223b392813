"""Prometheus metrics of SPEC section 6, in a registry of their own per process.

With ``--workers N`` each worker keeps its own registry, and every series carries a ``worker``
label; the worker a scrape reaches on the shared admin port (SO_REUSEPORT) adds the other
workers' series to its own (:mod:`authproxy.metrics_peers`).

The two series every request moves (``authproxy_requests_total`` and
``authproxy_request_duration_seconds``) are plain counts in :class:`RequestSeries`, read by the
registry at scrape time, rather than ``prometheus_client`` metrics: those take a lock per
increment for threads the proxy does not have (each worker counts on its one event loop), which
cost about 2 µs per request. The exposition is the same, ``_created`` series included.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client import metrics as client_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

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


# each bound as prometheus_client writes a histogram's ``le``
_BUCKET_NAMES: Final = (*(str(floatToGoString(bound)) for bound in _BUCKETS), "+Inf")  # type: ignore[no-untyped-call]
REQUESTS_HELP: Final = "Requests answered, by route and status code."
DURATION_HELP: Final = "Time to answer a request (to response headers for streams)."


class _RouteSeries:
    """One route's request counts by status code, and its duration histogram."""

    __slots__ = ("buckets", "code_created", "codes", "created", "total_seconds")

    def __init__(self) -> None:
        self.created = time.time()
        self.codes: dict[int, int] = {}
        self.code_created: dict[int, float] = {}
        # one count per bucket, not cumulative (the last is +Inf); summed up at scrape time
        self.buckets = [0] * (len(_BUCKETS) + 1)
        self.total_seconds = 0.0


class RequestSeries:
    """``authproxy_requests_total{route,code}`` and ``authproxy_request_duration_seconds{route}``.

    A collector for the registry: counts kept in plain dicts and lists by the event loop's
    thread, turned into metric families when scraped.
    """

    def __init__(self, worker: str) -> None:
        self._worker = worker
        self._routes: dict[str, _RouteSeries] = {}

    def observe(self, route: str, code: int, seconds: float) -> None:
        series = self._routes.get(route)
        if series is None:
            series = self._routes[route] = _RouteSeries()
        count = series.codes.get(code)
        if count is None:
            series.code_created[code] = time.time()
            count = 0
        series.codes[code] = count + 1
        # a value equal to a bound belongs to that bound's bucket (le, "less than or equal")
        series.buckets[bisect_left(_BUCKETS, seconds)] += 1
        series.total_seconds += seconds

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        requests, durations = self._families()
        # as prometheus_client's own metrics do: no _created series after disable_created_metrics()
        # or with PROMETHEUS_DISABLE_CREATED_SERIES=True
        with_created = getattr(client_metrics, "_use_created", True)
        for route, series in list(self._routes.items()):
            for code, count in list(series.codes.items()):
                created = series.code_created[code] if with_created else None
                requests.add_metric((route, str(code), self._worker), count, created=created)
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for name, count in zip(_BUCKET_NAMES, series.buckets, strict=True):
                cumulative += count
                buckets.append((name, cumulative))
            durations.add_metric((route, self._worker), buckets, series.total_seconds)
            if with_created:
                labels = {"route": route, "worker": self._worker}
                durations.samples.append(Sample(durations.name + "_created", labels, series.created))
        yield requests
        yield durations

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, HistogramMetricFamily]:
        """The two families, empty: their names and help for ``describe``, filled by ``collect``."""
        return (
            CounterMetricFamily("authproxy_requests", REQUESTS_HELP, labels=("route", "code", "worker")),
            HistogramMetricFamily("authproxy_request_duration_seconds", DURATION_HELP, labels=("route", "worker")),
        )


class Metrics:
    """Every metric authproxy exports."""

    def __init__(self, worker: str = "0") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.worker = worker
        registry = self.registry
        self.requests = RequestSeries(worker)
        registry.register(self.requests)
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
            "Sessions ended, by kind (user: a sign-out, backchannel: a back-channel logout).",
            ["kind", "worker"],
            registry=registry,
        )
        self.store_errors = Counter(
            "authproxy_session_store_errors_total",
            "Session store operations that failed.",
            ["worker"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "authproxy_upstream_errors_total",
            "Upstream failures, by route and kind (refused, timeout, reset, bad_response).",
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
        # exported at 0 from the start: rate() and increase() see the first error as one
        self._store_errors = self.store_errors.labels(worker)

    def observe_request(self, route: str, code: int, seconds: float) -> None:
        self.requests.observe(route, code, seconds)

    def count_login(self, result: str) -> None:
        self.logins.labels(result, self.worker).inc()

    def count_refresh(self, result: str) -> None:
        self.refreshes.labels(result, self.worker).inc()

    def count_logout(self, kind: str) -> None:
        self.logouts.labels(kind, self.worker).inc()

    def count_store_error(self) -> None:
        self._store_errors.inc()

    def count_upstream_error(self, route: str, kind: str) -> None:
        self.upstream_errors.labels(route, kind, self.worker).inc()

    def count_handover(self, to: str) -> None:
        self._handovers[to].inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
