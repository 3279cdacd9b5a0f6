"""
perfkit.run_read / arun_read and the commit outcome check of run_in_transaction, on real
PostgreSQL and SQLite: connections killed mid-query, COMMIT replies lost on the wire.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from perfkit import (
    CommitOutcomeUnknown,
    apaginate,
    apaginate_keyset,
    arun_in_transaction,
    arun_read,
    db,
    paginate,
    paginate_keyset,
    run_in_transaction,
    run_read,
)
from perfkit.cache import Cache, MemoryBackend
from perfkit.reference import Stores, open_stores
from perfkit.resilience import retry_stats
from perfkit.testing import FakeClock
from tcp_proxy import TcpProxy


def _kill(engine: Engine, conn: Connection | AsyncConnection, pid: int) -> None:
    del conn
    with engine.connect() as killer:
        killer.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        killer.commit()


def test_a_read_whose_connection_is_killed_mid_query_is_retried(pg_engine: Engine) -> None:
    """The server ends the session between statements: the read reruns on a new connection."""
    pids: list[int] = []

    def read(conn: Connection) -> int:
        pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        pids.append(pid)
        if len(pids) == 1:
            _kill(pg_engine, conn, pid)
        return int(conn.exec_driver_sql("SELECT 41 + 1").scalar_one())

    retries = retry_stats.retries
    assert run_read(pg_engine.connect, read) == 42
    assert len(pids) == 2
    assert pids[0] != pids[1]
    assert retry_stats.retries == retries + 1


@pytest.mark.anyio
async def test_async_read_is_retried_after_a_killed_connection(pg_schema_url: str) -> None:
    """arun_read: the same on an asyncio engine."""
    engine = db.create_async_engine(pg_schema_url)
    killer = db.create_engine(pg_schema_url)
    pids: list[int] = []

    async def read(conn: AsyncConnection) -> int:
        pid = int((await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one())
        pids.append(pid)
        if len(pids) == 1:
            _kill(killer, conn, pid)
        return int((await conn.exec_driver_sql("SELECT 42")).scalar_one())

    try:
        assert await arun_read(engine.connect, read) == 42
    finally:
        await engine.dispose()
        killer.dispose()
    assert len(pids) == 2


def test_a_read_error_that_is_not_transient_is_raised_at_once(pg_engine: Engine) -> None:
    """A bad query is a bug: no retry, no wait."""
    calls: list[int] = []

    def read(conn: Connection) -> None:
        calls.append(1)
        conn.exec_driver_sql("SELECT * FROM no_such_table")

    clock = FakeClock()
    start = clock.monotonic()
    with pytest.raises(sa.exc.ProgrammingError):
        run_read(pg_engine.connect, read, clock=clock)
    assert (calls, clock.monotonic()) == ([1], start)


def test_a_read_against_a_dead_server_gives_up_at_its_deadline() -> None:
    """Nothing listens: every attempt fails to connect, and the deadline ends the retries."""
    # A port bound but not listening: held for this test, and every connect is refused.
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    url = f"postgresql+psycopg://postgres@127.0.0.1:{held.getsockname()[1]}/test"
    engine = db.create_engine(url, connect_args={"connect_timeout": 1})
    clock = FakeClock()
    start = clock.monotonic()
    calls: list[int] = []

    def read(conn: Connection) -> None:
        calls.append(1)

    try:
        with pytest.raises(sa.exc.OperationalError):
            run_read(engine.connect, read, timeout=1.0, clock=clock)
    finally:
        engine.dispose()
        held.close()
    assert calls == []  # never connected
    assert start < clock.monotonic() <= start + 1.0  # it waited, never past the deadline


def test_sqlite_reads_never_wait_for_a_writer_holding_the_lock(tmp_path: Path) -> None:
    """WAL: a writer holding the write lock past the busy timeout does not fail a read."""
    engine = db.create_engine(f"sqlite:///{tmp_path / 'r.sqlite3'}", busy_timeout=0.01)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    holder = db.for_writes(engine).connect()
    holder.begin()
    holder.exec_driver_sql("UPDATE t SET n = 2")
    try:
        for _ in range(20):
            assert (
                run_read(engine.connect, lambda c: c.exec_driver_sql("SELECT n FROM t").scalar())
                == 1
            )
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()


@pytest.fixture
def proxied(pg_schema_url: str) -> Iterator[tuple[Engine, TcpProxy]]:
    """An engine on this run's schema through a proxy that can lose COMMIT replies."""
    url = make_url(pg_schema_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        engine = db.create_engine(url.set(host="127.0.0.1", port=proxy.port))
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS outcome_probe")
            conn.exec_driver_sql("CREATE TABLE outcome_probe (k TEXT PRIMARY KEY)")
        yield engine, proxy
        engine.dispose()


def _insert(key: str) -> Callable[[Connection], str]:
    def unit(conn: Connection) -> str:
        conn.exec_driver_sql("INSERT INTO outcome_probe VALUES (%(k)s)", {"k": key})
        return key

    return unit


def _stored(key: str) -> Callable[[Connection], str | None]:
    def verify(conn: Connection) -> str | None:
        row = conn.exec_driver_sql("SELECT k FROM outcome_probe WHERE k = %(k)s", {"k": key})
        found: str | None = row.scalar()
        return found

    return verify


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM outcome_probe").scalar_one())


def test_a_commit_whose_reply_is_lost_is_verified_as_applied(
    proxied: tuple[Engine, TcpProxy],
) -> None:
    """The server commits, the client never hears: verify finds the row, nothing is redone."""
    engine, proxy = proxied
    proxy.lose_commit_reply()
    result = run_in_transaction(
        engine.connect, _insert("a"), verify=_stored("a"), clock=FakeClock()
    )
    assert (result, proxy.commits_lost, _count(engine)) == ("a", 1, 1)


def test_without_verify_a_lost_commit_reply_is_an_unknown_outcome(
    proxied: tuple[Engine, TcpProxy],
) -> None:
    """No way to check: CommitOutcomeUnknown, and the write really is there."""
    engine, proxy = proxied
    proxy.lose_commit_reply()
    with pytest.raises(CommitOutcomeUnknown, match="may have been applied"):
        run_in_transaction(engine.connect, _insert("a"), clock=FakeClock())
    assert _count(engine) == 1


def test_a_commit_killed_before_it_ran_is_verified_as_missing_and_redone(
    pg_engine: Engine,
) -> None:
    """The session dies before COMMIT: verify finds nothing, the unit runs again, once."""
    with pg_engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS outcome_probe")
        conn.exec_driver_sql("CREATE TABLE outcome_probe (k TEXT PRIMARY KEY)")
    runs: list[int] = []
    checks: list[str | None] = []
    verify = _stored("b")

    def unit(conn: Connection) -> str:
        runs.append(1)
        conn.exec_driver_sql("INSERT INTO outcome_probe VALUES ('b')")
        if len(runs) == 1:
            _kill(
                pg_engine, conn, int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
            )
        return "b"

    def checked(conn: Connection) -> str | None:
        found = verify(conn)
        checks.append(found)
        return found

    assert run_in_transaction(pg_engine.connect, unit, verify=checked, clock=FakeClock()) == "b"
    assert (runs, checks, _count(pg_engine)) == ([1, 1], [None], 1)


def test_an_outcome_that_cannot_be_checked_in_time_is_unknown(
    proxied: tuple[Engine, TcpProxy],
) -> None:
    """Every connection dies until the retries run out: CommitOutcomeUnknown, not the error."""
    engine, proxy = proxied
    proxy.lose_commit_reply()
    checks: list[int] = []

    def unreachable(conn: Connection) -> str | None:
        checks.append(1)
        proxy.cut_all()
        conn.exec_driver_sql("SELECT 1")
        return None

    with pytest.raises(CommitOutcomeUnknown, match="could not be checked") as caught:
        run_in_transaction(
            engine.connect, _insert("c"), verify=unreachable, attempts=3, clock=FakeClock()
        )
    assert isinstance(caught.value.__cause__, sa.exc.OperationalError)
    assert len(checks) == 2
    assert _count(engine) == 1


# -- paginate / paginate_keyset on an engine or a session factory -------------------------


def _kill_once_at(engine: Engine, marker: str, killer: Engine) -> list[int]:
    """Kill the session the first time a statement containing *marker* is about to run."""
    killed: list[int] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def kill(conn: Connection, _cursor: object, statement: str, *_args: object) -> None:
        if marker in statement.lower() and not killed:
            pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
            killed.append(pid)
            _kill(killer, conn, pid)

    return killed


@pytest.fixture
def numbers(pg_schema_url: str) -> Iterator[tuple[Engine, sa.Table]]:
    """An engine of its own (its events are the test's) over a table of 1..50."""
    engine = db.create_engine(pg_schema_url)
    table = sa.Table("numbers", sa.MetaData(), sa.Column("n", sa.Integer, primary_key=True))
    table.drop(engine, checkfirst=True)
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"n": n} for n in range(1, 51)])
    yield engine, table
    table.drop(engine)
    engine.dispose()


