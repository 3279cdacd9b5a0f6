"""
perfkit.observability.Histograms: the same series as the OpenTelemetry SDK's, read the same
two ways (a Prometheus scrape, an OTLP push), counted without the SDK's ``record()``.

Every comparison is against the real SDK and its real Prometheus reader in the same test.
"""

from __future__ import annotations

import math
import multiprocessing
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Histogram as SDKHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from helpers import run_switching_often
from perfkit import db
from perfkit.observability import (
    DB_DURATION,
    HTTP_DURATION,
    HTTP_DURATION_BUCKETS,
    Histograms,
    TimingMiddleware,
    instrument,
    instrument_engine,
)

ATTRIBUTES: list[dict[str, Any]] = [
    {"http.request.method": "GET", "http.route": "/items/{id}", "http.response.status_code": 200,
     "url.scheme": "http"},
    {"http.request.method": "GET", "http.response.status_code": 404, "url.scheme": "http"},
    {"http.request.method": "POST", "http.route": "/items", "http.response.status_code": 500,
     "url.scheme": "https", "error.type": "500"},
]  # fmt: skip
# On a bound, between bounds, zero, above the last one.
VALUES = [0.0, 0.005, 0.0051, 0.1, 0.75, 10.0, 11.0, 0.0249]


class Capture(MetricExporter):
    """An SDK exporter keeping what it is handed (the OTLP exporter's interface)."""

    def __init__(self, temporality: AggregationTemporality | None = None) -> None:
        preferred = {SDKHistogram: temporality} if temporality is not None else None
        super().__init__(preferred_temporality=preferred)
        self.exports: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **_kwargs: Any
    ) -> MetricExportResult:
        self.exports.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **_kwargs: Any) -> None:
        return None


def _samples(text: str, family: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for metric in text_string_to_metric_families(text):
        if metric.name != family:
            continue
        for sample in metric.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if v != ""))
            found[sample.name, labels] = sample.value
    return found


def _points(data: MetricsData, name: str) -> list[HistogramDataPoint]:
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points  # type: ignore[union-attr]
    ]


def test_prometheus_exposition_is_the_sdks() -> None:
    """The same values and attributes, recorded by the SDK and by Histograms: the scrape
    shows the same family, series, labels, buckets, counts and sums."""
    sdk_registry, ours_registry = CollectorRegistry(), CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=sdk_registry)])
    histograms = Histograms(version="9.9")
    histograms.register(ours_registry)
    sdk = provider.get_meter("perfkit", "9.9").create_histogram(
        HTTP_DURATION, unit="s", description="Duration of HTTP server requests",
        explicit_bucket_boundaries_advisory=list(HTTP_DURATION_BUCKETS),
    )  # fmt: skip
    ours = histograms.histogram(
        HTTP_DURATION, buckets=HTTP_DURATION_BUCKETS, description="Duration of HTTP server requests"
    )
    for n, value in enumerate(VALUES * 3):
        attributes = ATTRIBUTES[n % len(ATTRIBUTES)]
        sdk.record(value, attributes)
        ours.record(value, attributes)
    try:
        family = "http_server_request_duration_seconds"
        expected = _samples(generate_latest(sdk_registry).decode(), family)
        got = _samples(generate_latest(ours_registry).decode(), family)
    finally:
        provider.shutdown()
    assert len(expected) == len(ATTRIBUTES) * (len(HTTP_DURATION_BUCKETS) + 3)
    assert got == expected


def test_a_value_on_a_bound_counts_in_that_bucket_as_the_sdk_counts_it() -> None:
    """OpenTelemetry's buckets are upper-inclusive: (b[i-1], b[i]]; the last holds the rest."""
    capture = Capture()
    histograms = Histograms()
    reader = PeriodicExportingMetricReader(histograms.exporter(capture), export_interval_millis=1e9)
    provider = MeterProvider(metric_readers=[reader])
    sdk = provider.get_meter("sdk").create_histogram(
        "check", unit="s", explicit_bucket_boundaries_advisory=[0.005, 0.025, 1.0]
    )
    ours = histograms.histogram("check.ours", buckets=[0.005, 0.025, 1.0])
    for value in VALUES:
        sdk.record(value)
        ours.record(value)
    provider.force_flush()
    provider.shutdown()
    (theirs,) = _points(capture.exports[0], "check")
    (mine,) = _points(capture.exports[0], "check.ours")
    assert list(mine.bucket_counts) == list(theirs.bucket_counts) == [2, 2, 2, 2]
    assert (mine.count, mine.min, mine.max) == (theirs.count, theirs.min, theirs.max)
    assert mine.sum == pytest.approx(theirs.sum)
    assert list(mine.explicit_bounds) == [0.005, 0.025, 1.0]


