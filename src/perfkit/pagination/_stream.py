"""
Walk a whole query in keyset batches: constant memory at any size, one short read per batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy.sql import Select

from ._binds import AsyncBind, Bind, aread_from, read_from
from ._cursor import Cursor
from ._keyset import _Plan, _plan

if TYPE_CHECKING:
    from typing import TypeAlias

    AnySelect: TypeAlias = Select[*tuple[Any, ...]]
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = ["DEFAULT_BATCH_SIZE", "akeyset_batches", "keyset_batches"]

DEFAULT_BATCH_SIZE: Final = 1_000
MAX_BATCH_SIZE: Final = 100_000


def _start(stmt: AnySelect, batch_size: int) -> _Plan:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        msg = f"batch_size must be an integer, not {batch_size!r}"
        raise ValueError(msg)
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        msg = f"batch_size must be from 1 to {MAX_BATCH_SIZE:,}, not {batch_size}"
        raise ValueError(msg)
    plan = _plan(stmt)
    _check_shape(plan)
    return plan


def _batch_stmt(plan: _Plan, last: Any, batch_size: int) -> AnySelect:
    cursor = None if last is None else Cursor("next", plan.values(last))
    stmt, _ = plan.page_stmt(cursor, batch_size - 1)  # page_stmt reads one row past its limit
    return stmt


def keyset_batches(
    bind: Bind, stmt: AnySelect, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> Iterator[list[Any]]:
    """
    Yield every row of *stmt* in lists of at most *batch_size*, each read by keyset.

    Each batch is one query, ``WHERE`` (sort key) is past the last row of the
    one before, ``LIMIT`` *batch_size*: memory stays at one batch whatever
    the size of the result, and the generator holds no connection, cursor
    or transaction between batches when *bind* is an engine or session
    factory (each batch takes a fresh connection, retried on transient
    failures). Stop iterating, or close the generator, and no further query
    runs: a streamed export whose client went away costs nothing more.

    The order is *stmt*'s ``ORDER BY``, with the primary key appended as in
    :func:`paginate_keyset`. Each batch sees the data committed when it
    runs: a row that exists throughout the walk is yielded exactly once, as
    long as its sort key does not change (sort by an immutable key, such as
    the primary key, for exports under concurrent writes). Rows inserted
    during the walk appear if they sort after the current position.

    Raises:
        ValueError: *batch_size* is not from 1 to 100,000; *stmt* has no
            ``ORDER BY`` or no table with a primary key; or it selects
            several columns but not the ``ORDER BY`` columns and the primary
            key (a single-entity select, ``select(Order)``, needs nothing).

    Example::

        stmt = select(Order.id, Order.total).order_by(Order.id)
        for batch in keyset_batches(engine, stmt, batch_size=1_000):
            write_rows(batch)

    .. versionadded:: 0.2.0
    """
    plan = _start(stmt, batch_size)
    return _walk(bind, plan, batch_size)


def _check_shape(plan: _Plan) -> None:
    if plan.appended and plan.width > 1:
        msg = (
            "keyset_batches needs the ORDER BY columns (and the primary key) in the select: "
            "rows would carry them as extra columns"
        )
        raise ValueError(msg)


def _walk(bind: Bind, plan: _Plan, batch_size: int) -> Iterator[list[Any]]:
    last = None
    while True:
        query = _batch_stmt(plan, last, batch_size)

        def fetch(handle: Any, q: AnySelect = query) -> list[Any]:
            return list(handle.execute(q).all())

        rows = read_from(bind, fetch)
        if not rows:
            return
        last = rows[-1]
        yield [plan.item(row) for row in rows]
        if len(rows) < batch_size:
            return


def akeyset_batches(
    bind: AsyncBind, stmt: AnySelect, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> AsyncIterator[list[Any]]:
    """
    The asyncio twin of :func:`keyset_batches`, for an ``AsyncEngine``,
    ``async_sessionmaker``, ``AsyncConnection`` or ``AsyncSession``.

    .. versionadded:: 0.2.0
    """
    plan = _start(stmt, batch_size)
    return _awalk(bind, plan, batch_size)


async def _awalk(bind: AsyncBind, plan: _Plan, batch_size: int) -> AsyncIterator[list[Any]]:
    last = None
    while True:
        query = _batch_stmt(plan, last, batch_size)

        async def fetch(handle: AsyncSession | AsyncConnection, q: Any = query) -> list[Any]:
            return list((await handle.execute(q)).all())

        rows = await aread_from(bind, fetch)
        if not rows:
            return
        last = rows[-1]
        yield [plan.item(row) for row in rows]
        if len(rows) < batch_size:
            return
