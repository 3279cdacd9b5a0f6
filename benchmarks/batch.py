"""
Bulk vote casting against ``cast`` in a loop, on SQLite and PostgreSQL, in one process.

Both run on the same reference stores with an in-memory cache (as the example
API has), on the same seeded database: users and bills, no votes. The loop
casts *loop* votes one ``cast`` call each; ``cast_many`` casts *bulk* votes in
chunks of 1,000. Throughput in votes/s, medians of *rounds* alternating
rounds; the ratio is bulk over loop. Usage::

    python benchmarks/batch.py [--postgres URL] [--rounds 3] [--loop 1000] [--bulk 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from perfkit import Cache, MemoryBackend, db
from perfkit.reference import Base, NewVote, Stores, open_stores, seed

USERS = 2_000
BILLS = 200


@contextmanager
def database(postgres: str | None) -> Iterator[Engine]:
    """A fresh database with the reference schema: a SQLite file, or a PostgreSQL schema."""
    if postgres is None:
        with tempfile.TemporaryDirectory() as tmp:
            engine = db.create_engine(f"sqlite:///{Path(tmp) / 'batch.sqlite3'}")
            Base.metadata.create_all(engine)
            yield engine
            engine.dispose()
        return
    schema = f"perfkit_bench_{uuid.uuid4().hex[:8]}"
    admin = db.create_engine(postgres)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = make_url(postgres).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = db.create_engine(url)
    try:
        Base.metadata.create_all(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def ballots(bills: range, users: range, count: int) -> Iterator[NewVote]:
    """*count* votes on fresh (bill, user) pairs."""
    made = 0
    for bill in bills:
        for user in users:
            if made == count:
                return
            yield {"bill_id": bill, "user_id": user, "choice": "yes"}
            made += 1


def measure(engine: Engine, *, rounds: int, loop: int, bulk: int) -> tuple[float, float]:
    """Median votes/s of the loop and of cast_many."""
    seed(engine, users=USERS, bills=BILLS, votes=0)
    cache = Cache(MemoryBackend(maxsize=100_000), namespace="bench", ttl=300)
    stores: Stores = open_stores(engine, cache=cache, schema="none")
    per_bill = USERS
    next_bill = 1
    loop_rates, bulk_rates = [], []
    for _ in range(rounds):
        bills = range(next_bill, next_bill + -(-loop // per_bill))
        next_bill = bills.stop
        votes = list(ballots(bills, range(1, USERS + 1), loop))
        started = time.perf_counter()
        for vote in votes:
            stores.votes.cast(**vote)
        loop_rates.append(loop / (time.perf_counter() - started))

        bills = range(next_bill, next_bill + -(-bulk // per_bill))
        next_bill = bills.stop
        votes = list(ballots(bills, range(1, USERS + 1), bulk))
        started = time.perf_counter()
        result = stores.votes.cast_many(votes, chunk_size=1_000)
        bulk_rates.append(bulk / (time.perf_counter() - started))
        assert len(result.stored) == bulk, result.failed[:3]
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM votes")).scalar()
    assert count == rounds * (loop + bulk), count
    return statistics.median(loop_rates), statistics.median(bulk_rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", help="PostgreSQL URL (skipped when unreachable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", type=int, default=1_000, help="votes cast one by one per round")
    parser.add_argument("--bulk", type=int, default=20_000, help="votes cast in bulk per round")
    options = parser.parse_args()
    targets: list[tuple[str, str | None]] = [("SQLite", None)]
    if options.postgres:
        try:
            with sa.create_engine(options.postgres).connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            targets.append(("PostgreSQL", options.postgres))
        except sa.exc.OperationalError as exc:
            print(f"PostgreSQL skipped: {exc.orig}", file=sys.stderr)
    rows = []
    for name, url in targets:
        with database(url) as engine:
            loop_rate, bulk_rate = measure(
                engine, rounds=options.rounds, loop=options.loop, bulk=options.bulk
            )
        rows.append(
            f"| {name} | {loop_rate:,.0f} | {bulk_rate:,.0f} | {bulk_rate / loop_rate:.1f}x |"
        )
    print(
        f"{options.loop:,} votes by `cast` in a loop vs {options.bulk:,} by `cast_many` "
        f"(chunks of 1,000), per round; medians of {options.rounds} rounds; memory cache on.\n"
    )
    print("| database | cast loop (votes/s) | cast_many (votes/s) | bulk / loop |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
