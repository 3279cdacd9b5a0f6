"""
Offset pagination with metadata for SQLAlchemy 2 ``select()`` statements.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeGuard, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from perfkit.errors import InvalidPage

from ._binds import AsyncBind, Bind, aread_from, read_from

if TYPE_CHECKING:
    from typing import TypeAlias

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    from perfkit.cache import Cache

    AnyRow: TypeAlias = Row[*tuple[Any, ...]]
    AnySelect: TypeAlias = Select[*tuple[Any, ...]]

__all__ = [
    "DEFAULT_MAX_LIMIT",
    "CountStrategy",
    "Page",
    "apaginate",
    "count_tag",
    "paginate",
    "validate_page",
]

T = TypeVar("T")
U = TypeVar("U")

CountStrategy = Literal["exact", "cached", "none"]

DEFAULT_MAX_LIMIT: Final = 100
MAX_PAGE: Final = 2**31 - 1
"""Pages beyond this are refused: their offset would overflow 64-bit integers."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """
    One page of results and where it sits in the whole.

    Attributes:
        items: The rows (or records) on this page, in order.
        page: The 1-based page number.
        limit: The page size that was asked for.
        total: How many rows the whole query has, or ``None`` when the count
            was skipped (``count="none"``).
        pages: How many pages of *limit* rows that makes (0 for no rows), or
            ``None`` when the count was skipped.
        has_next: Whether a later page has rows.
        has_prev: Whether this is not the first page.

    .. versionadded:: 0.1.0
    """

    items: tuple[T, ...]
    page: int
    limit: int
    total: int | None
    pages: int | None
    has_next: bool
    has_prev: bool

    def map(self, fn: Callable[[T], U]) -> Page[U]:
        """
        Return the same page with *fn* applied to each item.
        """
        return Page(
            items=tuple(fn(item) for item in self.items),
            page=self.page,
            limit=self.limit,
            total=self.total,
            pages=self.pages,
            has_next=self.has_next,
            has_prev=self.has_prev,
        )


def validate_page(page: object, limit: object, *, max_limit: int = DEFAULT_MAX_LIMIT) -> None:
    """
    Raise :class:`~perfkit.errors.InvalidPage` unless *page* and *limit* are valid.

    *page* must be an integer from 1 to 2³¹-1 and *limit* an integer from 1 to
    *max_limit*. Booleans are not integers here.
    """
    if not _is_int(page) or not 1 <= page <= MAX_PAGE:
        raise InvalidPage("page", f"must be an integer from 1 to {MAX_PAGE}, got {page!r}")
    if not _is_int(limit) or not 1 <= limit <= max_limit:
        raise InvalidPage("limit", f"must be an integer from 1 to {max_limit}, got {limit!r}")


def paginate(
    bind: Bind,
    stmt: AnySelect,
    *,
    page: int,
    limit: int,
    count: CountStrategy = "exact",
    max_limit: int = DEFAULT_MAX_LIMIT,
    cache: Cache | None = None,
) -> Page[AnyRow]:
    """
    Run one page of *stmt* and describe where it sits.

    Args:
        bind: A :class:`~sqlalchemy.orm.Session` or a
            :class:`~sqlalchemy.engine.Connection` to run the queries on; or
            an :class:`~sqlalchemy.engine.Engine` or a ``sessionmaker``, from
            which a fresh one is taken per attempt, the whole page retried on
            transient failures (:func:`perfkit.run_read`).
        stmt: The full query, with its ``ORDER BY`` (without one the order of
            pages is whatever the database feels like).
        page: 1-based page number.
        limit: Rows per page, from 1 to *max_limit*.
        count: ``"exact"`` runs ``COUNT(*)`` over *stmt* (``ORDER BY``
            stripped; correct with joins and ``DISTINCT``) to fill ``total``
            and ``pages``. ``"cached"`` keeps that count in *cache*, tagged
            with the tables it reads (:func:`count_tag`), until a write to one
            of them invalidates it. ``"none"`` skips the count and fetches
            one extra row to learn ``has_next``.
        max_limit: The largest *limit* accepted.
        cache: Where ``count="cached"`` keeps counts.

    Raises:
        InvalidPage: *page* or *limit* is out of range.

    Example::

        page = paginate(session, select(Bill).order_by(Bill.id), page=2, limit=20)
        page.total, page.pages, page.has_next

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 *bind* may be an engine or a session factory.
    """
    offset = _check(page, limit, count, max_limit, cache)
    return read_from(bind, lambda handle: _page(handle, stmt, page, limit, offset, count, cache))


def _page(  # noqa: PLR0917 - private
    bind: Session | Connection,
    stmt: AnySelect,
    page: int,
    limit: int,
    offset: int,
    count: CountStrategy,
    cache: Cache | None,
) -> Page[AnyRow]:
    if count == "none":
        rows = bind.execute(stmt.limit(limit + 1).offset(offset)).all()
        return _uncounted(rows, page, limit)
    if count == "cached":
        # The count first: on a miss its COUNT is the first statement of the transaction,
        # which therefore begins after the fill token was taken (a count run after the page
        # query would read the page's older snapshot on SQLite and could be cached stale).
        assert cache is not None
        counted = _count_stmt(stmt)
        total = _count_cache(cache).sync(*_count_key(counted), lambda: _fresh_count(bind, counted))
        return _counted(bind.execute(stmt.limit(limit).offset(offset)).all(), page, limit, total)
    rows = bind.execute(stmt.limit(limit).offset(offset)).all()
    if page == 1 and len(rows) < limit:
        return _counted(rows, page, limit, len(rows))  # it all fits: no count needed
    total = int(bind.execute(_count_stmt(stmt)).scalar_one())
    return _counted(rows, page, limit, total)


async def apaginate(
    bind: AsyncBind,
    stmt: AnySelect,
    *,
    page: int,
    limit: int,
    count: CountStrategy = "exact",
    max_limit: int = DEFAULT_MAX_LIMIT,
    cache: Cache | None = None,
) -> Page[AnyRow]:
    """
    The asyncio twin of :func:`paginate`, for ``AsyncSession``/``AsyncConnection``
    (or an ``AsyncEngine``/``async_sessionmaker``, retried).

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 *bind* may be an engine or a session factory.
    """
    offset = _check(page, limit, count, max_limit, cache)
    return await aread_from(
        bind, lambda handle: _apage(handle, stmt, page, limit, offset, count, cache)
    )


async def _apage(  # noqa: PLR0917 - private
    bind: AsyncSession | AsyncConnection,
    stmt: AnySelect,
    page: int,
    limit: int,
    offset: int,
    count: CountStrategy,
    cache: Cache | None,
) -> Page[AnyRow]:
    if count == "none":
        rows = (await bind.execute(stmt.limit(limit + 1).offset(offset))).all()
        return _uncounted(rows, page, limit)
    counted = _count_stmt(stmt)

    async def run() -> int:
        return int((await bind.execute(counted)).scalar_one())

    async def fresh() -> int:
        engine = _own_engine(bind)
        if engine is None:
            return await run()
        async with engine.connect() as conn:
            return int((await conn.execute(counted)).scalar_one())

    if count == "cached":  # the count first, as in paginate()
        assert cache is not None
        total = await _count_cache(cache).asynchronous(*_count_key(counted), fresh)
        rows = (await bind.execute(stmt.limit(limit).offset(offset))).all()
        return _counted(rows, page, limit, total)
    rows = (await bind.execute(stmt.limit(limit).offset(offset))).all()
    if page == 1 and len(rows) < limit:
        return _counted(rows, page, limit, len(rows))
    return _counted(rows, page, limit, await run())


def count_tag(table: str) -> str:
    """
    The cache tag of cached counts over *table*: invalidate it when rows are added or removed.

    .. versionadded:: 0.1.0
    """
    return f"table:{table}"


def _check(page: int, limit: int, count: str, max_limit: int, cache: Cache | None) -> int:
    validate_page(page, limit, max_limit=max_limit)
    if count not in ("exact", "none", "cached"):
        msg = f"count must be 'exact', 'cached' or 'none', not {count!r}"
        raise ValueError(msg)
    if count == "cached" and cache is None:
        msg = "count='cached' needs cache="
        raise ValueError(msg)
    return (page - 1) * limit


def _own_engine(bind: Any) -> Any:
    """
    The engine to count a cached total on when *bind* is already in a transaction.

    That transaction's snapshot (SQLite, REPEATABLE READ) may predate the fill,
    so the count would not be stored; a connection of its own begins after it.
    ``None``: count on *bind* (not in a transaction, or a session bound to a
    connection or to several engines).
    """
    if not bind.in_transaction():
        return None
    # Sessions (sync or async) have get_bind() and a .bind; connections an .engine.
    bound = getattr(bind, "bind", None) if hasattr(bind, "get_bind") else bind.engine
    if bound is None or hasattr(bound, "in_transaction"):  # none, or a connection
        return None
    return bound


def _fresh_count(bind: Session | Connection, counted: Select[int]) -> int:
    engine = _own_engine(bind)
    if engine is None:
        return int(bind.execute(counted).scalar_one())
    with engine.connect() as conn:
        return int(conn.execute(counted).scalar_one())


def _count_stmt(stmt: AnySelect) -> Select[int]:
    return sa.select(sa.func.count()).select_from(
        stmt.order_by(None).limit(None).offset(None).subquery()
    )


_COUNT_SHAPES: dict[Any, tuple[str, tuple[str, ...]]] = {}
_MAX_SHAPES: Final = 512


def _count_key(counted: Select[int]) -> tuple[str, tuple[str, ...]]:
    """The cache key (SQL and values) and the table tags of a COUNT statement."""
    cache_key = counted._generate_cache_key()  # the key SQLAlchemy's own SQL cache uses
    found = None if cache_key is None else _COUNT_SHAPES.get(cache_key.key)
    if found is None:
        tables = sorted({t.name for t in _tables_of(counted)})
        found = (str(counted), tuple(count_tag(name) for name in tables))
        if cache_key is not None:
            if len(_COUNT_SHAPES) >= _MAX_SHAPES:
                _COUNT_SHAPES.clear()
            _COUNT_SHAPES[cache_key.key] = found
    sql, tags = found
    values = [] if cache_key is None else [repr(p.effective_value) for p in cache_key.bindparams]
    digest = hashlib.sha256("\x1f".join([sql, *values]).encode()).hexdigest()[:24]
    return f"count:{digest}", tags


def _tables_of(stmt: Any) -> list[sa.Table]:
    return [t for t in sa.sql.visitors.iterate(stmt) if isinstance(t, sa.Table)]


def _counted(rows: Sequence[AnyRow], page: int, limit: int, total: int) -> Page[AnyRow]:
    pages = math.ceil(total / limit)
    return Page(tuple(rows), page, limit, total, pages, page < pages, page > 1)


def _uncounted(rows: Sequence[AnyRow], page: int, limit: int) -> Page[AnyRow]:
    return Page(tuple(rows[:limit]), page, limit, None, None, len(rows) > limit, page > 1)


class _CountCache:
    """The cached loaders counts go through, one pair per :class:`Cache`."""

    __slots__ = ("asynchronous", "sync")

    def __init__(self, cache: Cache) -> None:
        def key(name: str, _tags: tuple[str, ...], _run: object) -> str:
            return name

        def tags(_name: str, tags: tuple[str, ...], _run: object) -> tuple[str, ...]:
            return tags

        @cache.cached(key=key, tags=tags)
        def sync(name: str, tags: tuple[str, ...], run: Callable[[], int]) -> int:
            return run()

        @cache.cached(key=key, tags=tags)
        async def asynchronous(
            name: str, tags: tuple[str, ...], run: Callable[[], Awaitable[int]]
        ) -> int:
            return await run()

        self.sync = sync
        self.asynchronous = asynchronous


_COUNT_CACHES: weakref.WeakKeyDictionary[Cache, _CountCache] = weakref.WeakKeyDictionary()


def _count_cache(cache: Cache) -> _CountCache:
    found = _COUNT_CACHES.get(cache)
    if found is None:
        found = _COUNT_CACHES[cache] = _CountCache(cache)
    return found


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
