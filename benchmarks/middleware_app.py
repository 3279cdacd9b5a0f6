"""
The hello app the middleware benchmark serves, in the variant named by ``BENCH_VARIANT``.

``bare``: FastAPI alone. ``perfkit``: perfkit's TimingMiddleware with
metrics (an OTel SDK MeterProvider with a Prometheus reader), the JSON log
line (a FileHandler; a MemoryHandler in front with BENCH_BUFFER=1) and
Server-Timing all on; ``BENCH_PARTS`` (e.g. ``metrics,log``) keeps only the
parts named; ``BENCH_SINKS=null`` keeps everything on but hands the
measurements to the API's no-op meter and the records to a ``NullHandler``
(what perfkit's own code costs, without the SDK's and the handler's work).
``otel``: OpenTelemetry's ASGI instrumentation with the same meter provider,
tracing off (metrics only). Exemplars are off in both.
"""

from __future__ import annotations

import logging
import os
from logging.handlers import MemoryHandler

from fastapi import FastAPI
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import MeterProvider as APIMeterProvider
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider

from perfkit import TimingMiddleware

variant = os.environ.get("BENCH_VARIANT", "bare")
hello = FastAPI()


@hello.get("/hello")
def say_hello() -> dict[str, str]:
    return {"hello": "world"}


app: object = hello
if variant in ("perfkit", "otel"):
    # Exemplars tie measurements to traces; with tracing off they are pure cost.
    provider: APIMeterProvider = MeterProvider(
        metric_readers=[PrometheusMetricReader()], exemplar_filter=AlwaysOffExemplarFilter()
    )
    if variant == "perfkit":
        target = logging.FileHandler(os.environ.get("BENCH_LOG", os.devnull))
        target.setFormatter(logging.Formatter("%(message)s"))
        handler: logging.Handler = target
        if os.environ.get("BENCH_SINKS") == "null":
            # perfkit's own code alone: the API's no-op meter, and records dropped unread.
            provider = NoOpMeterProvider()
            handler = logging.NullHandler()
        elif os.environ.get("BENCH_BUFFER") == "1":
            # Batches of 256 writes: fewer syscalls, but the buffered records live long
            # enough for the garbage collector to promote them (slower overall, measured).
            handler = MemoryHandler(256, flushLevel=logging.ERROR, target=target)
        # The logging documentation's advice for speed: skip what the format never uses.
        logging.logThreads = False
        logging.logProcesses = False
        logging.logMultiprocessing = False
        request_log = logging.getLogger("perfkit.request")
        request_log.addHandler(handler)
        request_log.setLevel(logging.INFO)
        request_log.propagate = False
        parts = os.environ.get("BENCH_PARTS", "metrics,log,server_timing").split(",")
        app = TimingMiddleware(
            hello,
            meter_provider=provider,
            metrics="metrics" in parts,
            log="log" in parts,
            server_timing="server_timing" in parts,
        )
    else:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.trace import NoOpTracerProvider

        app = OpenTelemetryMiddleware(
            hello, meter_provider=provider, tracer_provider=NoOpTracerProvider()
        )

if os.environ.get("BENCH_FREEZE") == "1":
    import gc

    # Everything imported and built so far lives as long as the process: move it out of
    # the collector's sight, so full collections stop walking it on every pass.
    gc.freeze()
