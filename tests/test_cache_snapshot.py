"""
The loader's transaction condition: a fill read in an older snapshot is not stored.

A connection that had already read before the miss reads its old snapshot
(SQLite, PostgreSQL REPEATABLE READ); perfkit.db's hooks flag such a fill and
the cache refuses it. The first test shows the violation is real on a plain
SQLAlchemy engine without the hooks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from perfkit import db
from perfkit.cache import MISSING, Cache, MemoryBackend

ITEMS = sa.Table(
    "items", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("v", sa.Text)
)


def _setup(engine: Engine) -> None:
    ITEMS.drop(engine, checkfirst=True)
    ITEMS.create(engine)
    with engine.begin() as conn:
        conn.execute(ITEMS.insert(), {"id": 1, "v": "old"})


def _scenario(engine: Engine, reader: Connection) -> tuple[str, str | None, Cache]:
    """A per-request connection reads, a write commits and invalidates, the loader reads."""
    cache = Cache(MemoryBackend(), namespace="snap")

    @cache.cached(key="item:{item_id}", tags=["item:{item_id}"])
    def get(item_id: int) -> str | None:
        return reader.execute(sa.select(ITEMS.c.v).where(ITEMS.c.id == item_id)).scalar()

    reader.execute(sa.select(ITEMS.c.v)).all()  # the request read once: its snapshot begins
    with engine.begin() as conn:
        conn.execute(ITEMS.update().values(v="new"))
    cache.invalidate_tags("item:1")  # after the commit, as a store write does
    loaded = get(1)
    cached = cache.backend.get(cache.key("item:1"))
    return str(loaded), cached, cache


@pytest.fixture
def sqlite_file(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'snap.sqlite3'}"


def test_without_the_hooks_an_old_snapshot_is_cached(sqlite_file: str) -> None:
    """Without the hooks the loader reads the old row after the write and it is cached."""
    engine = db.create_engine(sqlite_file)  # a real BEGIN: one snapshot per transaction
    event.remove(engine, "before_cursor_execute", db._check_fill_snapshot)
    _setup(engine)
    with engine.connect() as reader:
        loaded, cached, _ = _scenario(engine, reader)
    engine.dispose()

    assert (loaded, cached) == ("old", "old")


def test_an_old_snapshot_is_not_cached_on_sqlite(
    sqlite_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With perfkit.db's engine the same fill is refused, counted as stale and logged."""
    engine = db.create_engine(sqlite_file)
    _setup(engine)
    with engine.connect() as reader:
        loaded, cached, cache = _scenario(engine, reader)
    engine.dispose()

    assert (loaded, cached) == ("old", MISSING)
    assert cache.stats.stale == 1
    assert "began before the cache fill" in caplog.text


def test_a_new_transaction_in_the_loader_is_cached(sqlite_file: str) -> None:
    """The documented pattern, a connection per load, is stored and fresh."""
    engine = db.create_engine(sqlite_file)
    _setup(engine)
    cache = Cache(MemoryBackend(), namespace="snap")

    @cache.cached(key="item:{item_id}")
    def get(item_id: int) -> str | None:
        with engine.connect() as conn:
            return conn.execute(sa.select(ITEMS.c.v).where(ITEMS.c.id == item_id)).scalar()

    with engine.begin() as conn:
        conn.execute(ITEMS.update().values(v="new"))
    loaded = get(1)
    engine.dispose()

    assert (loaded, cache.backend.get(cache.key("item:1")), cache.stats.stale) == ("new", "new", 0)


def test_detect_stale_loads_is_idempotent(sqlite_file: str) -> None:
    """Installing the hooks again on an engine that has them changes nothing."""
    engine = db.create_engine(sqlite_file)
    db.detect_stale_loads(engine)
    _setup(engine)
    with engine.connect() as reader:
        _, cached, cache = _scenario(engine, reader)
    engine.dispose()

    assert (cached, cache.stats.stale) == (MISSING, 1)


@pytest.fixture
def pg(pg_schema_url: str) -> Iterator[Engine]:
    engine = db.create_engine(pg_schema_url)
    _setup(engine)
    yield engine
    ITEMS.drop(engine)
    engine.dispose()


