"""
Count the statements a block of code sends to a database: a guard against N+1 queries.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["QueryLog", "assert_max_queries", "count_queries"]

# Transaction control is a round trip too, but not a query the code chose to run:
# counting it would make one count per backend (psycopg sends BEGIN itself).
_CONTROL: Final = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"})
_SHOWN: Final = 200  # characters of each statement in a failure message


@dataclass(slots=True)
class QueryLog:
    """
    The statements run while a :func:`count_queries` block was open, in order.

    ``executemany`` calls count once each: they are one statement sent with
    many parameter sets. Transaction control (``BEGIN``, ``COMMIT``,
    ``SAVEPOINT``...) is not counted.

    .. versionadded:: 0.2.0
    """

    statements: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def count(self) -> int:
        """How many statements ran."""
        return len(self.statements)

    def add(self, statement: str) -> None:
        """Record one statement (called from any thread)."""
        with self._lock:
            self.statements.append(statement)

    def describe(self) -> str:
        """The statements, numbered, each cut to its first 200 characters."""
        lines = []
        for number, statement in enumerate(self.statements, 1):
            text = " ".join(statement.split())
            shown = text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"
            lines.append(f"{number:>3}. {shown}")
        return "\n".join(lines)


def _target(bind: Any) -> Engine | Connection:
    if isinstance(bind, Engine | Connection):
        return bind
    inner = getattr(bind, "sync_engine", None) or getattr(bind, "sync_connection", None)
    if isinstance(inner, Engine | Connection):
        return inner
    msg = f"count queries on an Engine, Connection or their async twins, not {type(bind).__name__}"
    raise TypeError(msg)


@contextmanager
def count_queries(bind: Engine | Connection | AsyncEngine | AsyncConnection) -> Iterator[QueryLog]:
    """
    Record every statement *bind* sends while the block runs, from any thread.

    Everything that goes through *bind* counts, whichever thread or task sent
    it: an API request served in a worker thread is counted too. Keep other
    work off the engine while the block runs.

    Example::

        with count_queries(engine) as log:
            stores.votes.counts(42)
        assert log.count == 1, log.describe()

    .. versionadded:: 0.2.0
    """
    target = _target(bind)
    log = QueryLog()

    def before(
        _conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        head = statement.lstrip()[:10].split(None, 1)
        if not head or head[0].upper() not in _CONTROL:
            log.add(statement)

    event.listen(target, "before_cursor_execute", before)
    try:
        yield log
    finally:
        event.remove(target, "before_cursor_execute", before)


@contextmanager
def assert_max_queries(
    bind: Engine | Connection | AsyncEngine | AsyncConnection, limit: int
) -> Iterator[QueryLog]:
    """
    Fail (``AssertionError``) if the block runs more than *limit* statements on *bind*.

    The guard against N+1 queries: a listing that loads each row's relation
    with its own query passes with 3 rows in the test database and sends
    1,001 queries in production. Pin the count a code path needs, so a
    change that makes it grow with the data fails. The error lists every
    statement that ran. Counting follows :func:`count_queries`.

    Example::

        with assert_max_queries(engine, 2):
            client.get("/bills/1/votes?page=2")

    .. versionadded:: 0.2.0
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        msg = f"limit must be a non-negative integer, not {limit!r}"
        raise ValueError(msg)
    with count_queries(bind) as log:
        yield log
    if log.count > limit:
        msg = f"{log.count} queries ran, at most {limit} expected:\n{log.describe()}"
        raise AssertionError(msg)
