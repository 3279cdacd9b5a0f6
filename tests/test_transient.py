"""
perfkit.is_transient on real failures from SQLite, PostgreSQL and Redis.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perfkit import CircuitOpenError, db
from perfkit.resilience import is_transient


def _locked_error(tmp_path: Path) -> sa.exc.OperationalError:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'lock.sqlite3'}", busy_timeout=0.01)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    writer = db.for_writes(engine)
    with writer.begin() as holder:
        holder.exec_driver_sql("INSERT INTO t VALUES (1)")
        try:
            with writer.begin():
                pass
        except sa.exc.OperationalError as exc:
            return exc
    pytest.fail("the second writer was not refused")


def test_sqlite_busy_is_transient(tmp_path: Path) -> None:
    """'database is locked' (SQLITE_BUSY), wrapped or raw, is transient."""
    error = _locked_error(tmp_path)

    assert "locked" in str(error)
    assert is_transient(error)
    assert is_transient(error.orig)  # type: ignore[arg-type]


def test_integrity_errors_are_not_transient(tmp_path: Path) -> None:
    """A unique violation will fail the same way again."""
    engine = db.create_engine(f"sqlite:///{tmp_path / 'u.sqlite3'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE u (x INTEGER UNIQUE)")
        conn.exec_driver_sql("INSERT INTO u VALUES (1)")
    with pytest.raises(sa.exc.IntegrityError) as info, engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO u VALUES (1)")

    assert not is_transient(info.value)


def test_postgresql_serialization_failure_is_transient(pg_engine: Engine) -> None:
    """Two SERIALIZABLE read-then-write transactions on one row: the loser's 40001 is transient."""
    with pg_engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS serial_probe (id INT PRIMARY KEY, n INT)")
        conn.exec_driver_sql("DELETE FROM serial_probe")
        conn.exec_driver_sql("INSERT INTO serial_probe VALUES (1, 0)")
    serializable = pg_engine.execution_options(isolation_level="SERIALIZABLE")
    with serializable.connect() as first, serializable.connect() as second:
        first.begin()
        second.begin()
        first.exec_driver_sql("SELECT n FROM serial_probe WHERE id = 1").scalar()
        second.exec_driver_sql("SELECT n FROM serial_probe WHERE id = 1").scalar()
        first.exec_driver_sql("UPDATE serial_probe SET n = n + 1 WHERE id = 1")
        first.commit()
        with pytest.raises(sa.exc.OperationalError) as info:
            second.exec_driver_sql("UPDATE serial_probe SET n = n + 1 WHERE id = 1")
        second.rollback()

    assert info.value.orig.sqlstate == "40001"  # type: ignore[union-attr]
    assert is_transient(info.value)


def test_postgresql_lost_connection_is_transient(pg_engine: Engine) -> None:
    """A connection the server terminated fails with an invalidated, transient error."""
    with pg_engine.connect() as victim, pg_engine.connect() as killer:
        pid = victim.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        killer.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")  # type: ignore[arg-type]
        killer.commit()
        with pytest.raises(sa.exc.DBAPIError) as info:
            victim.exec_driver_sql("SELECT 1")

    assert is_transient(info.value)


def test_redis_connection_errors_are_transient_but_response_errors_are_not(
    redis_url: str,
) -> None:
    """A refused connection is transient; a command Redis rejects is not."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = redis.Redis(port=port, socket_connect_timeout=0.2)
    with pytest.raises(redis.ConnectionError) as refused:
        dead.ping()
    live = redis.Redis.from_url(redis_url)
    with pytest.raises(redis.ResponseError) as rejected:
        live.execute_command("NO-SUCH-COMMAND")
    live.close()

    assert is_transient(refused.value)
    assert not is_transient(rejected.value)


def test_circuit_open_is_never_transient() -> None:
    """Retrying a refused call at once only adds load."""
    assert not is_transient(CircuitOpenError("payments", retry_after=3.0))


def test_plain_errors_are_not_transient() -> None:
    """Ordinary exceptions are not guessed to be transient."""
    for error in (
        ValueError("x"),
        KeyError("k"),
        TimeoutError("t"),
        threading.BrokenBarrierError(),
    ):
        assert not is_transient(error)
