"""
Offset pagination with metadata for SQLAlchemy 2 ``select()`` statements.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeGuard, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from perfkit.errors import InvalidPage

if TYPE_CHECKING:
    from typing import TypeAlias

    AnyRow: TypeAlias = Row[*tuple[Any, ...]]
    AnySelect: TypeAlias = Select[*tuple[Any, ...]]

__all__ = ["DEFAULT_MAX_LIMIT", "CountStrategy", "Page", "paginate", "validate_page"]

T = TypeVar("T")
U = TypeVar("U")

CountStrategy = Literal["exact", "none"]

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
    bind: Session | Connection,
    stmt: AnySelect,
    *,
    page: int,
    limit: int,
    count: CountStrategy = "exact",
    max_limit: int = DEFAULT_MAX_LIMIT,
) -> Page[AnyRow]:
    """
    Run one page of *stmt* and describe where it sits.

    Args:
        bind: A :class:`~sqlalchemy.orm.Session` or a
            :class:`~sqlalchemy.engine.Connection` to run the queries on.
        stmt: The full query, with its ``ORDER BY`` (without one the order of
            pages is whatever the database feels like).
        page: 1-based page number.
        limit: Rows per page, from 1 to *max_limit*.
        count: ``"exact"`` runs ``COUNT(*)`` over *stmt* (``ORDER BY``
            stripped; correct with joins and ``DISTINCT``) to fill ``total``
            and ``pages``. ``"none"`` skips the count and fetches one extra
            row to learn ``has_next``.
        max_limit: The largest *limit* accepted.

    Raises:
        InvalidPage: *page* or *limit* is out of range.

    Example::

        page = paginate(session, select(Bill).order_by(Bill.id), page=2, limit=20)
        page.total, page.pages, page.has_next

    .. versionadded:: 0.1.0
    """
    validate_page(page, limit, max_limit=max_limit)
    if count not in ("exact", "none"):
        msg = f"count must be 'exact' or 'none', not {count!r}"
        raise ValueError(msg)
    offset = (page - 1) * limit
    if count == "none":
        rows: Sequence[AnyRow] = bind.execute(stmt.limit(limit + 1).offset(offset)).all()
        return Page(
            items=tuple(rows[:limit]),
            page=page,
            limit=limit,
            total=None,
            pages=None,
            has_next=len(rows) > limit,
            has_prev=page > 1,
        )
    rows = bind.execute(stmt.limit(limit).offset(offset)).all()
    if page == 1 and len(rows) < limit:
        total = len(rows)  # the whole result fits on this page: no count needed
    else:
        counted = sa.select(sa.func.count()).select_from(
            stmt.order_by(None).limit(None).offset(None).subquery()
        )
        total = int(bind.execute(counted).scalar_one())
    pages = math.ceil(total / limit)
    return Page(
        items=tuple(rows),
        page=page,
        limit=limit,
        total=total,
        pages=pages,
        has_next=page < pages,
        has_prev=page > 1,
    )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
