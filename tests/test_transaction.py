"""
perfkit.run_in_transaction on real SQLite and PostgreSQL: whole units retried, none lost or doubled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection

from perfkit import CommitOutcomeUnknown, arun_in_transaction, db, run_in_transaction
from perfkit.reference import Vote, open_stores, seed
from perfkit.testing import FakeClock

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def counter_db(tmp_path: Path) -> Engine:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'tx.sqlite3'}", busy_timeout=0.005)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)")
        conn.exec_driver_sql("INSERT INTO counter VALUES (1, 0)")
    return engine


def _increment(conn: Connection) -> int:
    n = int(conn.exec_driver_sql("SELECT n FROM counter WHERE id = 1").scalar_one())
    conn.exec_driver_sql("UPDATE counter SET n = ? WHERE id = 1", (n + 1,))
    return n + 1


def test_busy_database_is_retried_as_a_whole_unit(counter_db: Engine) -> None:
    """While another writer holds the lock BEGIN IMMEDIATE fails; the unit waits, commits once."""
    writer = db.for_writes(counter_db)
    holder = writer.connect()
    holder.begin()
    holder.exec_driver_sql("UPDATE counter SET n = n")  # holds the write lock
    runs: list[int] = []

    class ReleaseAfterTwoWaits(FakeClock):
        waits = 0

        def sleep(self, seconds: float) -> None:
            self.waits += 1
            if self.waits == 2:
                holder.rollback()  # the other writer finishes
                holder.close()
            super().sleep(seconds)

    def unit(conn: Connection) -> int:
        runs.append(1)
        return _increment(conn)

    clock = ReleaseAfterTwoWaits()
    assert run_in_transaction(writer.connect, unit, clock=clock) == 1
    assert (clock.waits, runs) == (2, [1])
    with counter_db.connect() as conn:
        assert conn.exec_driver_sql("SELECT n FROM counter").scalar() == 1


def test_a_failed_attempt_is_rolled_back_before_the_next(counter_db: Engine) -> None:
    """Writes of a failed attempt never survive: the retried unit starts from clean data."""
    writer = db.for_writes(counter_db)
    calls: list[int] = []

    def unit(conn: Connection) -> int:
        value = _increment(conn)
        calls.append(value)
        if len(calls) == 1:
            raise sa.exc.OperationalError("UPDATE", {}, _busy())
        return value

    assert run_in_transaction(writer.connect, unit, clock=FakeClock()) == 1
    assert calls == [1, 1]  # the second attempt saw n = 0 again


def _busy() -> Exception:
    import sqlite3  # noqa: PLC0415

    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorcode = 5  # type: ignore[attr-defined]
    return error


def test_non_transient_errors_roll_back_and_propagate(counter_db: Engine) -> None:
    """A bug in the unit is raised at once and nothing it wrote is kept."""
    writer = db.for_writes(counter_db)

    def unit(conn: Connection) -> None:
        _increment(conn)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run_in_transaction(writer.connect, unit)
    with counter_db.connect() as conn:
        assert conn.exec_driver_sql("SELECT n FROM counter").scalar() == 0


def test_lost_connection_during_commit_is_not_retried_unless_idempotent(
    pg_engine: Engine,
) -> None:
    """The server kills our session just before COMMIT: outcome unknown, so no silent retry."""
    with pg_engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS commit_probe (id SERIAL PRIMARY KEY)")
    runs: list[int] = []

    def unit(conn: Connection) -> None:
        runs.append(1)
        conn.exec_driver_sql("INSERT INTO commit_probe DEFAULT VALUES")
        if len(runs) == 1:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with pg_engine.connect() as killer:
                killer.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")  # type: ignore[arg-type]
                killer.commit()

    with pytest.raises(CommitOutcomeUnknown, match="idempotent"):
        run_in_transaction(pg_engine.connect, unit, clock=FakeClock())
    assert runs == [1]

    runs.clear()
    run_in_transaction(pg_engine.connect, unit, idempotent=True, clock=FakeClock())
    assert runs == [1, 1]


def test_serializable_transactions_commit_each_unit_exactly_once(pg_engine: Engine) -> None:
    """8 threads x 15 SERIALIZABLE read-then-write increments of one row: 120, none lost."""
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS serial_counter (id INT PRIMARY KEY, n INT)"
        )
        conn.exec_driver_sql("DELETE FROM serial_counter")
        conn.exec_driver_sql("INSERT INTO serial_counter VALUES (1, 0)")
    serializable = pg_engine.execution_options(isolation_level="SERIALIZABLE")
    attempts: list[int] = []
    commits: list[int] = []

    def unit(conn: Connection) -> int:
        attempts.append(1)
        n = int(conn.exec_driver_sql("SELECT n FROM serial_counter WHERE id = 1").scalar_one())
        conn.exec_driver_sql("UPDATE serial_counter SET n = %(n)s WHERE id = 1", {"n": n + 1})
        return n + 1

    def worker() -> None:
        for _ in range(15):
            commits.append(
                run_in_transaction(serializable.connect, unit, attempts=50, wait_initial=0.001)
            )

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    with pg_engine.connect() as conn:
        final = conn.exec_driver_sql("SELECT n FROM serial_counter").scalar()
    assert final == 120
    assert sorted(commits) == list(range(1, 121))  # every unit committed once, in some order
    assert len(attempts) > 120  # serialization failures really happened and were retried


@pytest.mark.anyio
async def test_async_twin_retries_the_unit(tmp_path: Path) -> None:
    """arun_in_transaction reruns an async unit after a transient failure."""
    url = f"sqlite:///{tmp_path / 'atx.sqlite3'}"
    sync = db.create_engine(url)
    with sync.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)")
        conn.exec_driver_sql("INSERT INTO counter VALUES (1, 0)")
    engine = db.create_async_engine(url)
    calls: list[int] = []

    async def unit(conn: AsyncConnection) -> int:
        calls.append(1)
        n = (await conn.exec_driver_sql("SELECT n FROM counter")).scalar_one()
        await conn.exec_driver_sql("UPDATE counter SET n = ?", (n + 1,))
        if len(calls) == 1:
            raise sa.exc.OperationalError("UPDATE", {}, _busy())
        return int(n) + 1

    try:
        result = await arun_in_transaction(db.for_writes(engine).connect, unit, clock=FakeClock())
    finally:
        await engine.dispose()
    assert (result, len(calls)) == (1, 2)


VOTER = textwrap.dedent(
    """
    import json, sys
    from perfkit import Conflict, db
    from perfkit.reference import open_stores
    from perfkit.resilience import retry_stats

    url, worker, bills = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # A busy_timeout 250x below the default makes SQLITE_BUSY likely: retries absorb it.
    engine = db.create_engine(url, busy_timeout=0.02)
    stores = open_stores(engine, schema="none")
    ok = conflicts = errors = 0
    for i in range(300):
        bill = (i % bills) + 1
        user = worker * 300 + i // bills + 1
        try:
            stores.votes.cast(bill_id=bill, user_id=user, choice="yes")
            ok += 1
        except Conflict:
            conflicts += 1
        except Exception as exc:
            errors += 1
            print(repr(exc), file=sys.stderr)
    print(json.dumps({"ok": ok, "conflicts": conflicts, "errors": errors,
                      "retries": retry_stats.retries}))
    """
)


def test_four_processes_casting_votes_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    """4 processes x 300 read-then-write vote transactions on one SQLite file: 1,200 votes."""
    url = f"sqlite:///{tmp_path / 'votes.sqlite3'}"
    engine = db.create_engine(url)
    seed(engine, users=1_200, bills=50, votes=0)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", VOTER, url, str(worker), "50"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for worker in range(4)
    ]
    reports: list[dict[str, Any]] = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        reports.append(json.loads(out))

    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(Vote)).scalar_one()
        distinct = conn.execute(
            sa.select(sa.func.count()).select_from(
                sa.select(Vote.bill_id, Vote.user_id).distinct().subquery()
            )
        ).scalar_one()
    engine.dispose()
    assert [r["errors"] for r in reports] == [0, 0, 0, 0]
    assert [r["ok"] for r in reports] == [300, 300, 300, 300]
    assert total == distinct == 1_200
    with open_stores(url, schema="none") as stores:
        assert stores.votes.counts(1).yes == 24  # 6 voters per worker on bill 1