@pytest.mark.postgres
def test_repeatable_read_is_flagged_on_postgresql(pg: Engine) -> None:
    """Under REPEATABLE READ the old snapshot is refused too."""
    with pg.connect().execution_options(isolation_level="REPEATABLE READ") as reader:
        loaded, cached, cache = _scenario(pg, reader)

    assert (loaded, cached, cache.stats.stale) == ("old", MISSING, 1)


@pytest.mark.postgres
def test_read_committed_is_fresh_and_cached_on_postgresql(pg: Engine) -> None:
    """READ COMMITTED reads a new snapshot per statement: fresh, and stored."""
    with pg.connect() as reader:
        loaded, cached, cache = _scenario(pg, reader)

    assert (loaded, cached, cache.stats.stale) == ("new", "new", 0)


def test_async_loader_is_checked_too(tmp_path: Path) -> None:
    """A coroutine loader on an async engine reading an old snapshot is not cached."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'snap.sqlite3'}"
    sync = db.create_engine(f"sqlite:///{tmp_path / 'snap.sqlite3'}")
    _setup(sync)

    async def scenario() -> tuple[str | None, str | None, int]:
        engine = db.create_async_engine(url)
        cache = Cache(MemoryBackend(), namespace="snap")
        async with engine.connect() as reader:

            @cache.cached(key="item:{item_id}")
            async def get(item_id: int) -> str | None:
                stmt = sa.select(ITEMS.c.v).where(ITEMS.c.id == item_id)
                return (await reader.execute(stmt)).scalar()

            await reader.execute(sa.select(ITEMS.c.v))
            with sync.begin() as conn:
                conn.execute(ITEMS.update().values(v="new"))
            await cache.ainvalidate_keys("item:1")
            loaded = await get(1)
        await engine.dispose()
        return loaded, cache.backend.get(cache.key("item:1")), cache.stats.stale

    result = asyncio.run(scenario())
    sync.dispose()

    assert result == ("old", MISSING, 1)


def test_cached_count_through_a_session_that_already_read(sqlite_file: str) -> None:
    """paginate(count="cached") on a busy per-request session counts on its own connection."""
    from sqlalchemy.orm import Session  # noqa: PLC0415

    from perfkit import paginate  # noqa: PLC0415

    engine = db.create_engine(sqlite_file)
    _setup(engine)
    with engine.begin() as conn:
        conn.execute(ITEMS.insert(), [{"id": n, "v": str(n)} for n in range(2, 8)])
    cache = Cache(MemoryBackend(), namespace="snap")
    stmt = sa.select(ITEMS.c.id).order_by(ITEMS.c.id)
    with Session(engine) as session:
        session.execute(sa.select(ITEMS.c.v)).all()  # the request read once
        first = paginate(session, stmt, page=2, limit=2, count="cached", cache=cache)
        again = paginate(session, stmt, page=3, limit=2, count="cached", cache=cache)
    engine.dispose()

    assert (first.total, again.total, cache.stats.hits, cache.stats.stale) == (7, 7, 1, 0)


def test_nested_fill_marks_the_outer_one(sqlite_file: str) -> None:
    """An outer fill whose loader used an inner fill's old-snapshot value is not stored either."""
    engine = db.create_engine(sqlite_file)
    _setup(engine)
    cache = Cache(MemoryBackend(), namespace="snap")
    with engine.connect() as reader:

        @cache.cached(key="item:{item_id}")
        def get(item_id: int) -> str | None:
            return reader.execute(sa.select(ITEMS.c.v).where(ITEMS.c.id == item_id)).scalar()

        @cache.cached(key="summary:{item_id}")
        def summary(item_id: int) -> str:
            return f"summary of {get(item_id)}"

        reader.execute(sa.select(ITEMS.c.v)).all()
        with engine.begin() as conn:
            conn.execute(ITEMS.update().values(v="new"))
        cache.invalidate_keys("item:1", "summary:1")
        loaded = summary(1)
    engine.dispose()

    assert (
        loaded,
        cache.backend.get(cache.key("summary:1")),
        cache.stats.stale,
    ) == ("summary of old", MISSING, 2)
