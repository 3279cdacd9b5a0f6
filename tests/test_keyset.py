"""
perfkit.paginate_keyset: every row exactly once, in order, both ways; cursors that cannot be forged.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from perfkit import InvalidCursor, InvalidPage, apaginate_keyset, db, paginate_keyset

metadata = sa.MetaData()
rows_table = sa.Table(
    "kitems",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("a", sa.Integer, nullable=True),
    sa.Column("b", sa.String(4), nullable=True),
    sa.Column("c", sa.Integer, nullable=False),
)
COLUMNS = {"a": rows_table.c.a, "b": rows_table.c.b, "c": rows_table.c.c}
SECRET = "test-secret"

row_values = st.fixed_dictionaries(
    {
        "a": st.none() | st.integers(0, 3),
        "b": st.none() | st.sampled_from(["x", "y", "z"]),
        "c": st.integers(0, 2),
    }
)
sort_keys = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.booleans(),
        st.sampled_from([None, "first", "last"]),
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda key: key[0],
)  # fmt: skip


def _order(key: tuple[str, bool, str | None]) -> Any:
    name, descending, nulls = key
    clause = COLUMNS[name].desc() if descending else COLUMNS[name].asc()
    if nulls == "first":
        return clause.nulls_first()
    if nulls == "last":
        return clause.nulls_last()
    return clause


def _expected(rows: list[dict[str, Any]], keys: list[tuple[str, bool, str | None]]) -> list[int]:
    """The order perfkit promises: NULLs last ascending, first descending, unless told; id last."""
    spec = [(n, d, (nl == "first") if nl else d) for n, d, nl in keys]
    spec.append(("id", keys[-1][1], keys[-1][1]))

    def compare(left: dict[str, Any], right: dict[str, Any]) -> int:
        for name, descending, nulls_first in spec:
            x, y = left[name], right[name]
            if x == y:
                continue
            if x is None or y is None:
                return (-1 if x is None else 1) * (1 if nulls_first else -1)
            result = -1 if x < y else 1
            return -result if descending else result
        return 0

    return [row["id"] for row in sorted(rows, key=functools.cmp_to_key(compare))]


def _fill(engine: Engine, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    numbered = [{"id": i, **row} for i, row in enumerate(rows, start=1)]
    with engine.begin() as conn:
        conn.execute(rows_table.delete())
        if numbered:
            conn.execute(rows_table.insert(), numbered)
    return numbered


def _walk(engine: Engine, stmt: Any, limit: int) -> tuple[list[int], list[int]]:
    """Every id walking forward from the start, and walking back from the last page."""
    forward: list[int] = []
    with engine.connect() as conn:
        page = paginate_keyset(conn, stmt, limit=limit, secret=SECRET)
        forward.extend(r.id for r in page.items)
        while page.has_next:
            assert page.next_cursor is not None
            page = paginate_keyset(conn, stmt, limit=limit, cursor=page.next_cursor, secret=SECRET)
            forward.extend(r.id for r in page.items)
        backward = [r.id for r in page.items]
        cursor = page.prev_cursor
        while cursor is not None:
            page = paginate_keyset(conn, stmt, limit=limit, cursor=cursor, secret=SECRET)
            assert len(page.items) == limit
            backward = [r.id for r in page.items] + backward
            cursor = page.prev_cursor
    return forward, backward


@pytest.fixture(scope="module")
def sqlite_items(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    path: Path = tmp_path_factory.mktemp("keyset") / "k.sqlite3"
    engine = db.create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def pg_items(pg_schema_url: str) -> Iterator[Engine]:
    engine = db.create_engine(pg_schema_url)
    metadata.create_all(engine)
    yield engine
    metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def items_engine(request: pytest.FixtureRequest) -> Engine:
    engine: Engine = request.getfixturevalue(
        "sqlite_items" if request.param == "sqlite" else "pg_items"
    )
    return engine


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(row_values, max_size=30), keys=sort_keys, limit=st.integers(1, 7))
def test_walking_both_ways_yields_every_row_once_in_order(
    items_engine: Engine, rows: list[dict[str, Any]], keys: list[Any], limit: int
) -> None:
    """Forward from the start and back from the end, each row appears once, in sort order."""
    numbered = _fill(items_engine, rows)
    stmt = sa.select(rows_table).order_by(*(_order(k) for k in keys))

    forward, backward = _walk(items_engine, stmt, limit)

    expected = _expected(numbered, keys)
    assert forward == expected
    assert backward == expected


async def _awalk(url: Any, stmt: Any, limit: int) -> tuple[list[int], list[int]]:
    """_walk through apaginate_keyset on an AsyncConnection."""
    engine = db.create_async_engine(url)
    forward: list[int] = []
    try:
        async with engine.connect() as conn:
            page = await apaginate_keyset(conn, stmt, limit=limit, secret=SECRET)
            forward.extend(r.id for r in page.items)
            while page.has_next:
                page = await apaginate_keyset(
                    conn, stmt, limit=limit, cursor=page.next_cursor, secret=SECRET
                )
                forward.extend(r.id for r in page.items)
            backward = [r.id for r in page.items]
            cursor = page.prev_cursor
            while cursor is not None:
                page = await apaginate_keyset(conn, stmt, limit=limit, cursor=cursor, secret=SECRET)
                backward = [r.id for r in page.items] + backward
                cursor = page.prev_cursor
    finally:
        await engine.dispose()
    return forward, backward


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(row_values, max_size=25), keys=sort_keys, limit=st.integers(1, 6))
def test_async_twin_walks_both_ways_too(
    items_engine: Engine, rows: list[dict[str, Any]], keys: list[Any], limit: int
) -> None:
    """apaginate_keyset (aiosqlite, psycopg async) keeps the same promise."""
    numbered = _fill(items_engine, rows)
    stmt = sa.select(rows_table).order_by(*(_order(k) for k in keys))

    forward, backward = asyncio.run(_awalk(items_engine.url, stmt, limit))

    expected = _expected(numbered, keys)
    assert forward == expected
    assert backward == expected


# -- cursors that cannot be forged -------------------------------------------------------


@pytest.fixture
def first_page(sqlite_items: Engine) -> tuple[Any, Any]:
    _fill(sqlite_items, [{"a": i, "b": None, "c": 0} for i in range(10)])
    stmt = sa.select(rows_table).order_by(rows_table.c.a)
    with sqlite_items.connect() as conn:
        return stmt, paginate_keyset(conn, stmt, limit=3, secret=SECRET)


def _resign(cursor: str, edit: Any, secret: str = SECRET) -> str:
    kid, body, _ = cursor.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    edit(payload)
    raw = json.dumps(payload, separators=(",", ":")).encode()

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signed = f"{kid}.{b64(raw)}"
    tag = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()[:16]
    return f"{signed}.{b64(tag)}"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"), "signature"),
        (lambda c: "x" + c[1:], "does not have"),  # another key id
        (lambda c: c.split(".", 1)[1], "older version"),  # 0.1's form: no key id
        (lambda c: "not-a-cursor", "signature|malformed"),
        (lambda c: "", "malformed|signature"),
        (lambda c: "a" * 5000, "not a cursor"),
        (lambda c: _resign(c, lambda p: p.update(k=[999, 999])), None),
        (lambda c: _resign(c, lambda p: p.update(v=3)), "version"),
        (lambda c: _resign(c, lambda p: p.update(f="0" * 16)), "another query"),
        (lambda c: _resign(c, lambda p: p.update(k=[1, 2, 3])), "malformed"),
        (lambda c: _resign(c, lambda p: p.update(k=[{"dt": "yesterday"}, 1])), "malformed"),
        (lambda c: _resign(c, lambda p: p.update(d="sideways")), "malformed"),
        (lambda c: _resign(c, lambda p: p.pop("k")), "malformed"),
        (lambda c: _resign(c, lambda p: None, secret="other-secret"), "signature"),
    ],
)
def test_bad_cursors_are_invalid_cursor_errors(
    sqlite_items: Engine, first_page: tuple[Any, Any], make: Any, message: str | None
) -> None:
    """Tampered, truncated, foreign, re-versioned or mistyped cursors raise InvalidCursor."""
    stmt, page = first_page
    cursor = make(page.next_cursor)
    with sqlite_items.connect() as conn:
        if message is None:  # validly signed with the right key and scope: a real page
            paginate_keyset(conn, stmt, limit=3, cursor=cursor, secret=SECRET)
            return
        with pytest.raises(InvalidCursor, match=message) as info:
            paginate_keyset(conn, stmt, limit=3, cursor=cursor, secret=SECRET)
    assert info.value.code == "invalid_cursor"
    assert isinstance(info.value, ValueError)


def test_a_refused_cursor_under_a_per_process_key_names_the_setting(
    sqlite_items: Engine,
    first_page: tuple[Any, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No secret, no PERFKIT_CURSOR_SECRET and no key table: this process signs with a key of
    its own; another key's cursor is refused saying so, and the server log names both
    remedies, once."""
    import perfkit.pagination._keys as keys_module  # noqa: PLC0415 - its once-flag

    monkeypatch.delenv("PERFKIT_CURSOR_SECRET", raising=False)
    monkeypatch.setattr(keys_module, "_fallback_logged", False)
    stmt, page = first_page  # signed with SECRET: "another process's" key here
    with sqlite_items.connect() as conn:
        for _ in range(2):
            with pytest.raises(InvalidCursor, match="signed by another process"):
                paginate_keyset(conn, stmt, limit=3, cursor=page.next_cursor)

    warnings = [r.getMessage() for r in caplog.records if "key of this process" in r.getMessage()]
    assert len(warnings) == 1
    assert "PERFKIT_CURSOR_SECRET" in warnings[0]
    assert "perfkit db upgrade" in warnings[0]


