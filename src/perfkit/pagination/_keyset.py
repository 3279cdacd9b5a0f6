"""
Keyset (cursor) pagination: pages that cost the same at row 1 and row 1,000,000.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.sql import ColumnElement, Select, operators
from sqlalchemy.sql.elements import UnaryExpression

from perfkit.errors import InvalidPage

from ._binds import AsyncBind, Bind, aread_from, read_from
from ._cursor import Cursor, cursor_kid, decode_cursor, encode_cursor, fingerprint_of
from ._keys import CursorKeys, aresolve_keys, resolve_keys
from ._offset import DEFAULT_MAX_LIMIT, _is_int

if TYPE_CHECKING:
    from typing import TypeAlias

    AnySelect: TypeAlias = Select[*tuple[Any, ...]]
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = ["CursorPage", "apaginate_keyset", "paginate_keyset"]

T = TypeVar("T")
U = TypeVar("U")

_SORT_LABEL: Final = "_perfkit_sort_{}"


@dataclass(frozen=True, slots=True)
class CursorPage(Generic[T]):
    """
    One page of a keyset-paginated query.

    Attributes:
        items: The rows on this page, in the query's order.
        limit: The page size that was asked for.
        next_cursor: Pass as ``cursor=`` for the following page (``None`` at the end).
        prev_cursor: Pass as ``cursor=`` for the preceding page (``None`` at the start).
        has_next: Whether a following page has rows.
        has_prev: Whether a preceding page has rows.

    .. versionadded:: 0.1.0
    """

    items: tuple[T, ...]
    limit: int
    next_cursor: str | None
    prev_cursor: str | None
    has_next: bool
    has_prev: bool

    def map(self, fn: Callable[[T], U]) -> CursorPage[U]:
        """Return the same page with *fn* applied to each item."""
        return CursorPage(
            tuple(fn(item) for item in self.items),
            self.limit,
            self.next_cursor,
            self.prev_cursor,
            self.has_next,
            self.has_prev,
        )


@dataclass(frozen=True, slots=True)
class _Key:
    expr: ColumnElement[Any]
    descending: bool
    nulls_first: bool
    nullable: bool
    position: int  # index of its value in each result row

    def ordering(self, *, reverse: bool) -> ColumnElement[Any]:
        descending = self.descending != reverse
        clause = self.expr.desc() if descending else self.expr.asc()
        if not self.nullable:
            return clause
        nulls_first = self.nulls_first != reverse
        return clause.nulls_first() if nulls_first else clause.nulls_last()

    def after(self, value: Any, *, reverse: bool) -> ColumnElement[bool]:
        """Rows strictly after *value* in this key's order (or the reverse order)."""
        descending = self.descending != reverse
        nulls_first = self.nulls_first != reverse
        if value is None:
            return self.expr.is_not(None) if nulls_first else sa.false()
        beyond: ColumnElement[bool] = self.expr < value if descending else self.expr > value
        if self.nullable and not nulls_first:
            return sa.or_(beyond, self.expr.is_(None))
        return beyond

    def equal(self, value: Any) -> ColumnElement[bool]:
        return self.expr.is_(None) if value is None else self.expr == value


@dataclass(frozen=True, slots=True)
class _Plan:
    stmt: AnySelect
    keys: tuple[_Key, ...]
    width: int  # columns of the caller's select
    appended: bool
    fingerprint: str

    def page_stmt(self, cursor: Cursor | None, limit: int) -> tuple[AnySelect, bool]:
        reverse = cursor is not None and cursor.direction == "prev"
        stmt = self.stmt.order_by(*(key.ordering(reverse=reverse) for key in self.keys))
        if cursor is not None:
            stmt = stmt.where(self._after(cursor.values, reverse=reverse))
        return stmt.limit(limit + 1), reverse

    def _after(self, values: Sequence[Any], *, reverse: bool) -> ColumnElement[bool]:
        keys = self.keys
        if not any(k.nullable for k in keys) and len({k.descending for k in keys}) == 1:
            # One direction, no NULLs: a row-value comparison, which both SQLite
            # and PostgreSQL turn into a single index range.
            left, right = sa.tuple_(*(k.expr for k in keys)), sa.tuple_(*values)
            return left < right if keys[0].descending != reverse else left > right
        branches = []
        for i, key in enumerate(keys):
            equal = [k.equal(v) for k, v in zip(keys[:i], values[:i], strict=True)]
            branches.append(sa.and_(*equal, key.after(values[i], reverse=reverse)))
        expanded = sa.or_(*branches)
        first = keys[0]
        if first.nullable or values[0] is None:
            return expanded
        # Bound the leading column too, so the planner can range-scan its index.
        descending = first.descending != reverse
        bound = first.expr <= values[0] if descending else first.expr >= values[0]
        return sa.and_(bound, expanded)

    def values(self, row: Any) -> tuple[Any, ...]:
        return tuple(row[key.position] for key in self.keys)

    def item(self, row: Any) -> Any:
        if not self.appended:
            return row
        return row[0] if self.width == 1 else row


