"""
Request throughput under wrk on loopback: bare vs perfkit middleware vs OTel ASGI instrumentation.

Each variant runs in its own uvicorn process (one worker, pure-Python HTTP)
on 127.0.0.1 and is loaded with ``wrk -t1 -c16 -d<seconds>s``; variants are
interleaved over several rounds and the median requests/s is reported with
its ratio to bare, and the server's CPU time per request (from /proc). The
hello route is measured as Python starts by default, then with
``gc.freeze()`` after startup in every variant (see docs/benchmarks.md for
why the garbage collector matters here), then with one part of perfkit's
middleware on at a time. "perfkit, no-op sinks" has everything on but hands
its measurements to the API's no-op meter and its records to a
``NullHandler``: perfkit's own share of the cost. Last, the example API's
``GET /bills/42`` with perfkit's instrumentation off and on (PERFKIT_TIMING).

Needs ``wrk`` (Debian: ``apt-get install wrk``).
Usage: ``python benchmarks/middleware.py [--seconds N] [--rounds N]``
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
# Server and load generator on a core each, so they do not steal from each other.
_PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
PIN_SERVER = ["taskset", "-c", "0"] if _PIN else []
PIN_LOAD = ["taskset", "-c", "1"] if _PIN else []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of *pid* (Linux), or NaN where /proc is absent."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def serve(app: str, env: dict[str, str], probe: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    factory = ["--factory"] if app.endswith(":create_app") else []
    process = subprocess.Popen(
        [*PIN_SERVER, sys.executable, "-m", "uvicorn", app, *factory, "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + probe, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{app} did not start")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def wrk(url: str, seconds: int) -> tuple[float, int]:
    out = subprocess.run(
        [*PIN_LOAD, "wrk", "-t1", "-c16", f"-d{seconds}s", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if (
        match is None
        or count is None
        or "Non-2xx" in out
        or "errors" in out.lower().split("requests/sec")[0]
    ):
        raise SystemExit(f"wrk reported errors:\n{out}")
    return float(match.group(1)), int(count.group(1))


Variants = dict[str, tuple[str, dict[str, str], str]]


def compare(variants: Variants, seconds: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Median requests/s and median server CPU microseconds per request, per variant."""
    rates: dict[str, list[float]] = {name: [] for name in variants}
    costs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (app, env, path) in variants.items():
            with serve(app, env, path) as (url, pid):
                wrk(url + path, 1)  # warm up
                before = cpu_seconds(pid)
                rate, count = wrk(url + path, seconds)
                rates[name].append(rate)
                costs[name].append((cpu_seconds(pid) - before) / count * 1e6)
    return {
        name: (statistics.median(rates[name]), statistics.median(costs[name])) for name in variants
    }


def table(results: dict[str, tuple[float, float]], base: str) -> None:
    print(f"| variant | requests/s (median) | / {base} | server CPU per request |")
    print("|---|--:|--:|--:|")
    for name, (rate, cost) in results.items():
        print(f"| {name} | {rate:,.0f} | {rate / results[base][0]:.2f} | {cost:.0f} µs |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("\n(skipped: wrk is not installed; Debian: apt-get install wrk)")
        return
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT / "examples")])}
    with tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "requests.log")

        def hello_variants(**extra: str) -> Variants:
            def variant(name: str, **more: str) -> tuple[str, dict[str, str], str]:
                return (
                    "middleware_app:app",
                    {**env, **extra, "BENCH_VARIANT": name, **more},
                    "/hello",
                )

            return {
                "bare": variant("bare"),
                "perfkit": variant("perfkit", BENCH_LOG=log),
                "perfkit, no-op sinks": variant("perfkit", BENCH_SINKS="null"),
                "otel asgi": variant("otel"),
            }

        print(f"\n### Hello route, wrk -t1 -c16 -d{args.seconds}s, {args.rounds} rounds\n")
        table(compare(hello_variants(), args.seconds, args.rounds), "bare")
        print("\n### The same, with gc.freeze() after startup in every variant\n")
        table(compare(hello_variants(BENCH_FREEZE="1"), args.seconds, args.rounds), "bare")
        parts = {
            "bare": hello_variants()["bare"],
            **{
                f"perfkit, {part} only": (
                    "middleware_app:app",
                    {**env, "BENCH_VARIANT": "perfkit", "BENCH_LOG": log, "BENCH_PARTS": part},
                    "/hello",
                )
                for part in ("server_timing", "metrics", "log")
            },
        }
        print("\n### What each part costs (default GC)\n")
        table(compare(parts, args.seconds, args.rounds), "bare")
        logged = sum(1 for _ in open(log)) if os.path.exists(log) else 0  # noqa: SIM115
        print(f"\n(perfkit wrote {logged:,} JSON log lines to a file during its runs)")

        database = f"sqlite:///{Path(tmp) / 'api.sqlite3'}"
        api_env = {**env, "PERFKIT_DATABASE_URL": database}
        subprocess.run(
            [sys.executable, "-c",
             "import sys; from perfkit.reference import open_stores, seed;"
             "s = open_stores(sys.argv[1]); seed(s.engine)", database],
            check=True, env={**os.environ, **api_env},
        )  # fmt: skip
        api = compare(
            {
                "API, instrumentation off": (
                    "bill_api.app:create_app",
                    {**api_env, "PERFKIT_TIMING": "off"},
                    "/bills/42",
                ),
                "API, everything on": ("bill_api.app:create_app", api_env, "/bills/42"),
            },
            args.seconds,
            args.rounds,
        )
        print(f"\n### Example API GET /bills/42 (cached), wrk -t1 -c16 -d{args.seconds}s\n")
        table(api, "API, instrumentation off")


if __name__ == "__main__":
    main()
