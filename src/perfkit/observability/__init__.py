"""
Observability: per-request timing middleware (ASGI and WSGI), query timing, OpenTelemetry metrics.

Only ``opentelemetry-api`` is used; configure an SDK (and an exporter) in the
application to collect what perfkit records.
"""

from __future__ import annotations

from perfkit._context import RequestTiming, current_timing

from ._histograms import Histogram, HistogramPoint, Histograms
from ._instance import InstanceMetrics, worker_resource
from ._log_buffer import BufferedStreamHandler
from ._metrics import DB_DURATION, HTTP_DURATION, HTTP_DURATION_BUCKETS, instrument
from ._middleware import TimingMiddleware, WSGITimingMiddleware
from ._sqlalchemy import instrument_engine

__all__ = [
    "DB_DURATION",
    "HTTP_DURATION",
    "HTTP_DURATION_BUCKETS",
    "BufferedStreamHandler",
    "Histogram",
    "HistogramPoint",
    "Histograms",
    "InstanceMetrics",
    "RequestTiming",
    "TimingMiddleware",
    "WSGITimingMiddleware",
    "current_timing",
    "instrument",
    "instrument_engine",
    "worker_resource",
]