def test_paginate_on_an_engine_retries_a_page_whose_connection_dies(
    numbers: tuple[Engine, sa.Table], pg_engine: Engine
) -> None:
    """The session dies before the COUNT: the whole page is read again, rows and total agree."""
    engine, table = numbers
    killed = _kill_once_at(engine, "count(", pg_engine)
    page = paginate(engine, sa.select(table.c.n).order_by(table.c.n), page=2, limit=10)
    assert ([row.n for row in page.items], page.total, len(killed)) == (
        list(range(11, 21)),
        50,
        1,
    )


def test_paginate_on_a_session_factory_and_keyset_on_an_engine_are_retried(
    numbers: tuple[Engine, sa.Table], pg_engine: Engine
) -> None:
    """A sessionmaker works as a bind too; keyset pages are retried the same way."""
    engine, table = numbers
    stmt = sa.select(table.c.n).order_by(table.c.n)
    killed = _kill_once_at(engine, "limit", pg_engine)
    page = paginate(orm.sessionmaker(engine), stmt, page=5, limit=10)
    assert [row.n for row in page.items] == list(range(41, 51))
    assert len(killed) == 1
    killed.clear()
    first = paginate_keyset(engine, stmt, limit=20)
    second = paginate_keyset(engine, stmt, limit=20, cursor=first.next_cursor)
    assert [row.n for row in second.items] == list(range(21, 41))
    assert len(killed) == 1


