"""
Request throughput under wrk on loopback: bare vs perfkit middleware vs OTel ASGI instrumentation.

Each variant runs in its own uvicorn process (one worker, pure-Python HTTP)
on 127.0.0.1 and is loaded with ``wrk -t1 -c16 -d<seconds>s``; variants are
interleaved over several rounds and the median requests/s is reported with
its ratio to bare. Then the example API's ``GET /bills/42`` with perfkit's
instrumentation off and on (PERFKIT_TIMING).

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


@contextmanager
def serve(app: str, env: dict[str, str], probe: str) -> Iterator[str]:
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
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def wrk(url: str, seconds: int) -> float:
    out = subprocess.run(
        [*PIN_LOAD, "wrk", "-t1", "-c16", f"-d{seconds}s", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None or "Non-2xx" in out or "errors" in out.lower().split("requests/sec")[0]:
        raise SystemExit(f"wrk reported errors:\n{out}")
    return float(match.group(1))


def compare(
    variants: dict[str, tuple[str, dict[str, str], str]], seconds: int, rounds: int
) -> dict[str, float]:
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (app, env, path) in variants.items():
            with serve(app, env, path) as url:
                wrk(url + path, 1)  # warm up
                rates[name].append(wrk(url + path, seconds))
    return {name: statistics.median(values) for name, values in rates.items()}


def table(results: dict[str, float], base: str) -> None:
    print("| variant | requests/s (median) | / " + base + " |")
    print("|---|--:|--:|")
    for name, rate in results.items():
        print(f"| {name} | {rate:,.0f} | {rate / results[base]:.2f} |")


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
        hello = compare(
            {
                "bare": ("middleware_app:app", {**env, "BENCH_VARIANT": "bare"}, "/hello"),
                "perfkit": (
                    "middleware_app:app",
                    {**env, "BENCH_VARIANT": "perfkit", "BENCH_LOG": log},
                    "/hello",
                ),
                "perfkit, unbuffered log file": (
                    "middleware_app:app",
                    {**env, "BENCH_VARIANT": "perfkit", "BENCH_LOG": log, "BENCH_BUFFER": "0"},
                    "/hello",
                ),
                "otel asgi": ("middleware_app:app", {**env, "BENCH_VARIANT": "otel"}, "/hello"),
            },
            args.seconds,
            args.rounds,
        )
        print(f"\n### Hello route, wrk -t1 -c16 -d{args.seconds}s, {args.rounds} rounds\n")
        table(hello, "bare")
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
