"""
Which failures are worth retrying.
"""

from __future__ import annotations

import sys
from typing import Final

from sqlalchemy import exc as sa_exc

from perfkit.errors import CircuitOpenError

__all__ = ["is_transient"]

_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
_PG_RETRYABLE: Final = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
    }
)


def is_transient(exc: BaseException) -> bool:
    """
    Whether *exc* is a failure that the same call may not hit again a moment later.

    True for SQLite ``SQLITE_BUSY``/``SQLITE_LOCKED`` ("database is locked"),
    PostgreSQL serialization failures (40001) and deadlocks (40P01), lost or
    refused database connections (SQLSTATE class 08, server shutting down,
    SQLAlchemy's ``connection_invalidated``), and redis-py ``ConnectionError``
    and ``TimeoutError``. False for everything else — integrity errors, redis
    ``ResponseError``, and always :class:`~perfkit.errors.CircuitOpenError`.

    .. versionadded:: 0.1.0
    """
    if isinstance(exc, CircuitOpenError):
        return False
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return _driver_transient(exc.orig) if exc.orig is not None else False
    return _driver_transient(exc) or _redis_transient(exc)


def _driver_transient(exc: BaseException) -> bool:
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
        text = str(exc)
        return "database is locked" in text or "database table is locked" in text
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate in _PG_RETRYABLE:
        return True
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.OperationalError):
        # No SQLSTATE: the connection failed or broke before the server answered.
        return sqlstate is None or str(sqlstate).startswith("08")
    return False


def _redis_transient(exc: BaseException) -> bool:
    exceptions = sys.modules.get("redis.exceptions")
    if exceptions is None:
        return False
    return isinstance(exc, exceptions.ConnectionError | exceptions.TimeoutError)
