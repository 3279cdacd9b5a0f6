"""
Batch writes: many items in one statement per chunk, with a result for each item.

* :class:`BatchResult` / :class:`ItemResult`: what happened to each item of a
  batch, in input order: the stored record, or the typed error
  (:class:`~perfkit.errors.InvalidInput`, :class:`~perfkit.errors.NotFound`,
  :class:`~perfkit.errors.Conflict`) that kept it out. One bad item does not
  fail the others.
* :func:`chunked`: split an iterable into lists of at most *size*.
* :class:`RowSource`: a chunk of rows bound as one parameter per column
  (PostgreSQL ``unnest`` of arrays) or one in all (SQLite ``json_each``), so
  ``INSERT ... SELECT`` writes the chunk in one statement whose SQL is the
  same for every chunk (compiled once, cached by SQLAlchemy), and a ``JOIN``
  or ``ON CONFLICT DO NOTHING`` in it drops the items that cannot go in.

The reference stores' ``cast_many``/``create_many`` are built from these
(``docs/batch.md`` shows the same on a store of one's own).

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import ColumnElement, FromClause
from sqlalchemy.types import TypeEngine

from perfkit.errors import PerfkitError

__all__ = ["DEFAULT_CHUNK_SIZE", "BatchResult", "ItemResult", "RowSource", "chunked"]

T = TypeVar("T")

DEFAULT_CHUNK_SIZE: Final = 1_000
"""Items per statement: past ~1,000 a chunk saves little and holds its locks longer."""


@dataclass(frozen=True, slots=True)
class ItemResult(Generic[T]):
    """
    What became of one item of a batch: exactly one of *value* and *error* is set.

    Attributes:
        index: The item's position in the input (from 0).
        value: The stored record, or ``None`` if the item failed.
        error: Why the item was not stored, or ``None`` if it was.

    .. versionadded:: 0.2.0
    """

    index: int
    value: T | None = None
    error: PerfkitError | None = None

    @property
    def ok(self) -> bool:
        """Whether the item was stored."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class BatchResult(Generic[T]):
    """
    The result of every item of a batch, in input order.

    Example::

        result = stores.votes.cast_many(ballots)
        for failed in result.failed:
            print(failed.index, failed.error)

    .. versionadded:: 0.2.0
    """

    items: tuple[ItemResult[T], ...]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[ItemResult[T]]:
        return iter(self.items)

    @property
    def stored(self) -> list[T]:
        """The records of the items that were stored, in input order."""
        return [item.value for item in self.items if item.value is not None]

    @property
    def failed(self) -> list[ItemResult[T]]:
        """The items that were not stored, each with its error."""
        return [item for item in self.items if item.error is not None]


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """
    Yield lists of at most *size* consecutive items of *items* (the last may be shorter).

    Raises:
        ValueError: *size* is not a positive integer.

    .. versionadded:: 0.2.0
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        msg = f"size must be a positive integer, not {size!r}"
        raise ValueError(msg)
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


_JSON_SCALARS: Final = (int, float, str, type(None))


class RowSource:
    """
    A chunk of rows as a table in SQL, bound as few parameters as the database allows.

    On PostgreSQL the rows are ``unnest()`` of one array per column; on
    SQLite, ``json_each()`` of one JSON array. The statement's text does not
    depend on how many rows a chunk has, so it compiles once, and a chunk
    of 1,000 rows costs what its rows cost, not 4,000 bound parameters.
    Values must be ``int``, ``float``, ``str``, ``bool`` or ``None``: bind anything
    else (a timestamp shared by the chunk) as its own parameter.

    :attr:`ordinal` numbers the rows in the order given (from 1 on
    PostgreSQL, from 0 on SQLite: order by it, do not read it): ``ORDER BY``
    it in an ``INSERT ... SELECT`` and generated ids follow the input's order.

    Args:
        dialect: ``"postgresql"`` or ``"sqlite"`` (``conn.dialect.name``).
        columns: Each column's name and SQL type, in row order.
        name: The parameter names' prefix and the table's alias.

    Example::

        rows = RowSource(conn.dialect.name, {"sku": sa.String(), "qty": sa.Integer()})
        stmt = insert(stock).from_select(["sku", "qty"], sa.select(*rows.columns))
        conn.execute(stmt, rows.params([("a-1", 3), ("b-2", 5)]))

    .. versionadded:: 0.2.0
    """

    __slots__ = ("_dialect", "_names", "_table", "columns", "name", "ordinal")

    def __init__(
        self, dialect: str, columns: Mapping[str, TypeEngine[Any]], *, name: str = "batch"
    ) -> None:
        if not columns:
            msg = "a RowSource needs at least one column"
            raise ValueError(msg)
        self.name = name
        self._dialect = dialect
        self._names = tuple(columns)
        self.columns: tuple[ColumnElement[Any], ...]
        if dialect == "postgresql":
            arrays = [
                sa.bindparam(f"{name}_{column}", type_=postgresql.ARRAY(kind))
                for column, kind in columns.items()
            ]
            ordinality = f"{name}_ordinal"
            table = (
                sa.func.unnest(*arrays)
                .table_valued(*self._names, with_ordinality=ordinality)
                .render_derived(name=name)
            )
            self._table: FromClause = table
            self.columns = tuple(table.c[column] for column in self._names)
            self.ordinal: ColumnElement[int] = table.c[ordinality]
        elif dialect == "sqlite":
            each = sa.func.json_each(sa.bindparam(f"{name}_rows", type_=sa.String()))
            table = each.table_valued("value", "key").alias(name)
            self._table = table
            self.ordinal = table.c.key
            self.columns = tuple(
                sa.type_coerce(sa.func.json_extract(table.c.value, f"$[{i}]"), kind).label(column)
                for i, (column, kind) in enumerate(columns.items())
            )
        else:
            msg = f"RowSource supports postgresql and sqlite, not {dialect!r}"
            raise ValueError(msg)

    @property
    def table(self) -> FromClause:
        """The rows as a FROM clause (select from it, join it)."""
        return self._table

    def params(self, rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
        """
        The bound parameters that make *rows* (tuples in column order) the table's rows.

        Raises:
            ValueError: a row has the wrong length or a value that is not a JSON scalar.
        """
        width = len(self._names)
        for row in rows:
            if len(row) != width:
                msg = f"each row needs {width} values ({', '.join(self._names)}), got {len(row)}"
                raise ValueError(msg)
            for value in row:
                if not isinstance(value, _JSON_SCALARS):
                    kind = type(value).__name__
                    msg = f"RowSource values are int, float, str, bool or None, not {kind}"
                    raise ValueError(msg)
        if self._dialect == "postgresql":
            return {
                f"{self.name}_{column}": [row[i] for row in rows]
                for i, column in enumerate(self._names)
            }
        try:
            text = json.dumps(rows, ensure_ascii=False, allow_nan=False)
        except ValueError:
            msg = "RowSource values must be finite numbers (NaN and infinity are not JSON)"
            raise ValueError(msg) from None
        return {f"{self.name}_rows": text}
