"""
What retrying reads costs when nothing fails: a reference-store read by primary key on
SQLite, bare vs through ``perfkit.run_read`` vs through tenacity (the peer).

* wall clock: per-read microseconds, 7 interleaved rounds, medians;
* ``--instructions``: instructions per read under callgrind (repeatable on a noisy
  machine), each variant in a fresh process at N and 3N reads, the difference / 2N.

Usage: ``python benchmarks/read_retry.py [--instructions]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import tenacity
from sqlalchemy.engine import Connection, Engine

from perfkit import db, is_transient, run_read

sys.path.insert(0, str(Path(__file__).resolve().parent))
from callgrind import per_iteration

ROWS = 1_000
VARIANTS = ("bare", "run_read", "tenacity")
STMT = sa.text("SELECT id, title FROM bills WHERE id = :key")


def database(directory: str) -> Engine:
    engine = db.create_engine(f"sqlite:///{directory}/bench.sqlite3")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE bills (id INTEGER PRIMARY KEY, title TEXT)")
        conn.execute(
            sa.text("INSERT INTO bills VALUES (:id, :title)"),
            [{"id": i, "title": f"bill {i}"} for i in range(1, ROWS + 1)],
        )
    return engine


def readers(engine: Engine) -> dict[str, Callable[[int], Any]]:
    def query(key: int) -> Callable[[Connection], Any]:
        return lambda conn: conn.execute(STMT, {"key": key}).first()

    def bare(key: int) -> Any:
        with engine.connect() as conn:
            return conn.execute(STMT, {"key": key}).first()

    def through_run_read(key: int) -> Any:
        return run_read(engine.connect, query(key))

    peer = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(10) | tenacity.stop_after_delay(2),
        wait=tenacity.wait_random_exponential(multiplier=0.01, max=0.25),
        retry=tenacity.retry_if_exception(is_transient),
        reraise=True,
    )

    def through_tenacity(key: int) -> Any:
        return peer(bare, key)

    return {"bare": bare, "run_read": through_run_read, "tenacity": through_tenacity}


def wall_clock(rounds: int = 7, reads: int = 20_000) -> None:
    with tempfile.TemporaryDirectory() as directory:
        engine = database(directory)
        fns = readers(engine)
        samples: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(rounds):
            for name, fn in fns.items():  # interleaved: drift hits every variant alike
                started = time.perf_counter()
                for i in range(reads):
                    fn(i % ROWS + 1)
                samples[name].append((time.perf_counter() - started) / reads * 1e6)
        engine.dispose()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print("\n### Retried read, success path (wall clock)\n")
    print(f"{rounds} interleaved rounds of {reads:,} primary-key reads on SQLite; medians.\n")
    print("| read | µs per read | / bare | rounds from-to |")
    print("|---|--:|--:|--:|")
    for name, us in medians.items():
        spread = f"{min(samples[name]):.1f}-{max(samples[name]):.1f}"
        print(f"| {name} | {us:.2f} | {us / medians['bare']:.3f} | {spread} |")


def instructions(n: int = 2_000) -> None:
    counts = per_iteration(__file__, list(VARIANTS), n)
    print("\n### Retried read, success path (instructions, callgrind)\n")
    print(f"Instructions per read: (count at {3 * n:,} - count at {n:,}) / {2 * n:,}.\n")
    print("| read | instructions per read | added to bare | / bare |")
    print("|---|--:|--:|--:|")
    for name in VARIANTS:
        added = counts[name] - counts["bare"]
        ratio = counts[name] / counts["bare"]
        print(f"| {name} | {counts[name]:,.0f} | {added:+,.0f} | {ratio:.4f} |")


def child(variant: str, n: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        engine = database(directory)
        fn = readers(engine)[variant]
        for i in range(200):  # warm: statement cache, pool
            fn(i + 1)
        for i in range(n):
            fn(i % ROWS + 1)
        engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "N"))
    options = parser.parse_args()
    if options.child:
        child(options.child[0], int(options.child[1]))
    elif options.instructions:
        instructions()
    else:
        wall_clock()
