"""
Bulk-load realistic demo data into an empty reference schema.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perfkit import db as _db
from perfkit.errors import Conflict, InvalidInput

from .models import Base, Bill, BillStatus, User, Vote, VoteChoice

__all__ = ["SeedSummary", "seed"]

_TOPICS: Final = (
    "Clean Air", "Rural Broadband", "Public Libraries", "Water Safety", "Small Business",
    "Veterans Housing", "School Meals", "Rail Transit", "Data Privacy", "Wildfire Prevention",
    "Coastal Protection", "Mental Health", "Open Government", "Energy Storage", "Farm Credit",
    "Child Care", "Cyber Security", "Highway Repair", "Organ Donation", "Election Integrity",
)  # fmt: skip
_ACTIONS: Final = (
    "Modernization", "Improvement", "Protection", "Access", "Accountability", "Reform",
    "Investment", "Transparency", "Relief", "Innovation",
)  # fmt: skip
_STATUS_WEIGHTS: Final = (
    (BillStatus.DRAFT, 2), (BillStatus.INTRODUCED, 5), (BillStatus.PASSED, 2),
    (BillStatus.FAILED, 1),
)  # fmt: skip
_CHOICE_WEIGHTS: Final = ((VoteChoice.YES, 5), (VoteChoice.NO, 4), (VoteChoice.ABSTAIN, 1))
_BATCH: Final = 20_000


@dataclass(frozen=True, slots=True)
class SeedSummary:
    """
    What :func:`seed` wrote and how long it took.
    """

    users: int
    bills: int
    votes: int
    seconds: float


def seed(
    engine: Engine,
    *,
    users: int = 1_000,
    bills: int = 10_000,
    votes: int = 100_000,
    random_seed: int = 0,
    now: datetime | None = None,
) -> SeedSummary:
    """
    Fill an empty reference schema with users, bills and votes in bulk.

    The data is deterministic for a given *random_seed*: ids run from 1, bill
    creation times rise with their ids over the two years before *now*, every
    user votes at most once per bill.

    Args:
        engine: Engine of the target database (an SQLite file is migrated if it
            needs to be; any other database must be: :func:`perfkit.migrations.prepare`).
        users: How many users to create.
        bills: How many bills, each sponsored by a random user.
        votes: How many votes, spread over bills and users at random.
        random_seed: Seed of the pseudo-random generator.
        now: The time the data ends at (default: now).

    Raises:
        Conflict: the database already holds users, bills or votes.
        InvalidInput: the volumes are negative, or *votes* exceeds
            ``users x bills``, or bills/votes are asked for without users.

    .. versionadded:: 0.1.0
    """
    if min(users, bills, votes) < 0:
        raise InvalidInput("volumes", "users, bills and votes must not be negative")
    if votes > users * bills:
        raise InvalidInput("votes", f"at most users x bills = {users * bills} votes can exist")
    if bills and not users:
        raise InvalidInput("bills", "bills need at least one user to sponsor them")
    started = time.perf_counter()
    rng = random.Random(random_seed)
    end = now or datetime.now(UTC)
    start = end - timedelta(days=730)
    from perfkit import migrations  # noqa: PLC0415 - alembic, only where it runs

    migrations.prepare(engine, "perfkit_reference")
    with _db.for_writes(engine).begin() as conn:
        for model in (User, Bill, Vote):
            if conn.execute(sa.select(sa.func.count()).select_from(model)).scalar_one():
                msg = f"{model.__tablename__} is not empty; seed() only fills an empty schema"
                raise Conflict(msg)
        user_rows = _users(users, rng, start, end)
        _insert(conn, User, user_rows)
        bill_rows = _bills(bills, users, rng, start, end)
        _insert(conn, Bill, bill_rows)
        _insert(conn, Vote, _votes(votes, users, bill_rows, rng, end))
        # Fresh statistics, or the planner guesses (and sorts whole tables)
        # until autovacuum, if it runs at all, gets to them.
        postgres = conn.dialect.name == "postgresql"
        conn.exec_driver_sql("ANALYZE users, bills, votes" if postgres else "ANALYZE")
        if postgres:
            for table in ("users", "bills", "votes"):
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                    f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
                )
    return SeedSummary(users, bills, votes, time.perf_counter() - started)


def _insert(conn: sa.Connection, model: type[Base], rows: list[dict[str, Any]]) -> None:
    stmt = sa.insert(model)
    for offset in range(0, len(rows), _BATCH):
        conn.execute(stmt, rows[offset : offset + _BATCH])


def _spread(n: int, rng: random.Random, start: datetime, end: datetime) -> list[datetime]:
    span = (end - start).total_seconds()
    return sorted(start + timedelta(seconds=rng.random() * span) for _ in range(n))


def _users(n: int, rng: random.Random, start: datetime, end: datetime) -> list[dict[str, Any]]:
    return [
        {"id": i, "username": f"user{i:05d}", "email": f"user{i:05d}@example.org", "created_at": t}
        for i, t in enumerate(_spread(n, rng, start, end), start=1)
    ]


def _bills(
    n: int, users: int, rng: random.Random, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    statuses = [s for s, _ in _STATUS_WEIGHTS]
    weights = [w for _, w in _STATUS_WEIGHTS]
    rows = []
    for i, created in enumerate(_spread(n, rng, start, end), start=1):
        topic = rng.choice(_TOPICS)
        action = rng.choice(_ACTIONS)
        rows.append(
            {
                "id": i,
                "title": f"{topic} {action} Act of {created.year} (No. {i})",
                "summary": (
                    f"A bill to provide for {topic.lower()} {action.lower()}, "
                    "and for other purposes."
                ),
                "status": rng.choices(statuses, weights)[0],
                "sponsor_id": rng.randint(1, users),
                "created_at": created,
                "updated_at": min(end, created + timedelta(hours=rng.randint(0, 240))),
            }
        )
    return rows


def _votes(
    n: int,
    users: int,
    bill_rows: list[dict[str, Any]],
    rng: random.Random,
    end: datetime,
) -> list[dict[str, Any]]:
    choices = [c for c, _ in _CHOICE_WEIGHTS]
    weights = [w for _, w in _CHOICE_WEIGHTS]
    # Sampling distinct cells of the bills x users grid gives unique
    # (bill, user) pairs without retries; sorting keeps bill order for locality.
    cells = sorted(rng.sample(range(len(bill_rows) * users), n))
    rows = []
    for vote_id, cell in enumerate(cells, start=1):
        bill_index, user_index = divmod(cell, users)
        bill_created: datetime = bill_rows[bill_index]["created_at"]
        rows.append(
            {
                "id": vote_id,
                "bill_id": bill_index + 1,
                "user_id": user_index + 1,
                "choice": rng.choices(choices, weights)[0],
                "created_at": bill_created + (end - bill_created) * rng.random(),
            }
        )
    return rows
