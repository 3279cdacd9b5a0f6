"""
The hello app the middleware benchmark serves, in the variant named by ``BENCH_VARIANT``.

``bare``: FastAPI alone. ``perfkit``: perfkit's TimingMiddleware with
metrics (an OTel SDK MeterProvider with a Prometheus reader), the JSON log
line (to a file, through a QueueHandler unless BENCH_QUEUE=0) and
Server-Timing all on. ``otel``: OpenTelemetry's ASGI instrumentation with the
same meter provider, tracing off (metrics only).
"""

from __future__ import annotations

import logging
import os
from logging.handlers import QueueHandler, QueueListener
from queue import Queue

from fastapi import FastAPI
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider

from perfkit import TimingMiddleware

variant = os.environ.get("BENCH_VARIANT", "bare")
hello = FastAPI()


@hello.get("/hello")
def say_hello() -> dict[str, str]:
    return {"hello": "world"}


app: object = hello
if variant in ("perfkit", "otel"):
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    if variant == "perfkit":
        handler: logging.Handler = logging.FileHandler(os.environ.get("BENCH_LOG", os.devnull))
        handler.setFormatter(logging.Formatter("%(message)s"))
        if os.environ.get("BENCH_QUEUE", "1") == "1":
            # The logging cookbook's answer to blocking handlers: the request only
            # enqueues the record; a listener thread does the writing.
            queue: Queue[logging.LogRecord] = Queue()
            listener = QueueListener(queue, handler)
            listener.start()
            handler = QueueHandler(queue)
        request_log = logging.getLogger("perfkit.request")
        request_log.addHandler(handler)
        request_log.setLevel(logging.INFO)
        request_log.propagate = False
        app = TimingMiddleware(hello, meter_provider=provider)
    else:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.trace import NoOpTracerProvider

        app = OpenTelemetryMiddleware(
            hello, meter_provider=provider, tracer_provider=NoOpTracerProvider()
        )
