"""
Where a cached request of the example API goes, in instructions (callgrind).

``GET /bills/42`` through the whole app as a server calls it (FastAPI's entry, the
response cache, the timing middleware, the request log line), in process, on the
seeded SQLite file of ``benchmarks/http_stack.py``: (count at 3N - count at N) / 2N,
so startup cancels out, of the main thread only (the app's relay and webhook worker poll on
timers in threads of their own; the log flusher's writes, a few hundred a line, are left out
with them). Variants take one part out at a time:

* ``before``: exemplars and FastAPI's tracing and logs telemetry on, as the example had
  them before they were turned off where no traces are configured;
* ``sdk``: the durations recorded by the OpenTelemetry SDK's ``Histogram.record``, as the
  example did before it counted them in ``perfkit.observability.Histograms``;
* ``no_record``: the same, with the SDK's ``record`` made a no-op;
* ``now``: the example as ``make demo`` runs it (``Histograms``);
* ``no_log``: without the request log line;
* ``timing_off``: without the timing middleware.

``--server`` counts whole requests instead: each config of ``benchmarks/http_stack.py`` that
the HTTP-layer targets compare, served by uvicorn (httptools + uvloop) under callgrind and
wrk (``servers.count_instructions``), with the ratios of the targets in instructions (user
space only: stricter than the wall-clock ratios, whose kernel share is the same for all). What
the server runs while idle (the example's relay and webhook worker polling on timers) is counted
apart and taken out: under valgrind it falls on ~40 times as few requests as it really does.

Usage: ``python benchmarks/http_stack_instructions.py [--requests N] [--server [--seconds N]]``
(about 4 minutes; ``--server`` about 15 more).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

import callgrind

VARIANTS = ["before", "sdk", "no_record", "now", "no_log", "timing_off"]
DATABASE = callgrind.ROOT / "var" / "bench-http.sqlite3"


def child(variant: str, requests: int) -> None:
    sys.path.insert(0, str(callgrind.ROOT / "examples"))
    os.environ["PERFKIT_DATABASE_URL"] = f"sqlite:///{DATABASE}"
    if variant == "no_log":
        os.environ["PERFKIT_REQUEST_LOG"] = "off"
    if variant == "timing_off":
        os.environ["PERFKIT_TIMING"] = "off"
    from bill_api import telemetry  # noqa: PLC0415

    if variant == "before":
        telemetry.tracing = lambda: True  # type: ignore[assignment]
    if variant in {"sdk", "no_record"}:
        telemetry.histograms = lambda: None  # type: ignore[assignment]
    if variant == "no_record":
        from opentelemetry.sdk.metrics._internal import instrument  # noqa: PLC0415

        instrument._Histogram.record = lambda *_args, **_kwargs: None  # type: ignore[method-assign]
    import http_stack_app  # noqa: PLC0415

    app = http_stack_app.create()
    for handler in logging.getLogger("perfkit.request").handlers:
        handler.stream = open(os.devnull, "w")  # type: ignore[attr-defined]  # noqa: SIM115
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/bills/42", "raw_path": b"/bills/42", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk")],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: dict[str, Any]) -> None:
        return None

    async def run() -> None:
        async with app.router.lifespan_context(app):
            for _ in range(200):  # warm: the entry is cached, every lazy import done
                await app(dict(scope), receive, send)
            for _ in range(requests):
                await app(dict(scope), receive, send)

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--server", action="store_true", help="count through uvicorn + wrk")
    parser.add_argument("--seconds", type=int, default=10, help="wrk seconds with --server")
    options = parser.parse_args()
    if options.child:
        child(options.child[0], int(options.child[1]))
        return
    DATABASE.parent.mkdir(exist_ok=True)
    sys.path.insert(0, str(callgrind.ROOT / "examples"))
    import http_stack_app  # noqa: PLC0415

    http_stack_app.seeded(f"sqlite:///{DATABASE}")  # before the children: they would race
    if options.server:
        server(options.seconds)
        return
    counts = callgrind.per_iteration(__file__, VARIANTS, options.requests, main_thread=True)
    print("| variant | instructions per cached request |")
    print("|---|--:|")
    for variant in VARIANTS:
        print(f"| {variant} | {counts[variant]:,.0f} |")


SERVER_CONFIGS = [
    "raw ASGI, same bytes", "example, cached", "example, cached, SDK histograms",
    "example, cached, no request log", "example, cached, timing off", "example, cached, 304",
    "page, cached, identity", "page, cached, gzip", "page, cached, br",
]  # fmt: skip


def server(seconds: int) -> None:
    """Instructions per request of each config in a uvicorn server, and the targets' ratios."""
    import http_stack  # noqa: PLC0415 - this script's directory
    from servers import count_instructions  # noqa: PLC0415

    configs = {config.label: config for config in http_stack.configs()}
    counts, idle = {}, {}
    for label in SERVER_CONFIGS:
        found = count_instructions(configs[label], seconds)
        counts[label], idle[label] = found.per_request, found
        print(f"  {label}: {found}", file=sys.stderr, flush=True)
    raw, cached = counts["raw ASGI, same bytes"], counts["example, cached"]
    identity = counts["page, cached, identity"]
    print(
        "| config (uvicorn, httptools + uvloop) | instructions per request | raw / config "
        "| idle, per second | idle, per request under valgrind (not counted) |"
    )
    print("|---|--:|--:|--:|--:|")
    for label in SERVER_CONFIGS:
        print(
            f"| {label} | {counts[label]:,.0f} | {raw / counts[label]:.2f}x "
            f"| {idle[label].idle_per_second:,.0f} | {idle[label].idle_per_request:,.0f} |"
        )
    print()
    print(f"- cached GET /bills/42 vs raw ASGI: {raw / cached:.2f}x (target >= 0.5)")
    print(f"- 304 vs cached 200: {cached / counts['example, cached, 304']:.2f}x (target >= 1.0)")
    gzip, brotli = counts["page, cached, gzip"] / identity, counts["page, cached, br"] / identity
    print(f"- compressed hit cost vs uncompressed, gzip: {gzip:.2f}x, br: {brotli:.2f}x (<= 1.2)")


if __name__ == "__main__":
    main()
