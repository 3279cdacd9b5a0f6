"""
perfkit.db: engine defaults on SQLite and PostgreSQL, sync and async.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from helpers import statements
from perfkit import db


@pytest.fixture
def file_engine(tmp_path: Path) -> Engine:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}", busy_timeout=2.5)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)")
        conn.exec_driver_sql("INSERT INTO counter VALUES (1, 0)")
    return engine


def _pragmas(conn: sa.Connection) -> dict[str, Any]:
    names = ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
    return {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names}


def test_sqlite_file_defaults(file_engine: Engine) -> None:
    """A file database gets WAL, the busy timeout, foreign keys and synchronous=NORMAL."""
    with file_engine.connect() as conn:
        assert _pragmas(conn) == {
            "journal_mode": "wal",
            "busy_timeout": 2500,
            "foreign_keys": 1,
            "synchronous": 1,
        }


def test_sqlite_memory_database_skips_wal() -> None:
    """An in-memory database keeps its memory journal but gets the other pragmas."""
    engine = db.create_engine("sqlite://")

    with engine.connect() as conn:
        pragmas = _pragmas(conn)

    assert pragmas["journal_mode"] == "memory"
    assert (pragmas["busy_timeout"], pragmas["foreign_keys"]) == (5000, 1)


def test_transactions_begin_deferred_and_writes_immediate(file_engine: Engine) -> None:
    """Plain transactions BEGIN DEFERRED; for_writes() transactions BEGIN IMMEDIATE."""
    with statements(file_engine) as seen, file_engine.begin() as conn:
        conn.exec_driver_sql("SELECT n FROM counter")
    writer = db.for_writes(file_engine)
    with statements(writer) as seen_writes, writer.begin() as conn:
        conn.exec_driver_sql("UPDATE counter SET n = n + 1")

    assert seen[0] == "BEGIN DEFERRED"
    assert seen_writes[0] == "BEGIN IMMEDIATE"


def test_deferred_read_then_write_loses_the_upgrade(file_engine: Engine) -> None:
    """Without BEGIN IMMEDIATE a read-then-write fails at once when another writer committed."""
    with file_engine.connect() as slow:
        slow.begin()
        slow.exec_driver_sql("SELECT n FROM counter").scalar()
        with db.for_writes(file_engine).begin() as fast:
            fast.exec_driver_sql("UPDATE counter SET n = n + 1")

        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            slow.exec_driver_sql("UPDATE counter SET n = n + 1")
        slow.rollback()


def test_immediate_read_then_write_transactions_never_lose_updates(file_engine: Engine) -> None:
    """Four threads doing read-then-write increments under for_writes() lose none."""
    writer = db.for_writes(file_engine)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait()
        for _ in range(25):
            try:
                with writer.begin() as conn:
                    n = conn.exec_driver_sql("SELECT n FROM counter").scalar_one()
                    conn.exec_driver_sql("UPDATE counter SET n = ?", (n + 1,))
            except sa.exc.OperationalError as exc:  # pragma: no cover - the failure mode
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    with file_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT n FROM counter").scalar_one() == 100


def test_readers_are_not_blocked_by_an_open_write(file_engine: Engine) -> None:
    """In WAL mode a reader sees the last commit while a write transaction is open."""
    with db.for_writes(file_engine).begin() as writing:
        writing.exec_driver_sql("UPDATE counter SET n = 41")
        with file_engine.connect() as reader:
            assert reader.exec_driver_sql("SELECT n FROM counter").scalar_one() == 0


def test_foreign_keys_are_enforced(file_engine: Engine) -> None:
    """SQLite foreign keys are on, so a dangling reference is refused."""
    with file_engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE child (id INTEGER REFERENCES counter(id))")
    with pytest.raises(sa.exc.IntegrityError), file_engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO child VALUES (99)")


def test_for_writes_rejects_unknown_modes(file_engine: Engine) -> None:
    """for_writes() refuses a begin mode SQLite does not have."""
    with pytest.raises(ValueError, match="mode must be one of"):
        db.for_writes(file_engine, mode="LATER")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "asynchronous", "expected"),
    [
        ("postgresql://u@h/d", False, "postgresql+psycopg://u@h/d"),
        ("postgres://u@h/d", False, "postgresql+psycopg://u@h/d"),
        ("postgresql+asyncpg://u@h/d", True, "postgresql+asyncpg://u@h/d"),
        ("postgresql://u@h/d", True, "postgresql+psycopg://u@h/d"),
        ("sqlite:///a.db", False, "sqlite:///a.db"),
        ("sqlite:///a.db", True, "sqlite+aiosqlite:///a.db"),
        ("sqlite+pysqlite:///a.db", True, "sqlite+pysqlite:///a.db"),
    ],
)
def test_normalize_url(url: str, asynchronous: bool, expected: str) -> None:
    """Driver-less URLs get psycopg 3 (and aiosqlite when async); explicit drivers stay."""
    assert expected == db.normalize_url(url, asynchronous=asynchronous).render_as_string()


def test_postgresql_defaults() -> None:
    """PostgreSQL engines get psycopg 3, pre-ping, a sized pool and a connect timeout."""
    engine = db.create_engine("postgresql://nobody@127.0.0.1:1/none")

    assert engine.dialect.driver == "psycopg"
    assert engine.pool._pre_ping  # type: ignore[attr-defined]
    assert engine.pool.size() == 10  # type: ignore[attr-defined]
    assert engine.pool.timeout() == 10.0  # type: ignore[attr-defined]


def test_postgresql_overrides_win_and_connect_args_merge(pg_schema_url: str) -> None:
    """Keyword arguments override the defaults; connect_args merge with the timeout."""
    engine = db.create_engine(
        pg_schema_url, pool_size=3, connect_args={"application_name": "perfkit-test"}
    )
    try:
        with engine.connect() as conn:
            params = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
            name = conn.exec_driver_sql("SHOW application_name").scalar()
    finally:
        engine.dispose()

    assert engine.pool.size() == 3  # type: ignore[attr-defined]
    assert (params["connect_timeout"], name) == ("5", "perfkit-test")


def test_postgresql_pool_class_override_drops_sizing() -> None:
    """A caller's pool class replaces the sized pool instead of clashing with it."""
    engine = db.create_engine("postgresql://nobody@127.0.0.1:1/none", poolclass=sa.pool.NullPool)

    assert isinstance(engine.pool, sa.pool.NullPool)
    assert engine.pool._pre_ping  # type: ignore[attr-defined]


