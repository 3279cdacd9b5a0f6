"""
Copy the rows of one database into another (SQLite into PostgreSQL), verified, in one transaction.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = ["CopyReport", "TableCopy", "copy_database"]

_BATCH = 1_000


@dataclass(frozen=True, slots=True)
class TableCopy:
    """
    One table copied: how many rows, and the checksum both sides agree on.

    Attributes:
        name: The table.
        rows: Rows copied (the same count read back on both sides).
        checksum: The sum (mod 2**256) of each row's SHA-256, as the column types read
            them (so an SQLite timestamp and a PostgreSQL one compare equal, and the
            databases' different text orders do not matter).

    .. versionadded:: 0.2.0
    """

    name: str
    rows: int
    checksum: str


@dataclass(frozen=True, slots=True)
class CopyReport:
    """
    What :func:`copy_database` copied.

    Attributes:
        tables: Each table, in the order copied (parents before children).
        sequences: The PostgreSQL sequences moved past the copied ids.
        seconds: How long it took.

    .. versionadded:: 0.2.0
    """

    tables: tuple[TableCopy, ...]
    sequences: tuple[str, ...]
    seconds: float

    @property
    def rows(self) -> int:
        """Rows copied, over every table."""
        return sum(t.rows for t in self.tables)


def _batches(conn: Connection, table: sa.Table, size: int) -> Iterator[list[dict[str, Any]]]:
    """The rows in primary-key order, *size* at a time, each batch after the last one's key
    (no server-side cursor: nothing stays open between batches)."""
    key = list(table.primary_key.columns)
    if not key:
        msg = f"{table.name!r} has no primary key: its rows have no order to copy them in"
        raise ValueError(msg)
    query = sa.select(table).order_by(*key).limit(size)
    last: tuple[Any, ...] | None = None
    while True:
        page = query if last is None else query.where(sa.tuple_(*key) > sa.tuple_(*last))
        rows = [dict(row) for row in conn.execute(page).mappings()]
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        last = tuple(rows[-1][c.name] for c in key)


def _digest(conn: Connection, table: sa.Table, size: int) -> tuple[int, str]:
    """The row count and the sum of the rows' SHA-256 (mod 2**256): the same whatever order
    each database sorts the keys in (SQLite compares text bytewise, PostgreSQL by locale)."""
    total = 0
    count = 0
    for rows in _batches(conn, table, size):
        for row in rows:
            total += int.from_bytes(hashlib.sha256(repr(tuple(row.values())).encode()).digest())
            count += 1
    return count, (total % 2**256).to_bytes(32).hex()


def _reset_sequences(conn: Connection, tables: Sequence[sa.Table]) -> list[str]:
    moved: list[str] = []
    for table in tables:
        column = table.autoincrement_column
        if column is None:
            continue
        name = conn.execute(
            sa.select(sa.func.pg_get_serial_sequence(table.name, column.name))
        ).scalar_one_or_none()
        if name is None:
            continue
        highest = conn.execute(sa.select(sa.func.max(column))).scalar_one()
        # The next id is max + 1 (1 on an empty table).
        conn.execute(sa.select(sa.func.setval(name, highest or 1, highest is not None)))
        moved.append(str(name))
    return moved


def copy_database(
    source: Engine,
    destination: Engine,
    *schema: sa.MetaData | sa.Table,
    batch: int = _BATCH,
) -> CopyReport:
    """
    Copy every row of *schema*'s tables from *source* into the empty tables of *destination*.

    The path from the embedded SQLite default to PostgreSQL: make the destination's
    schema first (``perfkit db upgrade``, or your own migrations), then copy. Tables are
    copied parents first, in primary-key order, in batches; everything is written in one
    destination transaction, read from one source snapshot, and checked before it
    commits: each table's row count and a SHA-256 of its rows must be equal on both
    sides, or nothing is kept. On PostgreSQL each table's id sequence is then moved past
    the highest copied id, so the next insert does not collide. The same from a shell:
    ``perfkit db copy SOURCE DESTINATION``.

    Args:
        source: Where the rows are (an SQLite file, say).
        destination: Where they go; its tables must exist and be empty.
        schema: ``MetaData`` objects (all their tables) and single tables, with the
            column types the application uses (they read both sides alike).
        batch: Rows per insert.

    Raises:
        ValueError: A destination table is missing or not empty, or the copy does not
            verify (nothing was written).

    Example::

        report = copy_database(create_engine("sqlite:///app.db"), pg, Base.metadata)
        print(report.rows, "rows")

    .. versionadded:: 0.2.0
    """
    if batch < 1:
        msg = f"batch must be at least 1, not {batch!r}"
        raise ValueError(msg)
    tables = _sorted(schema)
    started = time.perf_counter()
    copied: list[TableCopy] = []
    with source.connect() as src, src.begin(), destination.begin() as dst:
        inspector = sa.inspect(dst)
        for table in tables:
            if not inspector.has_table(table.name, schema=table.schema):
                msg = f"the destination has no table {table.name!r}: make its schema first"
                raise ValueError(msg)
            if dst.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first():
                msg = f"the destination's {table.name!r} is not empty: copy into empty tables"
                raise ValueError(msg)
        for table in tables:
            for rows in _batches(src, table, batch):
                dst.execute(table.insert(), rows)
        for table in tables:
            expected = _digest(src, table, batch)
            actual = _digest(dst, table, batch)
            if expected != actual:
                msg = (
                    f"{table.name!r} does not verify: {expected[0]} rows (sha256 "
                    f"{expected[1][:12]}) read, {actual[0]} (sha256 {actual[1][:12]}) "
                    "written; nothing was kept"
                )
                raise ValueError(msg)
            copied.append(TableCopy(table.name, *expected))
        moved = _reset_sequences(dst, tables) if dst.dialect.name == "postgresql" else []
    return CopyReport(tuple(copied), tuple(moved), time.perf_counter() - started)


def _sorted(schema: Sequence[sa.MetaData | sa.Table]) -> list[sa.Table]:
    chosen: dict[str, sa.Table] = {}
    for item in schema:
        for table in item.sorted_tables if isinstance(item, sa.MetaData) else [item]:
            chosen.setdefault(table.fullname, table)
    return sa.sql.util.sort_tables(chosen.values())  # parents before children
