"""
perfkit.paginate: offset pages with metadata, validation and count strategies.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from perfkit import Cache, InvalidPage, MemoryBackend, Page, apaginate, db, paginate
from perfkit.pagination import MAX_PAGE, count_tag, validate_page
from perfkit.testing import count_queries

metadata = sa.MetaData()
items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("grp", sa.Integer, nullable=False),
)
tags = sa.Table(
    "tags",
    metadata,
    sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id")),
    sa.Column("tag", sa.String(8)),
)


def _engine(n: int, *, groups: int = 3) -> Engine:
    engine = db.create_engine("sqlite://")
    metadata.create_all(engine)
    if n:
        with engine.begin() as conn:
            conn.execute(items.insert(), [{"id": i, "grp": i % groups} for i in range(1, n + 1)])
    return engine


ORDERED = sa.select(items.c.id).order_by(items.c.id)


@given(n=st.integers(0, 60), limit=st.integers(1, 25))
@settings(max_examples=60, deadline=None)
def test_walking_pages_yields_every_row_once(n: int, limit: int) -> None:
    """Pages 1..pages hold every row exactly once, in order, with consistent metadata."""
    engine = _engine(n)
    seen: list[int] = []
    with engine.connect() as conn:
        first = paginate(conn, ORDERED, page=1, limit=limit)
        assert first.pages is not None
        for number in range(1, first.pages + 1):
            page = paginate(conn, ORDERED, page=number, limit=limit)
            assert (n, first.pages) == (page.total, page.pages)
            assert (number < first.pages, number > 1) == (page.has_next, page.has_prev)
            seen.extend(row.id for row in page.items)
    assert math.ceil(n / limit) == first.pages
    assert list(range(1, n + 1)) == seen


def test_count_none_skips_the_count_and_still_knows_has_next() -> None:
    """count='none' runs one query with limit+1 and leaves total/pages empty."""
    engine = _engine(5)
    with engine.connect() as conn, count_queries(engine) as seen:
        middle = paginate(conn, ORDERED, page=2, limit=2, count="none")
        last = paginate(conn, ORDERED, page=3, limit=2, count="none")

    assert [row.id for row in middle.items] == [3, 4]
    assert (middle.total, middle.pages, middle.has_next, middle.has_prev) == (
        None,
        None,
        True,
        True,
    )
    assert (last.has_next, [row.id for row in last.items]) == (False, [5])
    assert seen.count == 2


def test_exact_count_skips_the_count_when_one_page_holds_everything() -> None:
    """A short first page is its own total: no COUNT query is sent."""
    engine = _engine(3)
    with engine.connect() as conn, count_queries(engine) as seen:
        page = paginate(conn, ORDERED, page=1, limit=10)

    assert (page.total, page.pages, page.has_next) == (3, 1, False)
    assert seen.count == 1


def test_exact_count_is_right_with_distinct_and_joins() -> None:
    """COUNT wraps the statement, so DISTINCT and joins count result rows, not table rows."""
    engine = _engine(6)
    with engine.begin() as conn:
        conn.execute(tags.insert(), [{"item_id": i, "tag": t} for i in (1, 2) for t in "abc"])
    distinct_groups = sa.select(items.c.grp).distinct().order_by(items.c.grp)
    joined = (
        sa.select(items.c.id, tags.c.tag)
        .join(tags, tags.c.item_id == items.c.id)
        .order_by(items.c.id, tags.c.tag)
    )
    with engine.connect() as conn:
        assert paginate(conn, distinct_groups, page=2, limit=1).total == 3
        assert paginate(conn, joined, page=2, limit=4).total == 6


def test_works_on_an_orm_session() -> None:
    """A Session is as good a bind as a Connection."""
    engine = _engine(4)
    with Session(engine) as session:
        page = paginate(session, ORDERED, page=2, limit=3)

    assert ([row.id for row in page.items], page.total, page.pages) == ([4], 4, 2)


def test_page_past_the_end_is_empty_not_an_error() -> None:
    """Asking for a page after the last returns no items and correct metadata."""
    engine = _engine(4)
    with engine.connect() as conn:
        page = paginate(conn, ORDERED, page=10, limit=2)

    assert (
        page.items,
        page.total,
        page.pages,
        page.has_next,
        page.has_prev,
    ) == ((), 4, 2, False, True)


@pytest.mark.parametrize(
    ("page", "limit", "field"),
    [
        (0, 10, "page"),
        (-3, 10, "page"),
        (MAX_PAGE + 1, 10, "page"),
        ("2", 10, "page"),
        (True, 10, "page"),
        (1.0, 10, "page"),
        (1, 0, "limit"),
        (1, 101, "limit"),
        (1, 1_000_000, "limit"),
        (1, None, "limit"),
    ],
)
def test_invalid_page_or_limit(page: Any, limit: Any, field: str) -> None:
    """Bad page/limit raise InvalidPage naming the field, before any query."""
    with pytest.raises(InvalidPage, match=f"^{field}: ") as info:
        validate_page(page, limit)

    assert field == info.value.field
    assert isinstance(info.value, ValueError)


def test_max_limit_is_configurable() -> None:
    """max_limit raises (or lowers) the largest accepted page size."""
    engine = _engine(3)
    with engine.connect() as conn:
        assert paginate(conn, ORDERED, page=1, limit=500, max_limit=1000).total == 3
        with pytest.raises(InvalidPage, match="from 1 to 2"):
            paginate(conn, ORDERED, page=1, limit=3, max_limit=2)


def test_unknown_count_strategy_is_refused() -> None:
    """An unknown count strategy is a ValueError, not a silent default."""
    engine = _engine(1)
    with engine.connect() as conn, pytest.raises(ValueError, match="count must be"):
        paginate(conn, ORDERED, page=1, limit=1, count="approximate")  # type: ignore[arg-type]


def test_page_map_keeps_the_metadata() -> None:
    """Page.map transforms items and nothing else."""
    page = Page(items=(1, 2), page=2, limit=2, total=5, pages=3, has_next=True, has_prev=True)

    assert Page(("1", "2"), 2, 2, 5, 3, True, True) == page.map(str)


def test_cached_count_is_reused_until_its_table_tag_is_invalidated() -> None:
    """count='cached' runs COUNT once; a write's count_tag invalidation makes it count again."""
    engine = _engine(12)
    cache = Cache(MemoryBackend(), namespace="counts")
    with engine.connect() as conn, count_queries(engine) as seen:
        first = paginate(conn, ORDERED, page=2, limit=5, count="cached", cache=cache)
        again = paginate(conn, ORDERED, page=3, limit=5, count="cached", cache=cache)
    counts = [s for s in seen.statements if "count(" in s.lower()]
    assert (first.total, again.total, len(counts)) == (12, 12, 1)

    with engine.begin() as conn:
        conn.execute(items.insert(), [{"id": 13, "grp": 0}])
    cache.invalidate_tags(count_tag("items"))
    with engine.connect() as conn:
        after = paginate(conn, ORDERED, page=2, limit=5, count="cached", cache=cache)
    assert (after.total, after.pages) == (13, 3)


