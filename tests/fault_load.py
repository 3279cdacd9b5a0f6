"""
Load on the real example API, served by uvicorn over HTTP, while the database misbehaves.

Writers cast votes on fresh (bill, user) pairs, a reader walks bills and pages; every
answer is recorded, so a test can compare what was acknowledged with what is stored.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn
from sqlalchemy.engine import Engine

from perfkit.reference import Vote

Pair = tuple[int, int]


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve *app* with uvicorn (h11, asyncio, no websockets) in a thread; yield its base URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        http="h11",
        loop="asyncio",
        ws="none",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class Report:
    """Everything the clients saw."""

    statuses: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    acknowledged: set[Pair] = field(default_factory=set)
    unknown: set[Pair] = field(default_factory=set)
    refused: set[Pair] = field(default_factory=set)
    successes: list[tuple[float, float]] = field(default_factory=list)  # (started, ended)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def count(self, status: int) -> int:
        return sum(n for (_kind, code, _err), n in self.statuses.items() if code == status)

    def server_errors(self) -> int:
        return sum(n for (_kind, code, _err), n in self.statuses.items() if code >= 500)

    def first_success_after(self, moment: float) -> float | None:
        """When the first request that started at or after *moment* succeeded."""
        ends = [end for start, end in self.successes if start >= moment]
        return min(ends) if ends else None

    def record(self, kind: str, response: httpx.Response, started: float) -> str:
        code = ""
        if response.status_code >= 400:
            try:
                code = str(response.json()["error"]["code"])
            except (ValueError, KeyError, TypeError):
                code = "not-json"
        with self.lock:
            self.statuses[kind, response.status_code, code] += 1
            if response.status_code < 400:
                self.successes.append((started, time.monotonic()))
        return code


def run_load(
    base: str,
    pairs: list[Pair],
    *,
    writers: int = 4,
    bills: int = 30,
    min_writes: int = 0,
    during: Callable[[], None] | None = None,
) -> Report:
    """
    Cast votes on *pairs* (split across *writers* threads, one vote per pair) while one
    thread reads. *during* runs in the main thread and causes the faults: the writers go
    on until it has returned and they have cast *min_writes* votes between them (or run
    out of pairs), so every fault happens under load whatever the machine's speed.
    """
    report = Report()
    faults_over = threading.Event()
    done = threading.Event()
    chunks = [pairs[i::writers] for i in range(writers)]
    quota = -(-min_writes // writers)

    def write(chunk: list[Pair]) -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            for i, (bill, user) in enumerate(chunk):
                if i >= quota and faults_over.is_set():
                    break
                started = time.monotonic()
                response = client.post(
                    f"/bills/{bill}/votes", json={"user_id": user, "choice": "yes"}
                )
                code = report.record("write", response, started)
                with report.lock:
                    if response.status_code == 201:
                        report.acknowledged.add((bill, user))
                    elif code == "commit_outcome_unknown":
                        report.unknown.add((bill, user))
                    else:
                        report.refused.add((bill, user))

    def read() -> None:
        paths = ["/bills?limit=20&page=3", "/bills/{n}", "/bills/{n}/votes/counts", "/users/{n}"]
        i = 0
        with httpx.Client(base_url=base, timeout=60) as client:
            while not done.is_set():
                path = paths[i % len(paths)].format(n=i % bills + 1)
                started = time.monotonic()
                report.record("read", client.get(path), started)
                i += 1

    threads = [threading.Thread(target=write, args=(chunk,)) for chunk in chunks]
    reader = threading.Thread(target=read)
    for thread in [*threads, reader]:
        thread.start()
    try:
        if during is not None:
            during()
    finally:
        faults_over.set()
        for thread in threads:
            thread.join()
        done.set()
        reader.join()
    return report


def stored_votes(engine: Engine) -> tuple[set[Pair], int]:
    """The (bill, user) pairs with a vote, and the number of vote rows."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(Vote.bill_id, Vote.user_id)).all()
    return {(int(b), int(u)) for b, u in rows}, len(rows)


def summary(name: str, report: Report, stored: set[Pair], rows: int, **extra: object) -> str:
    """One line for the log (and the issue's note)."""
    parts = [
        f"{name}: {report.requests} requests",
        f"{report.server_errors()} x 5xx ({report.count(500)} x 500, {report.count(503)} x 503)",
        f"{len(report.acknowledged)} writes acknowledged, {len(report.unknown)} unknown, "
        f"{len(report.refused)} refused",
        f"{rows} stored ({len(stored & report.acknowledged)} of the acknowledged)",
    ]
    parts += [f"{key} {value}" for key, value in extra.items()]
    return "; ".join(parts)