def paginate_keyset(
    bind: Bind,
    stmt: AnySelect,
    *,
    limit: int,
    cursor: str | None = None,
    max_limit: int = DEFAULT_MAX_LIMIT,
    secret: str | bytes | CursorKeys | None = None,
) -> CursorPage[Any]:
    """
    Run one page of *stmt* after (or before) *cursor*, by keyset.

    Any ``ORDER BY`` works: ascending, descending, mixed, on nullable columns
    (NULLs go last ascending and first descending, on every database) and on
    columns with duplicates — the primary key of the first table is appended
    as a tiebreaker. The ``WHERE`` that picks the page uses the sort columns,
    so with an index on them a page deep in the table costs what page 1 does.

    Cursors are opaque, versioned and signed with *secret* (a string, or
    :class:`CursorKeys` to rotate), else ``PERFKIT_CURSOR_SECRET``, else a key
    shared through the database *bind* reads (the table
    ``perfkit_cursor_keys``, made by ``perfkit db upgrade``:
    :class:`SharedCursorKeys`), so every worker and instance accepts the
    others' cursors with nothing configured. They are bound to the query's
    filter and sort, so an altered cursor or one from another query raises
    :class:`~perfkit.errors.InvalidCursor`.

    Rows come back as the select returns them. When the sort uses columns
    the select does not return, they are added: a single-entity select still
    yields the entities, a multi-column one yields rows with the sort
    values appended.

    Raises:
        InvalidPage: *limit* is out of range.
        InvalidCursor: *cursor* is malformed, altered or foreign.
        ValueError: *stmt* has no ``ORDER BY`` or no table with a primary key.

    Example::

        first = paginate_keyset(session, select(Bill).order_by(Bill.created_at.desc()), limit=20)
        second = paginate_keyset(session, same_stmt, limit=20, cursor=first.next_cursor)

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 *bind* may be an engine or a session factory, from which a
       fresh handle is taken per attempt, the page retried on transient failures.
    """
    _check_limit(limit, max_limit)  # before any I/O
    keys = resolve_keys(secret, bind)
    plan, decoded = _prepare(stmt, limit, cursor, max_limit, keys)
    page_stmt, reverse = plan.page_stmt(decoded, limit)
    rows = read_from(bind, lambda handle: list(handle.execute(page_stmt).all()))
    return _page(plan, rows, decoded, reverse, limit, keys)


async def apaginate_keyset(
    bind: AsyncBind,
    stmt: AnySelect,
    *,
    limit: int,
    cursor: str | None = None,
    max_limit: int = DEFAULT_MAX_LIMIT,
    secret: str | bytes | CursorKeys | None = None,
) -> CursorPage[Any]:
    """
    The asyncio twin of :func:`paginate_keyset`, for ``AsyncSession``/``AsyncConnection``
    (or an ``AsyncEngine``/``async_sessionmaker``, retried).

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 *bind* may be an engine or a session factory.
    """
    _check_limit(limit, max_limit)  # before any I/O, as the sync twin
    keys = await aresolve_keys(secret, bind, cursor_kid(cursor))
    plan, decoded = _prepare(stmt, limit, cursor, max_limit, keys)
    page_stmt, reverse = plan.page_stmt(decoded, limit)

    async def fetch(handle: AsyncSession | AsyncConnection) -> list[Any]:
        return list((await handle.execute(page_stmt)).all())

    rows = await aread_from(bind, fetch)
    return _page(plan, rows, decoded, reverse, limit, keys)


def _prepare(
    stmt: AnySelect,
    limit: int,
    cursor: str | None,
    max_limit: int,
    keys: CursorKeys,
) -> tuple[_Plan, Cursor | None]:
    _check_limit(limit, max_limit)
    plan = _plan(stmt)
    decoded = (
        None
        if cursor is None
        else decode_cursor(cursor, fingerprint=plan.fingerprint, keys=keys, width=len(plan.keys))
    )
    return plan, decoded


def _check_limit(limit: int, max_limit: int) -> None:
    if not _is_int(limit) or not 1 <= limit <= max_limit:
        raise InvalidPage("limit", f"must be an integer from 1 to {max_limit}, got {limit!r}")


def _page(  # noqa: PLR0917 - private, called from two places
    plan: _Plan,
    rows: list[Any],
    cursor: Cursor | None,
    reverse: bool,
    limit: int,
    keys: CursorKeys,
) -> CursorPage[Any]:
    more = len(rows) > limit
    rows = rows[:limit]
    if reverse:
        rows.reverse()
        has_prev, has_next = more, True
    else:
        has_prev, has_next = cursor is not None, more

    def make(row: Any, direction: Any) -> str:
        return encode_cursor(
            Cursor(direction, plan.values(row)), fingerprint=plan.fingerprint, keys=keys
        )

    return CursorPage(
        items=tuple(plan.item(row) for row in rows),
        limit=limit,
        next_cursor=make(rows[-1], "next") if rows and has_next else None,
        prev_cursor=make(rows[0], "prev") if rows and has_prev else None,
        has_next=has_next and bool(rows),
        has_prev=has_prev and bool(rows),
    )