def test_the_otlp_push_carries_them_in_perfkits_scope_beside_the_sdks_counters() -> None:
    """One scope ``perfkit`` (OTLP's encoder keeps only the last of two equal scopes), the
    SDK's observable counters kept, cumulative points growing from one export to the next."""
    capture = Capture()
    histograms = Histograms()
    reader = PeriodicExportingMetricReader(histograms.exporter(capture), export_interval_millis=1e9)
    provider = MeterProvider(metric_readers=[reader])
    instrument(provider)  # perfkit's cache, breaker and retry counters, through the SDK
    ours = histograms.histogram(HTTP_DURATION, buckets=HTTP_DURATION_BUCKETS)
    record = ours.series(ATTRIBUTES[0])
    record(0.002)
    provider.force_flush()
    record(0.02)
    provider.force_flush()
    provider.shutdown()
    first, second = capture.exports[:2]
    scopes = [s for r in second.resource_metrics for s in r.scope_metrics]
    perfkit_scopes = [s for s in scopes if s.scope.name == "perfkit"]
    assert len(perfkit_scopes) == 1
    names = {metric.name for metric in perfkit_scopes[0].metrics}
    assert {HTTP_DURATION, "perfkit.retry.attempts"} <= names
    (before,) = _points(first, HTTP_DURATION)
    (after,) = _points(second, HTTP_DURATION)
    assert (before.count, after.count) == (1, 2)
    assert after.start_time_unix_nano == before.start_time_unix_nano
    assert dict(after.attributes) == ATTRIBUTES[0]


def test_a_delta_exporter_gets_what_each_interval_counted() -> None:
    capture = Capture(AggregationTemporality.DELTA)
    histograms = Histograms()
    reader = PeriodicExportingMetricReader(histograms.exporter(capture), export_interval_millis=1e9)
    provider = MeterProvider(metric_readers=[reader])
    instrument(provider)  # the reader exports nothing if the SDK itself has nothing
    record = histograms.histogram("delta", buckets=[1.0]).series({"k": "v"})
    for _ in range(3):
        record(0.5)
    provider.force_flush()
    provider.force_flush()  # nothing new: no point
    record(2.0)
    provider.force_flush()
    provider.shutdown()
    counts = [
        [(p.count, list(p.bucket_counts)) for p in _points(e, "delta")] for e in capture.exports
    ]
    assert counts[:3] == [[(3, [3, 0])], [], [(1, [0, 1])]]
    first, third = _points(capture.exports[0], "delta")[0], _points(capture.exports[2], "delta")[0]
    assert third.start_time_unix_nano > first.time_unix_nano  # from the export before
    (metric,) = [m for s in capture.exports[2].resource_metrics[0].scope_metrics
                 for m in s.metrics if m.name == "delta"]  # fmt: skip
    assert metric.data.aggregation_temporality == AggregationTemporality.DELTA  # type: ignore[union-attr]


@pytest.mark.parametrize("round_", range(5))
def test_threads_recording_at_once_lose_nothing(round_: int) -> None:
    """
    Eight threads on one series and on their own, switching as often as possible; the
    first calls race to make the series (made twice, one would lose the other's counts).
    """
    histogram = Histograms().histogram("threads", buckets=[0.25, 0.5])
    start = threading.Barrier(8)

    def work(n: int) -> None:
        start.wait()
        for i in range(1_000):
            histogram.record(0.5, {"shared": True})
            histogram.series({"thread": n})(0.1 if i % 2 else 0.9)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    run_switching_often(threads)
    points = {tuple(p.attributes.items()): p for p in histogram.collect()}
    together = points[("shared", True),]
    assert (together.count, together.bucket_counts) == (8_000, (0, 8_000, 0))
    assert together.sum == 4_000
    for n in range(8):
        own = points[("thread", n),]
        assert (own.count, own.bucket_counts) == (1_000, (500, 0, 500))
        assert own.sum == pytest.approx(500 * 1.0)


def test_attribute_sets_past_the_limit_are_counted_in_the_overflow_series() -> None:
    histogram = Histograms(max_series=2).histogram("few", buckets=[1.0])
    for n in range(5):
        histogram.record(0.5, {"n": n})
    histogram.record(0.5, {"n": 0})  # an existing set keeps its series
    counts = {tuple(p.attributes.items()): p.count for p in histogram.collect()}
    assert counts == {(("n", 0),): 2, (("n", 1),): 1, (("otel.metric.overflow", True),): 3}


