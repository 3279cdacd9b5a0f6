"""
Histograms aggregated in perfkit, for the hot paths the OpenTelemetry SDK makes slow.

opentelemetry-sdk 1.45 cleans and hashes the attribute set on every ``record()``
(about 12 us inside a request, a third of a cached hit's server time). These
histograms count into per-series bucket arrays instead (a ``bisect`` and a few
additions under a lock) and are read only when something collects them: a
Prometheus scrape (:meth:`Histograms.register`) or an OTLP push
(:meth:`Histograms.exporter`). Both show the same series the SDK would have
made: same names, units, attributes, buckets and instrumentation scope.

What they do not do: exemplars (they need the SDK's view of the current span),
views, the Prometheus reader's options (``prefix=`` and the like), and sharing
counts across processes (each worker exports its own, as with the SDK).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        MetricsData,
    )
    from prometheus_client.registry import CollectorRegistry

__all__ = ["Histogram", "HistogramPoint", "Histograms"]

AttributeValue = str | bool | int | float
_OVERFLOW: Final[Mapping[str, AttributeValue]] = {"otel.metric.overflow": True}
# The units a duration or size histogram has, and the Prometheus word for each (the names
# the SDK's Prometheus exporter uses for them); other units are refused, not guessed.
UNITS: Final = {"s": "seconds", "ms": "milliseconds", "us": "microseconds",
                "ns": "nanoseconds", "By": "bytes"}  # fmt: skip
# Prometheus's rules, as the SDK's exporter applies them: a run of anything else is one "_".
_NOT_IN_NAME: Final = re.compile(r"[^a-zA-Z0-9:]+")
_NOT_IN_LABEL: Final = re.compile(r"[^a-zA-Z0-9]+")
# OpenTelemetry's instrument name syntax.
_INSTRUMENT_NAME: Final = re.compile(r"[a-zA-Z][-_./a-zA-Z0-9]{0,254}")


def _checked_bounds(given: Iterable[float]) -> tuple[float, ...]:
    bounds = tuple(float(value) for value in given)
    if not all(math.isfinite(value) for value in bounds) or list(bounds) != sorted(set(bounds)):
        raise ValueError(f"buckets: must be finite and increasing, each once: {bounds!r}")
    return bounds


@dataclass(frozen=True, slots=True)
class HistogramPoint:
    """One series of a :class:`Histogram` as collected: cumulative since *start_ns*.

    ``bucket_counts[i]`` counts values in ``(bounds[i-1], bounds[i]]``; the last
    one counts values above every bound (OpenTelemetry's explicit-bucket layout).

    .. versionadded:: 0.2.0
    """

    attributes: Mapping[str, AttributeValue]
    start_ns: int
    time_ns: int
    count: int
    sum: float
    min: float
    max: float
    bucket_counts: tuple[int, ...]


class _Series:
    """One attribute set's counts; ``record`` is the hot path."""

    __slots__ = ("attributes", "bounds", "count", "counts", "lock", "max", "min", "name",
                 "start_ns", "sum", "window_max", "window_min")  # fmt: skip

    def __init__(
        self, name: str, attributes: Mapping[str, AttributeValue], bounds: tuple[float, ...]
    ) -> None:
        self.name = name
        self.attributes = _hashable(attributes)  # a list value would change under us
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.window_min = math.inf  # since the last delta export
        self.window_max = -math.inf
        self.start_ns = time.time_ns()
        self.lock = threading.Lock()

    def reset(self) -> None:
        """Start again from nothing (a forked child: the parent's counts are the parent's)."""
        self.lock = threading.Lock()
        self.counts = [0] * len(self.counts)
        self.count = 0
        self.sum = 0.0
        self.min = self.window_min = math.inf
        self.max = self.window_max = -math.inf
        self.start_ns = time.time_ns()

    def record(self, value: float) -> None:
        if not 0.0 <= value < math.inf:
            raise ValueError(f"{self.name}: cannot record {value!r}")
        index = bisect_left(self.bounds, value)  # bounds are upper-inclusive
        with self.lock:
            self.counts[index] += 1
            self.count += 1
            self.sum += value
            if value < self.min:  # noqa: PLR1730 - min() is a call, twice as slow
                self.min = value
            if value > self.max:  # noqa: PLR1730
                self.max = value
            if value < self.window_min:  # noqa: PLR1730
                self.window_min = value
            if value > self.window_max:  # noqa: PLR1730
                self.window_max = value


class Histogram:
    """
    An explicit-bucket histogram that perfkit aggregates (made by :meth:`Histograms.histogram`).

    It takes the SDK's attributes and is thread-safe. A kept :meth:`series` recorder
    costs about a microsecond (against ~6-12 us for the OpenTelemetry SDK's
    ``record()``); :meth:`record` adds the lookup of its attributes (a ``frozenset``
    of them).

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        name: str,
        *,
        unit: str,
        description: str,
        bounds: tuple[float, ...],
        max_series: int,
        owner: Histograms,
    ) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.bounds = bounds
        self.max_series = max_series
        self.histograms = owner
        self._series: dict[frozenset[tuple[str, Any]], _Series] = {}
        self._lock = threading.Lock()

    def record(self, value: float, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        """
        Count *value* in the series of *attributes*.

        Raises:
            ValueError: *value* is negative, infinite or NaN (the SDK drops those
                with a warning; here they are a caller's bug, so they say so).
        """
        self.series(attributes)(value)

    def series(
        self, attributes: Mapping[str, AttributeValue] | None = None
    ) -> Callable[[float], None]:
        """
        The ``record(value)`` of one attribute set, for a caller that keeps it: no
        lookup of the attributes on each call (:class:`~perfkit.observability.TimingMiddleware`
        keeps one per route and status).
        """
        try:
            key = frozenset(attributes.items()) if attributes else frozenset()
        except TypeError:  # a list value: as the SDK does, a sequence is a value
            key = frozenset(_hashable(attributes or {}).items())
        found = self._series.get(key)
        if found is None:
            found = self._series_for(key, attributes or {})
        return found.record

    def _series_for(
        self, key: frozenset[tuple[str, Any]], attributes: Mapping[str, AttributeValue]
    ) -> _Series:
        with self._lock:
            found = self._series.get(key)
            if found is not None:
                return found
            if len(self._series) >= self.max_series:
                key, attributes = frozenset(_OVERFLOW.items()), _OVERFLOW
                found = self._series.get(key)
                if found is not None:
                    return found
            made = self._series[key] = _Series(self.name, attributes, self.bounds)
            return made

    def collect(self, *, window: bool = False) -> list[HistogramPoint]:
        """
        Every series that has counted something, as it is now.

        With *window*, each point's min and max are those since the last such call
        (which a delta exporter sends), and they start again.
        """
        now = time.time_ns()
        points = []
        for series in list(self._series.values()):
            with series.lock:
                if not series.count:
                    continue
                low, high = series.min, series.max
                if window:
                    low, high = series.window_min, series.window_max
                    series.window_min, series.window_max = math.inf, -math.inf
                point = HistogramPoint(
                    MappingProxyType(series.attributes), series.start_ns, now, series.count,
                    series.sum, low, high, tuple(series.counts),
                )  # fmt: skip
            points.append(point)
        return points

    def _reset(self) -> None:
        self._lock = threading.Lock()
        for series in self._series.values():
            series.reset()


def _hashable(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
        for key, value in attributes.items()
    }


class Histograms:
    """
    A set of perfkit-aggregated histograms, and the two ways they are read.

    Give it to :class:`~perfkit.observability.TimingMiddleware` and
    :func:`~perfkit.instrument_engine` as ``metrics=`` to take the OpenTelemetry
    SDK's ``record()`` off every request; then read it where the SDK's readers
    would have::

        histograms = Histograms()
        histograms.register()  # Prometheus: prometheus_client's default registry
        reader = PeriodicExportingMetricReader(histograms.exporter(OTLPMetricExporter()))
        app = TimingMiddleware(app, metrics=histograms)

    Series are named and labelled as the SDK's Prometheus and OTLP exporters
    name them, so dashboards and alert rules see no difference.

    Args:
        scope: The instrumentation scope's name (``otel_scope_name`` in Prometheus).
        version: The scope's version (default: perfkit's).
        max_series: Attribute sets per histogram before new ones are counted in one
            ``otel.metric.overflow="true"`` series (the SDK's limit is 2,000).

    .. versionadded:: 0.2.0
    """

    def __init__(
        self, *, scope: str = "perfkit", version: str | None = None, max_series: int = 2000
    ) -> None:
        if max_series < 1:
            raise ValueError(f"max_series must be at least 1, not {max_series!r}")
        if version is None:
            from perfkit import __version__  # noqa: PLC0415

            version = __version__
        self.scope = scope
        self.version = version
        self.max_series = max_series
        self._histograms: dict[str, Histogram] = {}
        self._lock = threading.Lock()
        _ALL.add(self)

    def histogram(
        self, name: str, *, buckets: Iterable[float], unit: str = "s", description: str = ""
    ) -> Histogram:
        """
        The histogram called *name*, made on first use.

        Raises:
            ValueError: *name* exists with other buckets or another unit, or the
                buckets are not finite and increasing.
        """
        if not _INSTRUMENT_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not an OpenTelemetry instrument name")
        if unit not in UNITS:
            raise ValueError(f"unit {unit!r}: one of {', '.join(UNITS)}")
        bounds = _checked_bounds(buckets)
        with self._lock:
            found = self._histograms.get(name)
            if found is None:
                cleaned = _NOT_IN_NAME.sub("_", name)
                clash = [o for o in self._histograms if _NOT_IN_NAME.sub("_", o) == cleaned]
                if clash:
                    raise ValueError(f"{name!r} and {clash[0]!r} are one name in Prometheus")
                found = self._histograms[name] = Histogram(
                    name, unit=unit, description=description, bounds=bounds,
                    max_series=self.max_series, owner=self,
                )  # fmt: skip
            elif found.bounds != bounds or found.unit != unit:
                raise ValueError(
                    f"histogram {name!r} exists with buckets {found.bounds!r} and unit "
                    f"{found.unit!r}: one name, one shape"
                )
            return found

    def __iter__(self) -> Iterator[Histogram]:
        return iter(list(self._histograms.values()))

    # -- Prometheus ---------------------------------------------------------------------

    def register(self, registry: CollectorRegistry | None = None) -> None:
        """
        Expose every histogram on a prometheus_client registry (default: the global one).

        Raises:
            ImportError: prometheus_client is not installed.
        """
        from prometheus_client import REGISTRY  # noqa: PLC0415

        (registry or REGISTRY).register(_PrometheusCollector(self))

    # -- OTLP ------------------------------------------------------------------------------

    def exporter(self, inner: MetricExporter) -> MetricExporter:
        """
        *inner* (an SDK ``MetricExporter``, such as OTLP's) sending these histograms
        along with whatever its reader collected from the SDK.

        Cumulative or delta, as *inner* prefers for histograms (a delta point's min
        and max are the series' since it began: the only ones kept). The SDK's reader
        exports only when the SDK has collected something itself:
        :func:`~perfkit.observability.instrument` on its meter provider makes sure.
        """
        return _make_exporter(self, inner)


_ALL: Final[weakref.WeakSet[Histograms]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held at the fork would never be released in the child, and the parent's counts
    # are the parent's to export: a forked worker starts from nothing.
    for histograms in list(_ALL):
        histograms._lock = threading.Lock()
        for histogram in histograms:
            histogram._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _PrometheusCollector:
    """prometheus_client's collector protocol: ``collect()`` yields metric families."""

    def __init__(self, histograms: Histograms) -> None:
        self.histograms = histograms

    def describe(self) -> list[Any]:
        return []  # unknown until collected: names may be added later

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import HistogramMetricFamily  # noqa: PLC0415

        owner = self.histograms
        scope = {"otel_scope_name": owner.scope, "otel_scope_schema_url": "",
                 "otel_scope_version": owner.version}  # fmt: skip
        for histogram in owner:
            points = histogram.collect()
            if not points:
                continue
            name = _NOT_IN_NAME.sub("_", histogram.name)
            les = [f"{bound}" for bound in histogram.bounds] + ["+Inf"]  # as the SDK writes them
            rows = []
            for point in points:
                labels = dict(scope)  # the point's own attributes win, as in the SDK's
                labels.update((_label_key(key), _label_value(value))
                              for key, value in point.attributes.items())  # fmt: skip
                rows.append((labels, point))
            # One family per name (a second would repeat its TYPE line): the union of the
            # label names, "" where a series has none, which Prometheus reads as absent.
            names = sorted({label for labels, _point in rows for label in labels})
            family = HistogramMetricFamily(
                name, histogram.description, labels=names, unit=UNITS[histogram.unit]
            )
            for labels, point in rows:
                family.add_metric(
                    [labels.get(label, "") for label in names],
                    _cumulative(les, point.bucket_counts),
                    point.sum,
                )
            yield family


def _label_key(key: str) -> str:
    if key and key[0].isdigit():
        key = "_" + key[1:]
    return _NOT_IN_LABEL.sub("_", key)


def _label_value(value: Any) -> str:
    """A label value as the SDK's Prometheus exporter writes it: JSON for what is not text."""
    if isinstance(value, str):
        return value
    return json.dumps(list(value) if isinstance(value, tuple) else value, default=str)


def _cumulative(les: list[str], counts: tuple[int, ...]) -> list[tuple[str, float]]:
    total = 0
    buckets = []
    for le, count in zip(les, counts, strict=True):
        total += count
        buckets.append((le, float(total)))
    return buckets


def _make_exporter(histograms: Histograms, inner: MetricExporter) -> MetricExporter:
    from opentelemetry.sdk.metrics import Histogram as SDKHistogram  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415
        AggregationTemporality,
        MetricExporter,
    )

    class _Exporter(MetricExporter):
        def __init__(self) -> None:
            # The reader asks the exporter for these; they are the inner one's.
            super().__init__(
                preferred_temporality=getattr(inner, "_preferred_temporality", None),
                preferred_aggregation=getattr(inner, "_preferred_aggregation", None),
            )
            temporality = (self._preferred_temporality or {}).get(SDKHistogram)
            self.delta = temporality == AggregationTemporality.DELTA
            self.sent: dict[tuple[str, frozenset[tuple[str, Any]]], HistogramPoint] = {}
            self.inner = inner

        def export(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            merged = _merged(histograms, metrics_data, self.delta, self.sent)
            return self.inner.export(merged, timeout_millis=timeout_millis, **kwargs)

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return self.inner.force_flush(timeout_millis=timeout_millis)

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)

        def __getattr__(self, name: str) -> Any:
            # Anything else the SDK asks of an exporter (its own metrics' provider, say).
            return getattr(self.inner, name)

    return _Exporter()


def _merged(
    histograms: Histograms,
    metrics_data: MetricsData,
    delta: bool,
    sent: dict[tuple[str, frozenset[tuple[str, Any]]], HistogramPoint],
) -> MetricsData:
    from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415
        AggregationTemporality,
        HistogramDataPoint,
        Metric,
        MetricsData,
        ResourceMetrics,
        ScopeMetrics,
    )
    from opentelemetry.sdk.metrics.export import Histogram as HistogramData  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope  # noqa: PLC0415

    temporality = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
    metrics = []
    for histogram in histograms:
        data_points = []
        for point in histogram.collect(window=delta):
            shown = point
            if delta:
                key = (histogram.name, frozenset(point.attributes.items()))
                before = sent.get(key)
                sent[key] = point
                if before is not None:
                    shown = _difference(point, before)
                if not shown.count:
                    continue
            data_points.append(
                HistogramDataPoint(
                    attributes=dict(shown.attributes),
                    start_time_unix_nano=shown.start_ns,
                    time_unix_nano=shown.time_ns,
                    count=shown.count,
                    sum=shown.sum,
                    bucket_counts=list(shown.bucket_counts),
                    explicit_bounds=list(histogram.bounds),
                    min=shown.min,
                    max=shown.max,
                )
            )
        if data_points:
            metrics.append(
                Metric(
                    name=histogram.name,
                    description=histogram.description,
                    unit=histogram.unit,
                    data=HistogramData(
                        data_points=data_points, aggregation_temporality=temporality
                    ),
                )
            )
    if not metrics:
        return metrics_data
    scope = InstrumentationScope(histograms.scope, histograms.version)
    resources = list(metrics_data.resource_metrics) if metrics_data else []
    if not resources:
        return MetricsData(
            [ResourceMetrics(Resource.create(), [ScopeMetrics(scope, metrics, "")], "")]
        )
    first = resources[0]
    scopes = list(first.scope_metrics)
    # The same scope twice would be one too many: OTLP's encoder keeps the last of equal scopes.
    for n, given in enumerate(scopes):
        if (given.scope.name, given.scope.version) == (scope.name, scope.version):
            scopes[n] = ScopeMetrics(given.scope, [*given.metrics, *metrics], given.schema_url)
            break
    else:
        scopes.append(ScopeMetrics(scope, metrics, ""))
    resources[0] = ResourceMetrics(first.resource, scopes, first.schema_url)
    return MetricsData(resources)


def _difference(now: HistogramPoint, before: HistogramPoint) -> HistogramPoint:
    """What *now* counted since *before* (its min and max are already the interval's)."""
    return HistogramPoint(
        now.attributes, before.time_ns, now.time_ns, now.count - before.count,
        now.sum - before.sum, now.min, now.max,
        tuple(a - b for a, b in zip(now.bucket_counts, before.bucket_counts, strict=True)),
    )  # fmt: skip