@dataclass(frozen=True, slots=True)
class _Shape:
    """What depends only on a statement's structure, worked out once per shape."""

    positions: tuple[int | None, ...]  # None: the key is appended as an extra column
    width: int
    text: str  # FROM, WHERE and ORDER BY rendered, for the fingerprint


_SHAPES: dict[Any, _Shape] = {}
_MAX_SHAPES: Final = 512


def _plan(stmt: AnySelect) -> _Plan:
    clauses = list(stmt._order_by_clauses)  # no public accessor in SQLAlchemy 2
    if not clauses:
        msg = "keyset pagination needs an ORDER BY"
        raise ValueError(msg)
    parsed = [_parse(clause) for clause in clauses]
    parsed += _tiebreak(stmt, parsed)
    # Rendering SQL and comparing expressions is the costly part: do it once
    # per statement shape (SQLAlchemy's own SQL cache key).
    cache_key = stmt._generate_cache_key()
    shape = None if cache_key is None else _SHAPES.get(cache_key.key)
    if shape is None:
        shape = _shape(stmt, parsed)
        if cache_key is not None:
            if len(_SHAPES) >= _MAX_SHAPES:
                _SHAPES.clear()
            _SHAPES[cache_key.key] = shape
    keys: list[_Key] = []
    extra: list[ColumnElement[Any]] = []
    for (expr, descending, nulls_first), found in zip(parsed, shape.positions, strict=True):
        position = found
        if position is None:
            position = shape.width + len(extra)
            extra.append(expr.label(_SORT_LABEL.format(len(extra))))
        keys.append(_Key(expr, descending, nulls_first, _nullable(expr), position))
    base = stmt.order_by(None)
    if extra:
        base = base.add_columns(*extra)
    where = stmt.whereclause
    values = [] if where is None else [
        repr(p.effective_value) for p in sa.sql.visitors.iterate(where)
        if isinstance(p, sa.BindParameter)
    ]  # fmt: skip
    fingerprint = fingerprint_of([shape.text, *values])
    return _Plan(base, tuple(keys), shape.width, bool(extra), fingerprint)


def _shape(stmt: AnySelect, parsed: list[tuple[ColumnElement[Any], bool, bool]]) -> _Shape:
    descriptions = stmt.column_descriptions
    returned = [_column_of(d.get("expr")) for d in descriptions]
    positions = tuple(
        next((i for i, col in enumerate(returned) if col is not None and col.compare(expr)), None)
        for expr, _, _ in parsed
    )
    where = stmt.whereclause
    parts = [str(f) for f in _froms(stmt)]
    parts += [] if where is None else [str(where)]
    for expr, descending, nulls_first in parsed:
        parts.append(f"{expr} {'DESC' if descending else 'ASC'} {nulls_first}")
    return _Shape(positions, len(descriptions), "\x1f".join(parts))


def _froms(stmt: AnySelect) -> list[Any]:
    # get_final_froms() compiles the statement; these two do not.
    found = list(stmt.columns_clause_froms)
    found += [f for f in stmt._from_obj if f not in found]  # explicit select_from()/join()
    return found


def _parse(clause: Any) -> tuple[ColumnElement[Any], bool, bool]:
    descending = False
    nulls: bool | None = None
    element = clause
    while isinstance(element, UnaryExpression):
        modifier = element.modifier
        if modifier is operators.desc_op:
            descending = True
        elif modifier is operators.asc_op:
            descending = False
        elif modifier is operators.nulls_first_op:
            nulls = True
        elif modifier is operators.nulls_last_op:
            nulls = False
        else:
            break
        element = element.element
    return element, descending, descending if nulls is None else nulls


def _tiebreak(
    stmt: AnySelect, parsed: list[tuple[ColumnElement[Any], bool, bool]]
) -> list[tuple[ColumnElement[Any], bool, bool]]:
    froms = _froms(stmt)
    table = next((f for f in froms if isinstance(f, sa.Table) and f.primary_key), None)
    if table is None:
        table = next((t for f in froms for t in _tables(f) if t.primary_key), None)
    if table is None:
        msg = "keyset pagination needs a table with a primary key in FROM"
        raise ValueError(msg)
    descending = parsed[-1][1]
    missing = [
        col for col in table.primary_key.columns if not any(col.compare(p[0]) for p in parsed)
    ]
    return [(col, descending, descending) for col in missing]


def _tables(clause: Any) -> list[sa.Table]:
    found: list[sa.Table] = []
    for child in sa.sql.visitors.iterate(clause):
        if isinstance(child, sa.Table):
            found.append(child)
    return found


def _column_of(expr: Any) -> ColumnElement[Any] | None:
    if isinstance(expr, ColumnElement):
        return expr
    inner = getattr(expr, "expression", None)  # ORM attributes
    return inner if isinstance(inner, ColumnElement) else None


def _nullable(expr: ColumnElement[Any]) -> bool:
    column = getattr(expr, "nullable", None)
    return True if column is None else bool(column)
