"""
Streamed exports at 1,000,000 rows: rows/s and peak memory, against loading the listing whole.

One bill with 1,000,000 votes (SQLite file; PostgreSQL schema with ``--postgres``).
Each variant runs in a fresh process, so its peak resident memory (``VmHWM``) is its
own; "growth" is the peak minus the resident size just before the export began:

* ``keyset NDJSON``: ``stores.votes.export_by_bill`` (keyset batches of 1,000)
  through ``ndjson_chunks``, written to /dev/null;
* ``keyset CSV``: the same through ``csv_chunks``;
* ``load all``: the peer, what an export does without streaming: every row
  fetched into records, then one orjson array;
* ``HTTP NDJSON``: ``GET /bills/1/votes/export`` on the example API under uvicorn
  (httptools + uvloop when installed), read by a streaming httpx client; the
  memory is the server's.

Usage: ``python benchmarks/export.py [--rows N] [--postgres URL]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "examples")]

from perfkit import db  # noqa: E402
from perfkit.reference import Base, open_stores, seed  # noqa: E402


def _status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"VmRSS", "VmHWM"}:
            found[name] = int(value.split()[0])
    return found


def child(variant: str, url: str) -> None:
    """Run one variant in this process; print rows, seconds and memory as JSON."""
    import orjson  # noqa: PLC0415

    from perfkit.http import csv_chunks, ndjson_chunks  # noqa: PLC0415
    from perfkit.reference import Vote, VoteRecord  # noqa: PLC0415

    stores = open_stores(url, schema="none")
    stores.votes.counts(1)  # connect, warm the statement cache
    before = _status()["VmRSS"]
    started = time.perf_counter()
    rows = 0
    with open(os.devnull, "wb") as sink:
        if variant == "load all":
            stmt = sa.select(*Vote.__table__.c).where(Vote.bill_id == 1).order_by(Vote.id)
            with stores.engine.connect() as conn:
                records = [VoteRecord(*row) for row in conn.execute(stmt)]
            rows = len(records)
            sink.write(orjson.dumps(records))
        else:
            batches = stores.votes.export_by_bill(1)
            if variant == "keyset CSV":
                chunks = csv_chunks(batches, VoteRecord)
            else:
                chunks = ndjson_chunks(batches)
            for chunk in chunks:
                rows += chunk.count(b"\n")
                sink.write(chunk)
            rows -= variant == "keyset CSV"  # the header
    seconds = time.perf_counter() - started
    peak = _status()["VmHWM"]
    stores.close()
    result = {"rows": rows, "seconds": seconds, "peak_kb": peak, "growth_kb": peak - before}
    print(json.dumps(result))


def over_http(url: str) -> dict[str, float]:
    """The example API's export route under uvicorn, read by a streaming client."""
    import httpx  # noqa: PLC0415

    from servers import Config, installed, serve, uvicorn  # noqa: PLC0415

    fast = installed("httptools") and installed("uvloop")
    argv = uvicorn(
        "bill_api.app:create_app",
        http="httptools" if fast else "h11",
        loop="uvloop" if fast else "asyncio",
    )
    argv.append("--factory")
    config = Config("export", argv, "/healthz", env={"PERFKIT_DATABASE_URL": url})
    with serve(config) as (port, pid):  # taskset execs the server: the pid is the server's
        base = f"http://127.0.0.1:{port}"
        httpx.get(f"{base}/bills/1/votes/counts")  # open the stores' connections
        before = _status(pid)["VmRSS"]
        started = time.perf_counter()
        rows = 0
        headers = {"accept-encoding": "identity"}
        with httpx.stream("GET", f"{base}/bills/1/votes/export", headers=headers, timeout=600) as r:
            r.raise_for_status()
            for chunk in r.iter_bytes():
                rows += chunk.count(b"\n")
        seconds = time.perf_counter() - started
        peak = _status(pid)["VmHWM"]
    return {"rows": rows, "seconds": seconds, "peak_kb": peak, "growth_kb": peak - before}


@contextmanager
def database(rows: int, postgres: str | None) -> Iterator[str]:
    """A database with one bill that has *rows* votes (one per user)."""
    with tempfile.TemporaryDirectory() as tmp:
        if postgres is None:
            url = f"sqlite:///{Path(tmp) / 'export.sqlite3'}"
            admin = None
            schema = ""
        else:
            schema = f"perfkit_export_{uuid.uuid4().hex[:8]}"
            admin = db.create_engine(postgres)
            with admin.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            parsed = make_url(postgres).update_query_dict({"options": f"-csearch_path={schema}"})
            url = parsed.render_as_string(hide_password=False)
        engine = db.create_engine(url)
        try:
            Base.metadata.create_all(engine)
            seed(engine, users=rows, bills=1, votes=0)
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO votes (bill_id, user_id, choice, created_at) "
                    "SELECT 1, id, 'yes', created_at FROM users"
                )
                if postgres is not None:
                    conn.exec_driver_sql("ANALYZE")
            engine.dispose()
            yield url
        finally:
            engine.dispose()
            if admin is not None:
                with admin.begin() as conn:
                    conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
                admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", help="also on this PostgreSQL (a schema of its own)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(options.child, options.url)
        return
    targets: list[tuple[str, str | None]] = [("SQLite", None)]
    if options.postgres:
        targets.append(("PostgreSQL", options.postgres))
    print(f"One bill's {options.rows:,} votes; each variant in a fresh process.\n")
    print("| database | variant | rows/s | peak RSS (MB) | growth during the export (MB) |")
    print("|---|---|---|---|---|")
    for name, postgres in targets:
        with database(options.rows, postgres) as url:
            for variant in ("keyset NDJSON", "keyset CSV", "load all", "HTTP NDJSON"):
                if variant == "HTTP NDJSON":
                    result = over_http(url)
                else:
                    command = [sys.executable, __file__, "--child", variant, "--url", url]
                    out = subprocess.run(command, check=True, capture_output=True, text=True)
                    result = json.loads(out.stdout)
                assert result["rows"] == options.rows, result
                print(
                    f"| {name} | {variant} | {result['rows'] / result['seconds']:,.0f} "
                    f"| {result['peak_kb'] / 1024:,.0f} | {result['growth_kb'] / 1024:,.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