def test_cursor_from_another_sort_or_filter_is_refused(
    sqlite_items: Engine, first_page: tuple[Any, Any]
) -> None:
    """A cursor only works for the query and sort that issued it."""
    stmt, page = first_page
    other_sort = sa.select(rows_table).order_by(rows_table.c.a.desc())
    other_filter = stmt.where(rows_table.c.c == 1)
    with sqlite_items.connect() as conn:
        for foreign in (other_sort, other_filter):
            with pytest.raises(InvalidCursor, match="another query"):
                paginate_keyset(conn, foreign, limit=3, cursor=page.next_cursor, secret=SECRET)


@pytest.mark.parametrize("limit", [0, -1, 101, True, "3"])
def test_bad_limits(sqlite_items: Engine, limit: Any) -> None:
    """Limits outside 1..max_limit raise InvalidPage."""
    with sqlite_items.connect() as conn, pytest.raises(InvalidPage, match="limit"):
        paginate_keyset(conn, sa.select(rows_table).order_by(rows_table.c.id), limit=limit)


def test_needs_an_order_by(sqlite_items: Engine) -> None:
    """Without ORDER BY there is no keyset: a clear ValueError."""
    with sqlite_items.connect() as conn, pytest.raises(ValueError, match="ORDER BY"):
        paginate_keyset(conn, sa.select(rows_table), limit=3)


def test_orm_entity_select_yields_entities(tmp_path: Path) -> None:
    """select(Model) pages yield model instances even when sort columns are added."""
    from sqlalchemy.orm import Session  # noqa: PLC0415

    from perfkit.reference import Base, Bill, seed  # noqa: PLC0415

    engine = db.create_engine(f"sqlite:///{tmp_path / 'orm.sqlite3'}")
    Base.metadata.create_all(engine)
    seed(engine, users=3, bills=9, votes=0)
    stmt = sa.select(Bill).order_by(Bill.created_at.desc())
    with Session(engine) as session:
        first = paginate_keyset(session, stmt, limit=4, secret=SECRET)
        second = paginate_keyset(session, stmt, limit=4, cursor=first.next_cursor, secret=SECRET)

    assert all(isinstance(bill, Bill) for bill in first.items + second.items)
    assert [b.id for b in first.items + second.items] == [9, 8, 7, 6, 5, 4, 3, 2]
    engine.dispose()