def test_the_same_attributes_in_any_order_are_one_series_and_lists_are_values() -> None:
    histogram = Histograms().histogram("order", buckets=[1.0])
    histogram.record(0.1, {"a": 1, "b": "x"})
    histogram.record(0.1, {"b": "x", "a": 1})
    histogram.record(0.1, {"tags": ["a", "b"]})
    histogram.record(0.1, {"tags": ("a", "b")})
    histogram.record(0.1)
    assert sorted(p.count for p in histogram.collect()) == [1, 2, 2]
    registry = CollectorRegistry()
    histogram.histograms.register(registry)
    assert 'tags="[\\"a\\", \\"b\\"]"' in generate_latest(registry).decode()  # as the SDK's


@pytest.mark.parametrize("value", [-0.001, math.nan, math.inf])
def test_a_value_that_is_no_duration_is_refused(value: float) -> None:
    histogram = Histograms().histogram("bad", buckets=[1.0])
    with pytest.raises(ValueError, match="bad: cannot record"):
        histogram.record(value)
    assert histogram.collect() == []


@pytest.mark.parametrize(
    "buckets", [[1.0, 0.5], [0.5, 0.5], [math.inf], [math.nan]], ids=["down", "twice", "inf", "nan"]
)
def test_buckets_must_be_finite_and_increasing(buckets: Sequence[float]) -> None:
    with pytest.raises(ValueError, match="buckets: must be finite and increasing"):
        Histograms().histogram("b", buckets=buckets)


def test_one_name_has_one_shape() -> None:
    histograms = Histograms()
    made = histograms.histogram("shape", buckets=[1.0])
    assert histograms.histogram("shape", buckets=[1.0]) is made
    with pytest.raises(ValueError, match="one name, one shape"):
        histograms.histogram("shape", buckets=[2.0])
    with pytest.raises(ValueError, match="one name, one shape"):
        histograms.histogram("shape", buckets=[1.0], unit="ms")
    with pytest.raises(ValueError, match="max_series must be at least 1"):
        Histograms(max_series=0)


def test_histograms_and_a_meter_provider_are_one_choice_too_many() -> None:
    async def app(_scope: Any, _receive: Any, _send: Any) -> None:
        return None

    with pytest.raises(ValueError, match="takes no meter_provider"):
        TimingMiddleware(app, metrics=Histograms(), meter_provider=MeterProvider())


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    made = db.create_engine(f"sqlite:///{tmp_path / 'hist.sqlite3'}")
    yield made
    made.dispose()


@pytest.mark.anyio
async def test_the_middleware_and_the_engine_count_into_histograms(engine: sa.Engine) -> None:
    """Requests by route, status and scheme (http and https apart), statements by operation."""
    histograms = Histograms()
    instrument_engine(engine, metrics=histograms)

    async def app(scope: Any, _receive: Any, send: Any) -> None:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = TimingMiddleware(app, metrics=histograms, log=False, duration_buckets=[0.5, 1.0])
    for base in ("http://one", "https://one", "http://one"):
        transport = httpx.ASGITransport(app=wrapped)
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            assert (await client.get("/")).status_code == 200
    by_name = {histogram.name: histogram for histogram in histograms}
    requests = {p.attributes["url.scheme"]: p.count for p in by_name[HTTP_DURATION].collect()}
    assert requests == {"http": 2, "https": 1}
    assert by_name[HTTP_DURATION].bounds == (0.5, 1.0)
    statements = {
        p.attributes["db.operation.name"]: p.count
        for p in by_name["db.client.operation.duration"].collect()
    }
    assert statements["SELECT"] == 3


def _families(text: str) -> dict[str, tuple[str | None, set[tuple[str, tuple[Any, ...], float]]]]:
    """OpenMetrics families by name: unit, and samples without empty labels."""
    found = {}
    for metric in openmetrics_families(text):
        if metric.name in {"target", "target_info"}:  # the SDK's resource, not a histogram
            continue
        samples = {
            (sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if v)),
             sample.value)
            for sample in metric.samples
        }  # fmt: skip
        found[metric.name] = (metric.unit, samples)
    return found


