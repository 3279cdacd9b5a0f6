"""
Run the demo: seed the SQLite demo database if it is empty, then serve the API.

``python -m bill_api`` (with ``examples/`` on ``sys.path``; ``make demo`` does it).
Honours ``PERFKIT_DATABASE_URL``, ``PERFKIT_HOST`` (127.0.0.1) and ``PERFKIT_PORT`` (8000).
"""

from __future__ import annotations

import os

import sqlalchemy as sa
import uvicorn

from bill_api import telemetry
from bill_api.app import DEFAULT_DATABASE_URL, DEMO_DATABASE, create_app
from perfkit.reference import User, open_stores, seed

EXAMPLES = (
    "GET  /bills?limit=5",
    "GET  /bills/42",
    "GET  /bills/42/votes/counts",
    "GET  /bills/42/votes?page=1&limit=10",
    "GET  /users/7",
    "GET  /users?username=user00007",
    "GET  /users/7/votes",
    'POST /users               {"username": "ada", "email": "ada@example.org"}',
    'POST /bills/42/votes      {"user_id": 7, "choice": "yes"}',
)


def seed_if_empty(url: str) -> None:
    """Seed the demo volumes into *url* if its ``users`` table is empty (SQLite: migrated)."""
    with open_stores(url) as stores, stores.engine.connect() as conn:
        empty = conn.execute(sa.select(sa.func.count()).select_from(User)).scalar_one() == 0
    if empty:
        print(f"seeding {url} ...", flush=True)
        with open_stores(url) as stores:
            summary = seed(stores.engine)
        print(
            f"seeded {summary.users:,} users, {summary.bills:,} bills and "
            f"{summary.votes:,} votes in {summary.seconds:.1f} s",
            flush=True,
        )


def main() -> None:
    url = os.environ.get("PERFKIT_DATABASE_URL") or DEFAULT_DATABASE_URL
    host = os.environ.get("PERFKIT_HOST", "127.0.0.1")
    port = int(os.environ.get("PERFKIT_PORT", "8000"))
    if url == DEFAULT_DATABASE_URL:
        DEMO_DATABASE.parent.mkdir(parents=True, exist_ok=True)
    seed_if_empty(url)
    base = f"http://{host}:{port}"
    cache = "L1 + Redis" if os.environ.get("PERFKIT_REDIS_URL") else "in-process"
    if os.environ.get("PERFKIT_CACHE") == "off":
        cache = "off"
    print(f"\nperfkit bill/vote API on {base}  (database: {url}; cache: {cache})")
    print(f"interactive docs: {base}/docs   metrics: {base}/metrics\ntry:")
    for example in EXAMPLES:
        method, _, rest = example.partition(" ")
        path, _, body = rest.strip().partition(" ")
        data = f" -H 'content-type: application/json' -d '{body.strip()}'" if body else ""
        print(f"  curl -s{' -X POST' if method == 'POST' else ''} '{base}{path}'{data}")
    print(flush=True)
    telemetry.log_requests()
    # uvicorn picks httptools and uvloop (uvicorn[standard]) when installed:
    # docs/benchmarks.md, "Server for make demo". The API serves no websockets.
    uvicorn.run(
        create_app(database_url=url),
        host=host,
        port=port,
        ws="none",
        log_level="info",
        access_log=False,
    )


if __name__ == "__main__":
    main()