def test_postgresql_ignores_the_sqlite_begin_option(pg_schema_url: str) -> None:
    """for_writes() is harmless on PostgreSQL: transactions begin as usual."""
    engine = db.create_engine(pg_schema_url)
    try:
        with statements(engine) as seen, db.for_writes(engine).begin() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()

    assert not any("IMMEDIATE" in statement for statement in seen)


@pytest.mark.anyio
async def test_async_sqlite_engine_has_the_same_defaults(tmp_path: Path) -> None:
    """The async twin applies the pragmas and BEGIN IMMEDIATE through aiosqlite."""
    engine = db.create_async_engine(f"sqlite:///{tmp_path / 'async.sqlite3'}")
    try:
        async with engine.connect() as conn:
            pragmas = await conn.run_sync(_pragmas)
        async with db.for_writes(engine).begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            in_transaction = (await conn.exec_driver_sql("SELECT 1")).scalar_one()
    finally:
        await engine.dispose()

    assert engine.dialect.driver == "aiosqlite"
    assert tuple(pragmas.values()) == ("wal", 5000, 1, 1)
    assert in_transaction == 1


@pytest.mark.anyio
async def test_async_postgresql_round_trip(pg_schema_url: str) -> None:
    """The async twin reaches the real PostgreSQL through psycopg's async mode."""
    engine = db.create_async_engine(pg_schema_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize("isolation", ["AUTOCOMMIT", "REPEATABLE READ", "SERIALIZABLE"])
def test_create_tables_excludes_whatever_the_engines_isolation(
    isolation: str, fresh_pg_url: str
) -> None:
    """Four threads create the same tables at once on engines whose isolation would break the
    lock (AUTOCOMMIT ends it with its statement; a snapshot taken before the wait misses the
    tables the holder made): each table is made once, no caller fails."""
    engine = db.create_engine(fresh_pg_url, isolation_level=isolation)
    metadata = sa.MetaData()
    for n in range(5):
        sa.Table(f"t{n}", metadata, sa.Column("id", sa.Integer, primary_key=True))
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def create() -> None:
        start.wait()
        try:
            db.create_tables(engine, metadata)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert {f"t{n}" for n in range(5)} == set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_create_tables_with_nothing_missing_needs_no_write_lock(tmp_path: Path) -> None:
    """Every start but the first only looks: another connection holding SQLite's write lock
    does not make it wait (create_all's transaction would time out on it)."""
    engine = db.create_engine(f"sqlite:///{tmp_path / 'all-there.sqlite3'}", busy_timeout=0.2)
    metadata = sa.MetaData()
    sa.Table("items", metadata, sa.Column("id", sa.Integer, primary_key=True))
    db.create_tables(engine, metadata)
    with db.for_writes(engine).begin() as holder:
        holder.exec_driver_sql("INSERT INTO items (id) VALUES (1)")  # holds the write lock
        db.create_tables(engine, metadata)
    engine.dispose()
