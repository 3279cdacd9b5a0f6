"""
Engine factories with defaults tuned for web workloads.

:func:`create_engine` and :func:`create_async_engine` wrap SQLAlchemy's
factories of the same name and pick settings that matter under concurrency:

SQLite (file databases)
    * ``journal_mode=WAL`` so readers never block the writer and vice versa;
    * ``busy_timeout`` (5 s) so a writer waits for the lock instead of failing
      at once with ``database is locked``;
    * ``synchronous=NORMAL``: in WAL mode commits stop paying an fsync each; an
      application crash loses nothing, a power loss or OS crash may roll back
      the last commits, and neither corrupts the file;
    * ``foreign_keys=ON`` because SQLite ships with them off;
    * the driver's own implicit ``BEGIN`` is switched off and perfkit emits the
      ``BEGIN`` itself. Transactions on an engine returned by
      :func:`for_writes` start with ``BEGIN IMMEDIATE``: the write lock is taken
      up front, so a read-then-write transaction cannot fail half-way with
      ``SQLITE_BUSY`` on the lock upgrade (which ``busy_timeout`` does not
      cover). Plain reads keep a deferred ``BEGIN`` and run in parallel.

PostgreSQL
    * the psycopg 3 driver when the URL names none (``postgresql://``);
    * ``pool_pre_ping`` so a connection the server dropped is replaced instead
      of failing the next request;
    * a sized pool (10 + 10 overflow, 10 s checkout timeout, recycled every
      30 min) and a 5 s ``connect_timeout``, so an unreachable server fails a
      request quickly instead of hanging it.

Every default can be overridden with keyword arguments, which are passed on to
SQLAlchemy unchanged; passing ``poolclass`` drops the pool sizing defaults.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from perfkit._context import FILLING

if TYPE_CHECKING:
    # Imported lazily: sqlalchemy.ext.asyncio needs greenlet (the "async" extra).
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "create_async_engine",
    "create_engine",
    "create_tables",
    "detect_stale_loads",
    "for_writes",
    "normalize_url",
    "schema_transaction",
]

BeginMode = Literal["DEFERRED", "IMMEDIATE", "EXCLUSIVE"]

_BEGIN_OPTION: Final = "perfkit_sqlite_begin"
_BEGAN_IN: Final = "perfkit_transaction_began_in_fill"
_MARKS_BEGIN: Final[weakref.WeakSet[Engine]] = weakref.WeakSet()
"""Engines whose own "begin" hook marks transactions begun in a fill (perfkit's SQLite)."""
_PER_STATEMENT_LEVELS: Final = frozenset({"READ COMMITTED", "READ UNCOMMITTED", "AUTOCOMMIT"})
_BEGIN_SQL: Final = {
    "DEFERRED": "BEGIN DEFERRED",
    "IMMEDIATE": "BEGIN IMMEDIATE",
    "EXCLUSIVE": "BEGIN EXCLUSIVE",
}

DEFAULT_BUSY_TIMEOUT: Final = 5.0
"""Seconds an SQLite connection waits for a lock before giving up."""

_PG_POOL_DEFAULTS: Final[dict[str, Any]] = {
    "pool_pre_ping": True,
    "pool_size": 10,
    "max_overflow": 10,
    "pool_timeout": 10.0,
    "pool_recycle": 1800,
}
_PG_CONNECT_TIMEOUT: Final = 5
_DDL_LOCK: Final = 0x7065_7266_6B69_7401  # "perfkit" + 1: the advisory lock of schema changes

_E = TypeVar("_E", Engine, "AsyncEngine")


def normalize_url(url: str | URL, *, asynchronous: bool = False) -> URL:
    """
    Return *url* with perfkit's preferred driver filled in.

    ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://``;
    with *asynchronous*, ``sqlite://`` becomes ``sqlite+aiosqlite://``. A URL
    that names its driver is returned as it is.

    Args:
        url: A SQLAlchemy database URL.
        asynchronous: Whether the URL is meant for an asyncio engine.
    """
    if isinstance(url, str) and url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    if asynchronous and parsed.drivername == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    return parsed


def create_engine(
    url: str | URL,
    *,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    **overrides: Any,
) -> Engine:
    """
    Create a SQLAlchemy :class:`~sqlalchemy.engine.Engine` with tuned defaults.

    Args:
        url: Database URL, e.g. ``"sqlite:///app.db"`` or
            ``"postgresql://user@host/db"``.
        busy_timeout: SQLite only: seconds to wait for a lock.
        **overrides: Passed to :func:`sqlalchemy.create_engine`, overriding
            perfkit's defaults.

    Example::

        engine = perfkit.db.create_engine("sqlite:///app.db")
        with perfkit.db.for_writes(engine).begin() as conn:  # BEGIN IMMEDIATE
            ...

    .. versionadded:: 0.1.0
    """
    parsed = normalize_url(url)
    engine = sa.create_engine(parsed, **_engine_kwargs(parsed, overrides))
    if parsed.get_backend_name() == "sqlite":
        _install_sqlite_hooks(engine, parsed, busy_timeout)
    detect_stale_loads(engine)
    return engine


def create_async_engine(
    url: str | URL,
    *,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    **overrides: Any,
) -> AsyncEngine:
    """
    Create an :class:`~sqlalchemy.ext.asyncio.AsyncEngine` with tuned defaults.

    The asyncio twin of :func:`create_engine`, with the same defaults. SQLite
    goes through ``aiosqlite`` and PostgreSQL through psycopg 3's async mode.

    Needs the ``async`` extra (greenlet, aiosqlite): ``pip install perfkit[async]``.

    .. versionadded:: 0.1.0
    """
    from sqlalchemy.ext.asyncio import create_async_engine as _sa_create_async_engine  # noqa: PLC0415

    parsed = normalize_url(url, asynchronous=True)
    engine = _sa_create_async_engine(parsed, **_engine_kwargs(parsed, overrides))
    if parsed.get_backend_name() == "sqlite":
        _install_sqlite_hooks(engine.sync_engine, parsed, busy_timeout)
    detect_stale_loads(engine)
    return engine


@overload
def for_writes(engine: Engine, *, mode: BeginMode = ...) -> Engine: ...
@overload
def for_writes(engine: AsyncEngine, *, mode: BeginMode = ...) -> AsyncEngine: ...
def for_writes(engine: _E, *, mode: BeginMode = "IMMEDIATE") -> _E:
    """
    Return a view of *engine* whose SQLite transactions begin with *mode*.

    The view shares the pool of *engine*; make it once and keep it. On
    databases other than SQLite (and on engines not made by perfkit) the
    option is ignored, so code can use it unconditionally.

    Args:
        engine: An engine made by :func:`create_engine` or
            :func:`create_async_engine`.
        mode: ``"IMMEDIATE"`` (the default) takes the write lock at ``BEGIN``;
            ``"EXCLUSIVE"`` also keeps readers out (rarely wanted in WAL mode).

    .. versionadded:: 0.1.0
    """
    if mode not in _BEGIN_SQL:
        msg = f"mode must be one of {sorted(_BEGIN_SQL)}, not {mode!r}"
        raise ValueError(msg)
    return engine.execution_options(**{_BEGIN_OPTION: mode})


def create_tables(engine: Engine, *schema: sa.MetaData | sa.Table) -> None:
    """
    Create the tables of *schema* that are missing, safely from processes that start together.

    ``create_all(checkfirst=True)`` looks before it creates, so two processes starting at
    the same moment on an empty PostgreSQL database can both decide to create a table, and
    one dies (``UniqueViolation`` on ``pg_type``). Here the look and the creation run in one
    transaction that first takes a transaction-scoped advisory lock on PostgreSQL (it ends
    with the transaction, so it survives a transaction pooler), and on SQLite begins with
    ``BEGIN IMMEDIATE``: concurrent callers create each table once, the others find it. When
    nothing is missing (every start but the first) it only looks: no lock, no write. An SQLite
    engine not made by :func:`create_engine` has no ``BEGIN IMMEDIATE`` and so no such guard.

    Args:
        engine: The engine to create them with.
        schema: ``MetaData`` objects (all their tables) and single tables.

    Example::

        create_tables(engine, Base.metadata, outbox.table)

    .. versionadded:: 0.2.0
    """
    tables = [
        t
        for item in schema
        for t in (item.sorted_tables if isinstance(item, sa.MetaData) else [item])
    ]
    with engine.connect() as conn:  # all there (the usual start): no lock, no write
        inspector = sa.inspect(conn)
        missing = [t for t in tables if not inspector.has_table(t.name, schema=t.schema)]
    if not missing:
        return
    with schema_transaction(engine) as conn:
        for table in missing:
            table.create(conn, checkfirst=True)


@contextmanager
def schema_transaction(engine: Engine) -> Iterator[Connection]:
    """
    A transaction that changes the schema, one process at a time.

    On PostgreSQL it runs under READ COMMITTED and first takes a transaction-scoped
    advisory lock (it ends with the transaction, so it survives a transaction pooler such
    as PgBouncer); on SQLite it begins with ``BEGIN IMMEDIATE``. A second process waits
    for the first to commit, then sees what it made. :func:`create_tables` and
    :func:`perfkit.migrations.upgrade` both run in one, so they never race each other.

    In an Alembic ``env.py`` of your own, run the migrations in one so that deployments
    that migrate from several places at once apply each revision once::

        with schema_transaction(engine) as connection:
            context.configure(connection=connection, target_metadata=metadata)
            context.run_migrations()

    Args:
        engine: The engine of the database whose schema changes.

    .. versionadded:: 0.2.0
    """
    if engine.dialect.name == "postgresql":
        # Under READ COMMITTED whatever the engine's level: in AUTOCOMMIT the lock would end
        # with its statement, and a REPEATABLE READ snapshot taken before the wait would
        # not see the tables the holder made.
        locked: Engine = engine.execution_options(isolation_level="READ COMMITTED")
    else:
        locked = for_writes(engine)
    with locked.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK})
        yield conn