@pytest.mark.parametrize(
    ("name", "unit", "buckets", "attributes"),
    [
        ("h._x", "ms", [1.0, 1e6, 2.5e7], {"a._b": "x", "9k": 1, "flag": True}),
        ("db.wait", "us", [0.5, 1e16], {"list": ("a", 2), "ratio": 0.25}),
        ("payload.size", "By", [1024.0, 1048576.0], {"http.route": "/a"}),
        ("tick", "ns", [10.0], {}),
    ],
)
def test_openmetrics_exposition_is_the_sdks_for_other_names_units_and_bounds(
    name: str, unit: str, buckets: list[float], attributes: dict[str, Any]
) -> None:
    """Names with odd characters, each unit (with OpenMetrics' UNIT line), bounds of 1e6 and
    up, label keys that need cleaning, values of every kind: as the SDK's reader shows them."""
    sdk_registry, ours_registry = CollectorRegistry(), CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=sdk_registry)])
    histograms = Histograms(version="1.0")
    histograms.register(ours_registry)
    sdk = provider.get_meter("perfkit", "1.0").create_histogram(
        name, unit=unit, description="d", explicit_bucket_boundaries_advisory=buckets
    )
    ours = histograms.histogram(name, buckets=buckets, unit=unit, description="d")
    for value in (0.1, 2.0, 3e6, 5e7):
        sdk.record(value, attributes)
        ours.record(value, attributes)
    try:
        expected = _families(openmetrics_latest(sdk_registry).decode())
        got = _families(openmetrics_latest(ours_registry).decode())
    finally:
        provider.shutdown()
    assert got == expected
    assert next(iter(got.values()))[0]  # a UNIT line


def test_units_and_names_outside_what_the_exposition_can_mirror_are_refused() -> None:
    histograms = Histograms()
    with pytest.raises(ValueError, match="unit '1': one of s, ms, us, ns, By"):
        histograms.histogram("ratio", buckets=[0.5], unit="1")
    with pytest.raises(ValueError, match="not an OpenTelemetry instrument name"):
        histograms.histogram("9lives", buckets=[1.0])
    histograms.histogram("a.b", buckets=[1.0])
    with pytest.raises(ValueError, match="are one name in Prometheus"):
        histograms.histogram("a_b", buckets=[1.0])


def test_a_delta_point_has_the_intervals_own_min_and_max() -> None:
    capture = Capture(AggregationTemporality.DELTA)
    histograms = Histograms()
    reader = PeriodicExportingMetricReader(histograms.exporter(capture), export_interval_millis=1e9)
    provider = MeterProvider(metric_readers=[reader])
    instrument(provider)
    record = histograms.histogram("window", buckets=[1.0]).series()
    record(0.1)
    record(5.0)
    provider.force_flush()
    record(0.3)
    provider.force_flush()
    provider.shutdown()
    first, second = (_points(e, "window")[0] for e in capture.exports[:2])
    assert (first.min, first.max, second.min, second.max) == (0.1, 5.0, 0.3, 0.3)


def test_collected_attributes_cannot_change_the_series() -> None:
    histogram = Histograms().histogram("frozen", buckets=[1.0])
    histogram.record(0.1, {"k": "v"})
    (point,) = histogram.collect()
    with pytest.raises(TypeError):
        point.attributes["k"] = "w"  # type: ignore[index]
    assert histogram.collect()[0].attributes == {"k": "v"}


def _child_counts(histograms: Histograms, queue: Any) -> None:
    (histogram,) = histograms
    before = [p.count for p in histogram.collect()]
    histogram.record(0.1, {"k": "v"})  # its lock works
    queue.put((before, [p.count for p in histogram.collect()]))


def test_a_forked_child_starts_from_nothing() -> None:
    """The parent's counts are the parent's to export; a lock held at the fork is not."""
    histograms = Histograms()
    histogram = histograms.histogram("forked", buckets=[1.0])
    histogram.record(0.1, {"k": "v"})
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    series = histogram._series[frozenset({("k", "v")})]
    with series.lock:
        child = context.Process(target=_child_counts, args=(histograms, queue))
        child.start()
    assert queue.get(timeout=30) == ([], [1])
    child.join(timeout=30)
    assert child.exitcode == 0
    assert [p.count for p in histogram.collect()] == [1]


def test_an_engine_refused_for_its_arguments_can_be_instrumented_after(engine: sa.Engine) -> None:
    histograms = Histograms()
    with pytest.raises(ValueError, match="takes no meter_provider"):
        instrument_engine(engine, metrics=histograms, meter_provider=MeterProvider())
    instrument_engine(engine, metrics=histograms)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    (statements,) = [h for h in histograms if h.name == DB_DURATION]
    assert "SELECT" in {p.attributes["db.operation.name"] for p in statements.collect()}
