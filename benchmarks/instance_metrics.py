"""
What instance-wide metrics cost: a scrape of the example API under ``uvicorn --workers 4``
against the same scrape of one process's own registry (0.1's ``/metrics``), in one run; the
snapshot a worker writes each second; and the directory after 1,000 worker restarts.

Usage: ``PYTHONPATH=examples python benchmarks/instance_metrics.py [--scrapes 40]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from servers import free_port

ROUTES = ("/bills?limit=5", "/bills/1", "/users/1", "/bills/1/votes/counts", "/nowhere")


def serve(workers: int, database: str, directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PERFKIT_DATABASE_URL": database, "PERFKIT_METRICS_DIR": str(directory)}
    command = [sys.executable, "-m", "uvicorn", "bill_api.app:create_app", "--factory",
               "--port", str(port), "--ws", "none", "--log-level", "warning"]  # fmt: skip
    if workers > 1:
        command += ["--workers", str(workers)]
    server = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            if len(list(directory.glob("*.lock"))) >= workers:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return server, base


def scrape_times(base: str, scrapes: int) -> list[float]:
    for _ in range(300):  # fill every route's series on every worker
        for route in ROUTES:
            with httpx.Client(base_url=base) as client:
                client.get(route)
    times = []
    for _ in range(scrapes):
        with httpx.Client(base_url=base) as client:
            started = time.perf_counter()
            client.get("/metrics").raise_for_status()
            times.append(time.perf_counter() - started)
    return times


def restarts(count: int) -> list[tuple[int, int, int]]:
    """(restarts, files in the directory, archive bytes) at 10, 100 and *count*."""
    from prometheus_client import CollectorRegistry, Counter, Histogram  # noqa: PLC0415

    from perfkit.observability import InstanceMetrics  # noqa: PLC0415

    directory = Path(tempfile.mkdtemp(prefix="perfkit-restarts-"))
    rows = []
    for n in range(1, count + 1):
        pid = os.fork()
        if pid == 0:
            registry = CollectorRegistry()
            Counter("requests", "Requests", ["route"], registry=registry).labels("/a").inc()
            Histogram("latency", "Latency", registry=registry).observe(0.01)
            metrics = InstanceMetrics(directory=directory, registry=registry, interval=30)
            metrics.start()
            metrics.stop()
            os._exit(0)
        os.waitpid(pid, 0)
        if n in (10, 100, count):
            registry = CollectorRegistry()
            scraper = InstanceMetrics(directory=directory, registry=registry)
            scraper.start()
            scraper.exposition()
            scraper.stop()
            files = len(list(directory.iterdir()))
            rows.append((n, files, (directory / "archive.json").stat().st_size))
    return rows


def snapshot_cost() -> float:
    """Seconds one worker spends on a snapshot of the example's registry (in this process)."""
    from bill_api import telemetry  # noqa: PLC0415
    from perfkit.observability import InstanceMetrics  # noqa: PLC0415

    telemetry.meter_provider()  # the example's registry: SDK reader, histograms, process
    metrics = InstanceMetrics(directory=tempfile.mkdtemp(prefix="perfkit-snapshot-"))
    metrics.start()
    times = []
    for _ in range(200):
        started = time.perf_counter()
        metrics.snapshot()
        times.append(time.perf_counter() - started)
    metrics.stop()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scrapes", type=int, default=40)
    parser.add_argument("--restarts", type=int, default=1_000)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="perfkit-instance-"))
    database = f"sqlite:///{work / 'api.sqlite3'}"
    from bill_api.__main__ import seed_if_empty  # noqa: PLC0415

    seed_if_empty(database)
    results = {}
    for workers in (1, 4):
        server, base = serve(workers, database, work / f"metrics-{workers}")
        try:
            results[workers] = statistics.median(scrape_times(base, options.scrapes))
        finally:
            server.terminate()
            server.wait()
    print(f"scrape, 1 worker:  {results[1] * 1e3:.2f} ms (median of {options.scrapes})")
    print(f"scrape, 4 workers: {results[4] * 1e3:.2f} ms; ratio {results[4] / results[1]:.2f}")
    print(f"snapshot of one worker: {snapshot_cost() * 1e3:.2f} ms (median of 200), once a second")
    for n, files, size in restarts(options.restarts):
        print(f"after {n} restarts: {files} files in the directory, archive {size:,} bytes")


if __name__ == "__main__":
    main()