def detect_stale_loads(engine: Engine | AsyncEngine) -> None:
    """
    Make cache fills refuse values read in a snapshot older than the fill.

    A cached loader must read in a transaction that begins after the fill
    started: a transaction reads one snapshot on SQLite and under
    PostgreSQL's REPEATABLE READ and SERIALIZABLE, so a connection or session
    that had already read before the miss (a per-request session, say) can
    return a row older than a write that committed and invalidated
    meanwhile, and the cache's fences cannot tell. With these hooks, such a
    fill is not stored (counted in ``cache.stats.stale`` and logged by the
    ``perfkit.cache`` logger); the caller still gets the value it loaded.
    READ COMMITTED reads a fresh snapshot per statement and is never flagged.
    An ORM session's identity map is not seen: it hands back objects it
    already holds whatever the isolation, so create sessions inside loaders.

    :func:`create_engine` and :func:`create_async_engine` install the hooks;
    call this for an engine made otherwise. Outside a cache fill they cost a
    context-variable read per transaction and per statement.

    .. versionadded:: 0.2.0
    """
    sync_engine = engine if isinstance(engine, Engine) else engine.sync_engine
    if event.contains(sync_engine, "before_cursor_execute", _check_fill_snapshot):
        return
    if sync_engine not in _MARKS_BEGIN:  # perfkit's SQLite "begin" hook marks already
        event.listen(sync_engine, "begin", _transaction_began)
    event.listen(sync_engine, "before_cursor_execute", _check_fill_snapshot, retval=True)


