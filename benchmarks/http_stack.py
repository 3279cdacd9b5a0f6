"""
The example API's HTTP stack under wrk: a cached GET against a raw ASGI app
sending the same bytes, against the same route with every cache off, the 304
path, and compressed against uncompressed hits.

Every config runs on the same server settings: uvicorn on httptools + uvloop
(what ``make demo`` runs), one worker, access log off, pinned to core 0; wrk
``-t1 -c16`` on core 1 (``benchmarks/servers.py`` is the harness: fresh
server per run, warm-up, configs interleaved, medians over rounds). The
example runs as ``make demo`` does, on a seeded SQLite file with the
per-request JSON log line on (written to a file), the timing middleware, the
response cache and the data cache; "every cache off" is ``PERFKIT_CACHE=off``.

The raw app sends exactly the body ``GET /bills/42`` answers, read from the
running example once before measuring.

Usage: ``python benchmarks/http_stack.py [--seconds N] [--rounds N]``
"""

from __future__ import annotations

import argparse
import http.client
import sys

from servers import ROOT, Config, Result, measure, serve

DATABASE = ROOT / "var" / "bench-http.sqlite3"
BODY_FILE = ROOT / "var" / "bench-http-bill.json"
BILL = "/bills/42"
PAGE = "/bills?page=1&limit=20"


def _server(app: str, *, factory: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "{port}"]
    argv += ["--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
    return [*argv, "--factory"] if factory else argv


EXAMPLE = _server("http_stack_app:create", factory=True)
ENV = {"PERFKIT_DATABASE_URL": f"sqlite:///{DATABASE}", "PERFKIT_RAW_BODY": str(BODY_FILE)}


NO_LOG = {"PERFKIT_REQUEST_LOG": "off"}
NO_TIMING = {"PERFKIT_TIMING": "off"}


def _fetch(path: str, headers: dict[str, str] | None = None) -> tuple[bytes, str]:
    """The body and ETag the example answers *path* with (a server of its own)."""
    probe = Config("probe", EXAMPLE, path, env=ENV)
    with serve(probe) as (port, _):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        etag = response.getheader("etag") or ""
        connection.close()
    return body, etag


def configs() -> list[Config]:
    body, etag = _fetch(BILL)
    BODY_FILE.write_bytes(body)
    _, page_etag = _fetch(PAGE, {"accept-encoding": "gzip"})
    return [
        Config("raw ASGI, same bytes", _server("http_apps:raw_file"), BILL, env=ENV),
        Config("example, cached", EXAMPLE, BILL, env=ENV),
        Config("example, every cache off", EXAMPLE, BILL, env={**ENV, "PERFKIT_CACHE": "off"}),
        # Where the cached request's time goes: without the log line, without the timing.
        Config(
            "example, cached, SDK histograms",
            EXAMPLE,
            BILL,
            env={**ENV, "PERFKIT_HISTOGRAMS": "sdk"},
        ),
        Config("example, cached, no request log", EXAMPLE, BILL, env={**ENV, **NO_LOG}),
        Config("example, cached, timing off", EXAMPLE, BILL, env={**ENV, **NO_TIMING}),
        Config(
            "example, cached, 304", EXAMPLE, BILL, (f"If-None-Match: {etag}",), env=ENV, status=304
        ),
        Config("page, cached, identity", EXAMPLE, PAGE, ("Accept-Encoding: identity",), env=ENV),
        Config("page, cached, gzip", EXAMPLE, PAGE, ("Accept-Encoding: gzip",), env=ENV),
        Config("page, cached, br", EXAMPLE, PAGE, ("Accept-Encoding: br",), env=ENV),
        Config(
            "page, cached, gzip, 304",
            EXAMPLE,
            PAGE,
            ("Accept-Encoding: gzip", f"If-None-Match: {page_etag}"),
            env=ENV,
            status=304,
        ),
    ]


def table(results: list[Result]) -> str:
    by = {r.config.label: r for r in results}
    raw = by["raw ASGI, same bytes"].median("requests_per_second")
    cached = by["example, cached"].median("requests_per_second")
    page = by["page, cached, identity"].median("requests_per_second")
    rows = [
        "| config | req/s | vs raw | vs cached | p50 ms | p99 ms | server CPU/req |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for result in results:
        rate = result.median("requests_per_second")
        base = page if result.config.path == PAGE else cached
        rows.append(
            f"| {result.config.label} | {rate:,.0f} | {rate / raw:.2f}x | {rate / base:.2f}x "
            f"| {result.median('p50_ms'):.2f} | {result.median('p99_ms'):.2f} "
            f"| {result.median('server_cpu_us'):.0f} us |"
        )
    off = by["example, every cache off"].median("requests_per_second")
    not_modified = by["example, cached, 304"].median("requests_per_second")
    gzip = by["page, cached, gzip"].median("requests_per_second")
    brotli = by["page, cached, br"].median("requests_per_second")
    rows += [
        "",
        f"- cached GET {BILL} vs raw ASGI: {cached / raw:.2f}x (target >= 0.5)",
        f"- cached vs every cache off: {cached / off:.2f}x (target >= 5)",
        f"- 304 vs cached 200: {not_modified / cached:.2f}x (target >= 1.0)",
        f"- compressed hit cost vs uncompressed, gzip: {page / gzip:.2f}x, br: "
        f"{page / brotli:.2f}x (time per request; target <= 1.2)",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    DATABASE.parent.mkdir(exist_ok=True)
    print(table(measure(configs(), rounds=args.rounds, seconds=args.seconds)))


if __name__ == "__main__":
    main()
