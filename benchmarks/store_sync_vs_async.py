"""
Should the reference store have an async twin? Measure the read path both ways.

Runs the store's hot read (user by id) through the sync engine, as the store
does, and the same statement through perfkit's async engine, on SQLite
(aiosqlite) and PostgreSQL (psycopg async):

* sequential: median latency of one call;
* concurrent: total throughput of 8 workers (threads for sync, as FastAPI's
  threadpool runs sync routes; tasks for async).

Usage: ``python benchmarks/store_sync_vs_async.py [--calls N] [--postgres URL]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from perfkit import db
from perfkit.reference import Base, User, open_stores, seed

STMT = sa.select(User.id, User.username, User.email, User.created_at).where(
    User.id == sa.bindparam("key")
)
WORKERS = 8


def sync_numbers(url: str, calls: int) -> tuple[float, float]:
    with open_stores(url) as stores:
        for i in range(200):  # warm the pool and the statement cache
            stores.users.get_by_id(i % 1000 + 1)
        samples = []
        for i in range(calls):
            start = time.perf_counter()
            stores.users.get_by_id(i % 1000 + 1)
            samples.append(time.perf_counter() - start)
        barrier = threading.Barrier(WORKERS + 1)

        def work() -> None:
            barrier.wait()
            for i in range(calls // WORKERS):
                stores.users.get_by_id(i % 1000 + 1)

        threads = [threading.Thread(target=work) for _ in range(WORKERS)]
        for thread in threads:
            thread.start()
        start = time.perf_counter()
        barrier.wait()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
    return statistics.median(samples) * 1e6, (calls // WORKERS) * WORKERS / elapsed


async def async_numbers(url: str, calls: int) -> tuple[float, float]:
    engine = db.create_async_engine(url)

    async def one(key: int) -> None:
        async with engine.connect() as conn:
            (await conn.execute(STMT, {"key": key})).first()

    try:
        for i in range(200):
            await one(i % 1000 + 1)
        samples = []
        for i in range(calls):
            start = time.perf_counter()
            await one(i % 1000 + 1)
            samples.append(time.perf_counter() - start)

        async def work() -> None:
            for i in range(calls // WORKERS):
                await one(i % 1000 + 1)

        start = time.perf_counter()
        await asyncio.gather(*(work() for _ in range(WORKERS)))
        elapsed = time.perf_counter() - start
    finally:
        await engine.dispose()
    return statistics.median(samples) * 1e6, (calls // WORKERS) * WORKERS / elapsed


def run(label: str, url: str, calls: int) -> None:
    sync_median, sync_rate = sync_numbers(url, calls)
    async_median, async_rate = asyncio.run(async_numbers(url, calls))
    print(
        f"| {label} | {sync_median:.0f} µs | {async_median:.0f} µs "
        f"| {async_median / sync_median:.2f} | {sync_rate:,.0f}/s | {async_rate:,.0f}/s "
        f"| {async_rate / sync_rate:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--postgres", default="")
    args = parser.parse_args()
    print(
        "| database | sync median | async median | async/sync | sync 8 threads "
        "| async 8 tasks | async/sync |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        engine = db.create_engine(url)
        seed(engine, users=1000, bills=100, votes=1000)
        engine.dispose()
        run("SQLite", url, args.calls)
    if args.postgres:
        engine = db.create_engine(args.postgres)
        Base.metadata.drop_all(engine)
        seed(engine, users=1000, bills=100, votes=1000)
        engine.dispose()
        try:
            run("PostgreSQL", args.postgres, args.calls)
        finally:
            engine = db.create_engine(args.postgres)
            Base.metadata.drop_all(engine)
            engine.dispose()


if __name__ == "__main__":
    main()