def _transaction_began(conn: Connection) -> None:
    probe = FILLING.get()
    if probe is not None:  # began inside this fill: its snapshot is newer than the token
        conn.info[_BEGAN_IN] = probe


def _check_fill_snapshot(
    conn: Connection, _cursor: Any, statement: str, parameters: Any, *_args: Any
) -> tuple[str, Any]:
    probe = FILLING.get()
    if probe is None or probe.old_snapshot:
        return statement, parameters
    if statement[:5].upper() == "BEGIN":
        # A "begin" hook of the user's that emits BEGIN may run before ours (SQLAlchemy
        # ignores insert=True for engine events): the transaction begins here, in this fill.
        conn.info[_BEGAN_IN] = probe
    elif not probe.encloses(conn.info.get(_BEGAN_IN)) and _reads_one_snapshot(conn):
        probe.flag()
    return statement, parameters


def _reads_one_snapshot(conn: Connection) -> bool:
    """Whether a transaction on *conn* reads one snapshot throughout."""
    if conn.dialect.name == "sqlite":
        return True
    level = conn.get_execution_options().get("isolation_level") or conn.default_isolation_level
    return str(level).upper() not in _PER_STATEMENT_LEVELS


def _engine_kwargs(url: URL, overrides: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    backend = url.get_backend_name()
    if backend == "postgresql":
        if "poolclass" in overrides:
            # A caller's pool class (NullPool for pgbouncer, say) may not take
            # the sizing arguments; keep only the liveness check.
            kwargs["pool_pre_ping"] = True
        else:
            kwargs.update(_PG_POOL_DEFAULTS)
        connect_args = {"connect_timeout": _PG_CONNECT_TIMEOUT}
        connect_args.update(overrides.pop("connect_args", {}))
        kwargs["connect_args"] = connect_args
    elif backend != "sqlite":
        kwargs["pool_pre_ping"] = True
    kwargs.update(overrides)
    return kwargs


def _is_file_database(url: URL) -> bool:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        return False
    return url.query.get("mode") != "memory"


def _install_sqlite_hooks(engine: Engine, url: URL, busy_timeout: float) -> None:
    pragmas = [
        f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}",
        "PRAGMA foreign_keys = ON",
        "PRAGMA synchronous = NORMAL",
    ]
    if _is_file_database(url):
        pragmas.insert(0, "PRAGMA journal_mode = WAL")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop the driver from issuing its own (late, deferred) BEGIN; the
        # "begin" hook below emits the right one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        _transaction_began(conn)  # before the BEGIN statement, which a fill's check sees
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(_BEGIN_SQL[mode])

    _MARKS_BEGIN.add(engine)
