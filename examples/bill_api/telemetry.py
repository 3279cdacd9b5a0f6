"""
The example API's OpenTelemetry setup: a Prometheus endpoint, and OTLP when configured.

perfkit itself only uses ``opentelemetry-api``; choosing an SDK, readers and
exporters is the application's job — this module is that job for the demo.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from perfkit.budgets import duration_buckets, load_budgets
from perfkit.observability import (
    HTTP_DURATION_BUCKETS,
    BufferedStreamHandler,
    Histograms,
    instrument,
    worker_resource,
)

__all__ = [
    "CONTENT_TYPE_LATEST",
    "histogram_buckets",
    "histograms",
    "meter_provider",
    "metrics_options",
    "prometheus_text",
    "tracing",
]

REPO_BUDGETS: Final = Path(__file__).resolve().parents[2] / "budgets.json"


def histogram_buckets() -> tuple[float, ...]:
    """
    The request histogram's boundaries: the semantic conventions' plus every latency
    threshold of ``PERFKIT_BUDGETS`` (default: the repository's ``budgets.json``, when
    there is one), so the alerts made from the same file count exactly.
    """
    path = os.environ.get("PERFKIT_BUDGETS") or (REPO_BUDGETS if REPO_BUDGETS.exists() else None)
    if path is None:
        return HTTP_DURATION_BUCKETS
    return duration_buckets(load_budgets(path))


@functools.cache
def meter_provider() -> MeterProvider:
    """
    The process's meter provider (made once): Prometheus always, OTLP over HTTP
    when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or its metrics variant) is set.
    """
    readers: list[MetricReader] = [PrometheusMetricReader()]
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
            OTLPMetricExporter,
        )

        exporter = OTLPMetricExporter()
        durations = histograms()
        readers.append(
            PeriodicExportingMetricReader(durations.exporter(exporter) if durations else exporter)
        )
    # Not installed as the global provider: libraries that instrument themselves
    # through the global one (FastAPI, redis-py) would then record twice.
    # No exemplars: nothing here samples traces, so the default trace-based filter finds no
    # span on any request, and looking costs a quarter of a cached hit (docs/benchmarks.md).
    provider = MeterProvider(
        metric_readers=readers,
        exemplar_filter=_exemplar_filter(),
        resource=worker_resource("bill_api"),
    )
    instrument(provider)  # cache, breaker and retry counters
    return provider


@functools.cache
def histograms() -> Histograms | None:
    """
    The request and statement durations, counted by perfkit and read where the SDK's
    readers read (the Prometheus registry, the OTLP push): the SDK's own ``record()`` is a
    third of a cached hit (docs/benchmarks.md). None where exemplars are wanted: only the
    SDK's histograms carry them.
    """
    if _exemplar_filter() is None or os.environ.get("PERFKIT_HISTOGRAMS") == "sdk":
        return None
    made = Histograms()
    made.register()  # prometheus_client's default registry, beside the SDK's reader
    return made


def metrics_options(provider: MeterProvider) -> dict[str, Any]:
    """``TimingMiddleware``'s and ``instrument_engine``'s metrics options for *provider*."""
    durations = histograms()
    if durations is not None:
        return {"metrics": durations}
    return {"meter_provider": provider}


def tracing() -> bool:
    """Whether traces are configured: a tracer provider set, or ``OTEL_TRACES_EXPORTER``."""
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    configured = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return configured or exporter not in ("", "none")


def _exemplar_filter() -> AlwaysOffExemplarFilter | None:
    """None (the SDK's choice: ``OTEL_METRICS_EXEMPLAR_FILTER``, else trace-based) with
    traces to point at; otherwise off."""
    if os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER") or tracing():
        return None
    return AlwaysOffExemplarFilter()


def prometheus_text() -> bytes:
    """The Prometheus exposition of every metric."""
    return generate_latest(REGISTRY)


def log_requests() -> None:
    """
    Write perfkit's one JSON line per request to stderr (in place of uvicorn's access log),
    in batches (at most 0.2 s late; warnings at once).
    """
    handler = BufferedStreamHandler()
    request_log = logging.getLogger("perfkit.request")
    request_log.addHandler(handler)
    request_log.setLevel(logging.INFO)
    request_log.propagate = False
