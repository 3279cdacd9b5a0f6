"""
Slow clients and exports: other requests' latency while 200 clients open ``GET /bills/export``
and never read, with the per-worker export limit (``PERFKIT_EXPORTS=4``, the default) and
without it (``PERFKIT_EXPORTS=0``, 0.1's behaviour), in one run.

Usage: ``PYTHONPATH=examples python benchmarks/slow_clients.py [--seconds 8] [--clients 200]``
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from servers import free_port


def serve(database: str, exports: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "PERFKIT_DATABASE_URL": database, "PERFKIT_EXPORTS": str(exports)}
    command = [sys.executable, "-m", "uvicorn", "bill_api.app:create_app", "--factory",
               "--port", str(port), "--ws", "none", "--log-level", "critical"]  # fmt: skip
    server = subprocess.Popen(command, env=env)
    for _ in range(600):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    return server, port


def latencies(port: int, seconds: float) -> list[float]:
    """One client, one request after another, for *seconds*: each request's latency."""
    rng = random.Random(1)
    out: list[float] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            path = f"/bills/{rng.randint(1, 500)}" if rng.random() < 0.5 else "/bills?limit=20"
            started = time.perf_counter()
            client.get(path)
            out.append(time.perf_counter() - started)
    return out


def never_read(port: int, clients: int) -> list[socket.socket]:
    sockets = []
    for _ in range(clients):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /bills/export HTTP/1.1\r\nHost: api\r\n\r\n")
        sockets.append(sock)
    return sockets


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=200)
    options = parser.parse_args()
    from bill_api.__main__ import seed_if_empty  # noqa: PLC0415

    database = f"sqlite:///{Path(tempfile.mkdtemp(prefix='perfkit-slow-')) / 'api.sqlite3'}"
    seed_if_empty(database)
    for exports in (0, 4):
        server, port = serve(database, exports)
        try:
            latencies(port, 2)  # warm: caches, pools
            alone = latencies(port, options.seconds)
            held = never_read(port, options.clients)
            loaded = latencies(port, options.seconds)
            for sock in held:
                sock.close()
        finally:
            server.terminate()
            server.wait()
        label = "unbounded (0.1)" if exports == 0 else f"{exports} at once per worker"
        ratio = quantile(loaded, 0.99) / quantile(alone, 0.99)
        print(
            f"exports {label}: alone p50 {quantile(alone, 0.5) * 1e3:.1f} ms, p99 "
            f"{quantile(alone, 0.99) * 1e3:.1f} ms ({len(alone)} requests); with "
            f"{options.clients} clients that never read: p50 {quantile(loaded, 0.5) * 1e3:.1f} "
            f"ms, p99 {quantile(loaded, 0.99) * 1e3:.1f} ms, max {max(loaded) * 1e3:.0f} ms "
            f"({len(loaded)} requests); p99 ratio {ratio:.2f}"
        )


if __name__ == "__main__":
    main()
