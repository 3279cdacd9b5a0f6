"""
Pagination at depth: 1,000,000 bills on SQLite and PostgreSQL, in one process.

* offset page 1 vs the page at row ~999,980 (``paginate(count="none")``);
* keyset page 1 vs the page after row ~999,980 (``paginate_keyset``);
* the three count strategies on page 2 (exact COUNT, cached count hit, none);
* ``GET /bills?limit=20`` (the example app as it runs: cached count) vs a
  naive endpoint returning 100,000 bills, in requests/s through the ASGI app
  in process.

Medians of repeated runs; ratios against page 1 / the naive endpoint.
Usage: ``python benchmarks/pagination.py [--postgres URL] [--rows N]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from perfkit import Cache, MemoryBackend, db, paginate, paginate_keyset
from perfkit.pagination import CursorKeys
from perfkit.pagination._cursor import Cursor, encode_cursor
from perfkit.pagination._keyset import _plan
from perfkit.reference import Base, Bill, open_stores

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from bill_api.app import create_app

SECRET = "bench"
LIST = sa.select(Bill.id, Bill.title, Bill.status, Bill.created_at).order_by(
    Bill.created_at.desc(), Bill.id.desc()
)


def load(engine: sa.Engine, rows: int) -> float:
    """Create the schema and bulk-insert 1,000 users and *rows* bills; seconds taken."""
    started = time.perf_counter()
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000) "
                "INSERT INTO users (id, username, email, created_at) SELECT x, 'user' || x, "
                "'user' || x || '@example.org', '2020-01-01 00:00:00.000000' FROM n"
            )
            conn.exec_driver_sql(
                f"WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {rows}) "
                "INSERT INTO bills "
                "(id, title, summary, status, sponsor_id, created_at, updated_at) "
                "SELECT x, 'Bill No. ' || x, '', "
                "CASE x % 4 WHEN 0 THEN 'draft' WHEN 1 THEN 'introduced' WHEN 2 THEN 'passed' "
                "ELSE 'failed' END, x % 1000 + 1, "
                "datetime('2020-01-01', '+' || x || ' seconds') || '.000000', "
                "datetime('2020-01-01', '+' || x || ' seconds') || '.000000' FROM n"
            )
        else:
            conn.exec_driver_sql(
                "INSERT INTO users (id, username, email, created_at) SELECT x, 'user' || x, "
                "'user' || x || '@example.org', '2020-01-01' FROM generate_series(1, 1000) x"
            )
            conn.exec_driver_sql(
                "INSERT INTO bills "
                "(id, title, summary, status, sponsor_id, created_at, updated_at) "
                "SELECT x, 'Bill No. ' || x, '', "
                "(ARRAY['draft','introduced','passed','failed'])[mod(x, 4) + 1], mod(x, 1000) + 1, "
                "timestamptz '2020-01-01' + x * interval '1 second', "
                "timestamptz '2020-01-01' + x * interval '1 second' "
                f"FROM generate_series(1, {rows}) x"
            )
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('bills', 'id'), (SELECT max(id) FROM bills))"
            )
        conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


def median_ms(fn: Callable[[], Any], repeat: int = 25) -> float:
    fn()  # warm up
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def deep_cursor(conn: sa.Connection, row: int) -> str:
    """A next-cursor pointing after the *row*-th bill of the listing (as a client would hold)."""
    values = conn.execute(LIST.offset(row - 1).limit(1)).one()
    plan = _plan(LIST)
    sort = (values.created_at, values.id)
    return encode_cursor(
        Cursor("next", sort), fingerprint=plan.fingerprint, keys=CursorKeys(SECRET)
    )


def measure_queries(engine: sa.Engine, rows: int) -> list[tuple[str, float, str]]:
    deep_page = (rows - 20) // 20  # the page starting at row ~rows-20
    cache = Cache(MemoryBackend(), namespace="bench")
    out: list[tuple[str, float, str]] = []
    with engine.connect() as conn:
        cursor = deep_cursor(conn, deep_page * 20)
        off1 = median_ms(lambda: paginate(conn, LIST, page=1, limit=20, count="none"))
        off_deep = median_ms(lambda: paginate(conn, LIST, page=deep_page, limit=20, count="none"))
        key1 = median_ms(lambda: paginate_keyset(conn, LIST, limit=20, secret=SECRET))
        key_deep = median_ms(
            lambda: paginate_keyset(conn, LIST, limit=20, cursor=cursor, secret=SECRET)
        )
        exact = median_ms(lambda: paginate(conn, LIST, page=2, limit=20, count="exact"), 9)
        cached = median_ms(
            lambda: paginate(conn, LIST, page=2, limit=20, count="cached", cache=cache)
        )
        none = median_ms(lambda: paginate(conn, LIST, page=2, limit=20, count="none"))
    out.append(("offset, page 1", off1, "1.00"))
    out.append((f"offset, page {deep_page:,} (row ~{deep_page * 20:,})", off_deep,
                f"{off_deep / off1:,.0f}x page 1"))  # fmt: skip
    out.append(("keyset, page 1", key1, "1.00"))
    out.append(
        (f"keyset, after row {deep_page * 20:,}", key_deep, f"{key_deep / key1:.2f}x page 1")
    )
    out.append(("count exact (page 2)", exact, f"{exact / none:,.1f}x none"))
    out.append(("count cached, hit (page 2)", cached, f"{cached / none:.2f}x none"))
    out.append(("count none (page 2)", none, "1.00"))
    return out


def measure_endpoint(url: str, rows: int) -> tuple[float, float]:
    """Requests/s of GET /bills?limit=20 and of a naive GET of every bill."""
    # As the example app runs: reads cached in process, so page counts are cached too.
    stores = open_stores(url, schema="none", cache=Cache(MemoryBackend(), namespace="b"))
    app = create_app(stores=stores)

    @app.get("/naive/bills")
    def all_bills() -> list[dict[str, Any]]:  # what the seed plan's getAll() did
        with stores.engine.connect() as conn:
            return [
                {"id": r.id, "title": r.title, "status": r.status.value,
                 "created_at": r.created_at.isoformat()}
                for r in conn.execute(LIST.limit(rows))
            ]  # fmt: skip

    async def rate(path: str, seconds: float) -> float:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            await client.get(path)
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                response = await client.get(path)
                assert response.status_code == 200, response.text
                done += 1
            return done / (time.perf_counter() - started)

    try:
        paginated = asyncio.run(rate("/bills?limit=20", 3))
        naive = asyncio.run(rate("/naive/bills", 8))
    finally:
        stores.close()
    return paginated, naive


def run(label: str, url: str, rows: int) -> None:
    engine = db.create_engine(url)
    try:
        seconds = load(engine, rows)
        print(f"\n### {label}: {rows:,} bills (loaded in {seconds:.1f} s)\n")
        print("| query | median | ratio |")
        print("|---|--:|--:|")
        for name, ms, ratio in measure_queries(engine, rows):
            print(f"| {name} | {ms:.3f} ms | {ratio} |")
        # The endpoint comparison uses the first 100,000 bills for the naive list.
        paginated, naive = measure_endpoint(url, 100_000)
        print(
            f"\n`GET /bills?limit=20`: {paginated:,.0f} req/s; naive list of 100,000 bills: "
            f"{naive:,.2f} req/s; ratio {paginated / naive:,.0f}x"
        )
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", default="")
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run("SQLite", f"sqlite:///{Path(tmp) / 'pages.sqlite3'}", args.rows)
    if args.postgres:
        schema = f"bench_pages_{uuid.uuid4().hex[:8]}"
        admin = db.create_engine(args.postgres)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = sa.make_url(args.postgres).update_query_dict({"options": f"-csearch_path={schema}"})
        try:
            run("PostgreSQL", url.render_as_string(hide_password=False), args.rows)
        finally:
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            admin.dispose()


if __name__ == "__main__":
    main()
