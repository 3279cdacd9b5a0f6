"""
What the timing middleware costs per request, in instructions counted by valgrind's callgrind.

Wall-clock throughput on a shared two-core host moves by ±5% (often more)
from run to run, as much as the gap ``benchmarks/middleware.py`` tries to
measure. Instruction counts do not: the same program with the same input
counts the same, whatever else the machine is doing. So this script counts.

Each row runs a fresh Python under callgrind twice, serving *N* and *3N*
requests to an ``async def`` hello route in-process (one ASGI call per
request, no server, no thread hop); the difference divided by *2N* is the
count per request, free of start-up. The rows add perfkit's parts one at a
time with sinks that do nothing (the API's no-op meter, a ``NullHandler``),
then with real ones (an SDK ``MeterProvider`` with a Prometheus reader and
exemplars off, a ``FileHandler``), then OpenTelemetry's ASGI
instrumentation. Two rows count pieces outside perfkit's code: one SDK
``Histogram.record()`` with the four semconv attributes, and what h11 (the
pure-Python HTTP server uvicorn falls back to) spends writing the two
headers perfkit adds. ``--server`` also counts whole requests through
uvicorn under ``wrk`` (counters zeroed after a warm-up).

Needs valgrind (Debian: ``apt-get install valgrind``); ``--server`` also wrk.
Usage: ``python benchmarks/middleware_instructions.py [--requests N] [--server]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from typing import Any

import callgrind

ROOT = callgrind.ROOT
# String hashing is salted per process, so dict and set layouts, and with them the
# counts, would move a little from run to run: fix the salt.
_FIXED_HASHES = callgrind.FIXED_HASHES

# name -> (child variant, the row it is compared with)
ROWS: dict[str, tuple[str, str | None]] = {
    "bare (FastAPI, async route)": ("bare", None),
    "perfkit, every part off": ("off", "bare"),
    "… + Server-Timing only": ("server_timing", "off"),
    "… + log line only (NullHandler)": ("log", "off"),
    "… + metrics only (no-op meter)": ("metrics", "off"),
    "perfkit, everything on, no-op sinks": ("null", "bare"),
    "perfkit, everything on, SDK + FileHandler": ("on", "bare"),
    "OTel ASGI instrumentation (metrics only)": ("otel", "bare"),
    "SDK Histogram.record(), 4 attributes": ("record", "loop"),
    "h11 response with perfkit's 2 headers": ("h11_more", "h11"),
}


def _hello() -> Any:
    from fastapi import FastAPI  # noqa: PLC0415

    app = FastAPI()

    @app.get("/hello")
    async def say_hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def _sdk_provider() -> Any:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider  # noqa: PLC0415

    return MeterProvider(
        metric_readers=[PrometheusMetricReader()], exemplar_filter=AlwaysOffExemplarFilter()
    )


def _logger(handler: logging.Handler) -> logging.Logger:
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("bench.request")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def _asgi_loop(app: Any) -> Callable[[int], None]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/hello", "raw_path": b"/hello", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: dict[str, Any]) -> None:
        return None

    async def serve(count: int) -> None:
        for _ in range(count):
            await app(dict(scope), receive, send)

    return lambda count: asyncio.run(serve(count))


def _child(variant: str) -> Callable[[int], None]:
    from opentelemetry.metrics import NoOpMeterProvider  # noqa: PLC0415

    from perfkit import TimingMiddleware  # noqa: PLC0415

    def null_sinks() -> dict[str, Any]:
        return {"meter_provider": NoOpMeterProvider(), "logger": _logger(logging.NullHandler())}

    if variant == "bare":
        return _asgi_loop(_hello())
    if variant == "off":
        return _asgi_loop(TimingMiddleware(_hello(), metrics=False, log=False, server_timing=False))
    if variant in ("server_timing", "log", "metrics"):
        only = TimingMiddleware(
            _hello(),
            server_timing=variant == "server_timing",
            log=variant == "log",
            metrics=variant == "metrics",
            **null_sinks(),
        )
        return _asgi_loop(only)
    if variant == "null":
        return _asgi_loop(TimingMiddleware(_hello(), **null_sinks()))
    if variant == "on":
        handler = logging.FileHandler(os.devnull)
        return _asgi_loop(
            TimingMiddleware(_hello(), meter_provider=_sdk_provider(), logger=_logger(handler))
        )
    if variant == "otel":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware  # noqa: PLC0415
        from opentelemetry.trace import NoOpTracerProvider  # noqa: PLC0415

        return _asgi_loop(
            OpenTelemetryMiddleware(
                _hello(), meter_provider=_sdk_provider(), tracer_provider=NoOpTracerProvider()
            )
        )
    if variant in ("record", "loop"):
        from opentelemetry.context import get_current  # noqa: PLC0415

        record = (
            _sdk_provider().get_meter("bench").create_histogram("bench.duration", unit="s").record
        )
        attributes = {
            "http.request.method": "GET", "http.response.status_code": 200,
            "url.scheme": "http", "http.route": "/hello",
        }  # fmt: skip

        def records(count: int) -> None:
            for _ in range(count):
                record(0.0003, attributes, get_current())

        def loop(count: int) -> None:
            for _ in range(count):
                get_current()

        return records if variant == "record" else loop
    if variant in ("h11", "h11_more"):
        import h11  # noqa: PLC0415

        headers = [
            (b"content-length", b"17"), (b"content-type", b"application/json"),
            (b"date", b"Sun, 22 Nov 2026 10:00:00 GMT"), (b"server", b"uvicorn"),
        ]  # fmt: skip
        if variant == "h11_more":
            headers += [
                (b"x-request-id", b"0123456789abcdef00000001"),
                (b"server-timing",
                 b'app;dur=0.41, db;dur=0.00;desc="0 queries", cache;desc="0 hits/0 misses"'),
            ]  # fmt: skip

        def responses(count: int) -> None:
            for _ in range(count):
                connection = h11.Connection(h11.SERVER)
                connection.receive_data(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
                connection.next_event()
                connection.send(h11.Response(status_code=200, headers=headers))

        return responses
    raise SystemExit(f"unknown variant {variant!r}")


def count_program(variant: str, requests: int) -> int:
    """Instructions one child process runs serving *requests* requests of *variant*."""
    return callgrind.count(__file__, "--child", variant, "--requests", str(requests))


def count_all(variants: list[str], requests: int) -> dict[str, float]:
    """
    Instructions per request of each variant: (count at 3N - count at N) / 2N.

    The children run side by side, one per core: counts do not depend on timing.
    """
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        short = {v: pool.submit(count_program, v, requests) for v in variants}
        long = {v: pool.submit(count_program, v, 3 * requests) for v in variants}
        return {v: (long[v].result() - short[v].result()) / (2 * requests) for v in variants}


def count_server(variant: str, seconds: int) -> float:
    """Instructions per request of uvicorn (h11) serving middleware_app.py's *variant* under wrk."""
    from servers import Config, count_instructions  # noqa: PLC0415 - this script's directory

    argv = [sys.executable, "-m", "uvicorn", "middleware_app:app", "--host", "127.0.0.1",
            "--port", "{port}", "--log-level", "warning", "--no-access-log"]  # fmt: skip
    config = Config(variant, argv, "/hello", env={"BENCH_VARIANT": variant})
    return count_instructions(config, seconds).per_request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--server", action="store_true", help="also count through uvicorn + wrk")
    parser.add_argument("--seconds", type=int, default=20, help="wrk duration with --server")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run = _child(args.child)
        run(200)  # warm: the first requests import and build what later ones reuse
        run(args.requests)
        return
    if shutil.which("valgrind") is None:
        print("\n(skipped: valgrind is not installed; Debian: apt-get install valgrind)")
        return
    print(
        f"\nopentelemetry-sdk {version('opentelemetry-sdk')}, h11 {version('h11')}, "
        f"Python {sys.version.split()[0]}; {args.requests:,} and {3 * args.requests:,} "
        "requests per row\n"
    )
    print("| variant | instructions per request | added |")
    print("|---|--:|--:|")
    variants = {variant for variant, against in ROWS.values()}
    variants |= {against for _, against in ROWS.values() if against is not None}
    counted = count_all(sorted(variants), args.requests)
    for name, (variant, against) in ROWS.items():
        added = "" if against is None else f"+{counted[variant] - counted[against]:,.0f}"
        print(f"| {name} | {counted[variant]:,.0f} | {added} |", flush=True)
    if args.server:
        if shutil.which("wrk") is None:
            print("\n(--server skipped: wrk is not installed; Debian: apt-get install wrk)")
            return
        print(f"\n### Through uvicorn under wrk -t1 -c16 -d{args.seconds}s\n")
        print("| variant | instructions per request | bare / variant |")
        print("|---|--:|--:|")
        bare = count_server("bare", args.seconds)
        print(f"| bare | {bare:,.0f} | 1.00 |", flush=True)
        for variant in ("perfkit", "otel"):
            count = count_server(variant, args.seconds)
            print(f"| {variant} | {count:,.0f} | {bare / count:.3f} |", flush=True)


if __name__ == "__main__":
    main()