@pytest.mark.anyio
async def test_apaginate_on_an_async_engine_is_retried(
    numbers: tuple[Engine, sa.Table], pg_schema_url: str, pg_engine: Engine
) -> None:
    """apaginate / apaginate_keyset take an AsyncEngine and an async_sessionmaker."""
    from sqlalchemy.ext.asyncio import async_sessionmaker  # noqa: PLC0415

    _, table = numbers
    engine = db.create_async_engine(pg_schema_url)
    killed = _kill_once_at(engine.sync_engine, "count(", pg_engine)
    stmt = sa.select(table.c.n).order_by(table.c.n)
    try:
        page = await apaginate(engine, stmt, page=3, limit=10)
        keyset = await apaginate_keyset(async_sessionmaker(engine), stmt, limit=5)
    finally:
        await engine.dispose()
    assert ([row.n for row in page.items], page.total, len(killed)) == (
        list(range(21, 31)),
        50,
        1,
    )
    assert [row.n for row in keyset.items] == [1, 2, 3, 4, 5]


# -- the reference writes settle a lost COMMIT by their own checks -------------------------


@pytest.fixture
def proxied_stores(
    pg_clean_engine: Engine, pg_schema_url: str
) -> Iterator[tuple[Stores, TcpProxy, Engine]]:
    """Reference stores (with a cache) reaching PostgreSQL through a proxy that loses replies."""
    url = make_url(pg_schema_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        engine = db.create_engine(url.set(host="127.0.0.1", port=proxy.port))
        cache = Cache(MemoryBackend(), namespace="lost-commit", ttl=60)
        with open_stores(engine, cache=cache, schema="none") as stores:
            yield stores, proxy, pg_clean_engine
        engine.dispose()


def _rows(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


def test_reference_writes_whose_commit_reply_is_lost_return_the_stored_record(
    proxied_stores: tuple[Stores, TcpProxy, Engine],
) -> None:
    """Every reference write applied on the server with its reply lost: each returns what
    was stored, once, and the cache serves the new values (nothing stale, nothing doubled)."""
    stores, proxy, direct = proxied_stores
    ada = stores.users.create(username="ada", email="ada@example.org")
    bill = stores.bills.create(title="Clean Air Act", sponsor_id=ada.id)
    assert stores.votes.counts(bill.id).yes == 0  # cached
    assert stores.users.get_by_username("grace") is None  # a cached miss

    proxy.lose_commit_reply()
    grace = stores.users.create(username="grace", email="grace@example.org")
    proxy.lose_commit_reply()
    second = stores.bills.create(title="Clean Water Act", sponsor_id=grace.id)
    proxy.lose_commit_reply()
    vote = stores.votes.cast(bill_id=bill.id, user_id=grace.id, choice="yes")
    proxy.lose_commit_reply()
    renamed = stores.bills.update(bill.id, status="passed")
    proxy.lose_commit_reply()
    moved = stores.users.update(grace.id, email="grace@navy.mil")

    assert proxy.commits_lost == 5
    assert (_rows(direct, "users"), _rows(direct, "bills"), _rows(direct, "votes")) == (2, 2, 1)
    assert stores.users.get_by_username("grace") == moved
    assert moved.email == "grace@navy.mil"
    assert stores.bills.get_by_id(second.id) == second
    assert stores.bills.get_by_id(bill.id) == renamed
    assert renamed.status == "passed"
    assert stores.votes.get_by_id(vote.id) == vote
    assert stores.votes.counts(bill.id).yes == 1


def test_a_commit_still_running_when_the_client_gives_up_is_waited_for(
    proxied: tuple[Engine, TcpProxy],
) -> None:
    """The client's connection dies before its COMMIT reaches the server, which runs it
    0.3 s later: verify waits for that session to end, finds the row, and nothing is
    redone (on a table with no unique key a redo would store the row twice)."""
    engine, proxy = proxied
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE late_probe (k TEXT)")  # no key to conflict on

    def unit(conn: Connection) -> str:
        conn.exec_driver_sql("INSERT INTO late_probe VALUES ('x')")
        return "x"

    def stored(conn: Connection) -> str | None:
        found = conn.exec_driver_sql("SELECT k FROM late_probe").scalar()
        return None if found is None else str(found)

    proxy.cut_client_then_commit(0.3)
    assert run_in_transaction(engine.connect, unit, verify=stored) == "x"
    deadline = time.monotonic() + 10
    while proxy.commits_lost < 1:  # the delayed COMMIT has run on the server
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM late_probe").scalar_one() == 1


def test_a_write_verify_found_is_returned_even_if_that_attempt_then_fails(
    proxied: tuple[Engine, TcpProxy],
) -> None:
    """verify finds the row, then its connection dies before the attempt ends: the unit is
    not run again, the found result is returned."""
    engine, proxy = proxied
    runs: list[int] = []
    verify = _stored("d")

    def unit(conn: Connection) -> str:
        runs.append(1)
        return _insert("d")(conn)

    def found_then_cut(conn: Connection) -> str | None:
        result = verify(conn)
        proxy.cut_all()  # the rollback after it fails
        return result

    proxy.lose_commit_reply()
    result = run_in_transaction(engine.connect, unit, verify=found_then_cut, clock=FakeClock())
    assert (result, runs, _count(engine)) == ("d", [1], 1)


def test_a_custom_retry_predicate_never_reruns_a_unit_with_an_unknown_outcome(
    proxied: tuple[Engine, TcpProxy],
) -> None:
    """on= that retries everything still stops at CommitOutcomeUnknown: the write ran once."""
    engine, proxy = proxied
    runs: list[int] = []

    def unit(conn: Connection) -> str:
        runs.append(1)
        return _insert("e")(conn)

    proxy.lose_commit_reply()
    with pytest.raises(CommitOutcomeUnknown):
        run_in_transaction(engine.connect, unit, on=lambda _exc: True, clock=FakeClock())
    assert (runs, _count(engine)) == ([1], 1)


@pytest.mark.anyio
async def test_async_verify_settles_a_lost_commit_reply(
    proxied: tuple[Engine, TcpProxy],
) -> None:
    """arun_in_transaction(verify=) as its sync twin: applied once, result returned."""
    engine, proxy = proxied
    url = engine.url
    async_engine = db.create_async_engine(url)
    runs: list[int] = []

    async def unit(conn: AsyncConnection) -> str:
        runs.append(1)
        await conn.exec_driver_sql("INSERT INTO outcome_probe VALUES ('f')")
        return "f"

    async def stored(conn: AsyncConnection) -> str | None:
        found = await conn.exec_driver_sql("SELECT k FROM outcome_probe WHERE k = 'f'")
        value: str | None = found.scalar()
        return value

    proxy.lose_commit_reply()
    try:
        result = await arun_in_transaction(async_engine.connect, unit, verify=stored)
    finally:
        await async_engine.dispose()
    assert (result, runs, proxy.commits_lost, _count(engine)) == ("f", [1], 1, 1)