def test_cached_count_needs_a_cache() -> None:
    """count='cached' without cache= is a clear ValueError."""
    engine = _engine(1)
    with engine.connect() as conn, pytest.raises(ValueError, match="cache="):
        paginate(conn, ORDERED, page=1, limit=1, count="cached")


@pytest.mark.anyio
async def test_async_twin_matches_the_sync_function(tmp_path: Any) -> None:
    """apaginate on an AsyncConnection gives the same pages, counts included."""
    url = f"sqlite:///{tmp_path / 'async.sqlite3'}"
    sync_engine = db.create_engine(url)
    metadata.create_all(sync_engine)
    with sync_engine.begin() as conn:
        conn.execute(items.insert(), [{"id": i, "grp": i % 3} for i in range(1, 18)])
    engine = db.create_async_engine(url)
    cache = Cache(MemoryBackend(), namespace="acounts")
    try:
        async with engine.connect() as conn:
            exact = await apaginate(conn, ORDERED, page=2, limit=5)
            cached = await apaginate(conn, ORDERED, page=4, limit=5, count="cached", cache=cache)
            none = await apaginate(conn, ORDERED, page=4, limit=5, count="none")
    finally:
        await engine.dispose()
    with sync_engine.connect() as conn:
        expected = paginate(conn, ORDERED, page=2, limit=5)

    assert exact == expected
    assert (cached.total, cached.pages, [r.id for r in cached.items]) == (17, 4, [16, 17])
    assert (none.total, none.has_next) == (None, False)
