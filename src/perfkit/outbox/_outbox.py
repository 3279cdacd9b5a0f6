"""
The outbox table and its writer: events stored in the caller's transaction.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from perfkit import db as _db
from perfkit._sqltypes import UTCDateTime

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["DEFAULT_TABLE", "Event", "Outbox"]

DEFAULT_TABLE: Final = "perfkit_outbox"
_COLUMNS: Final = ("id", "key", "type", "payload", "created_at")
MAX_NAME: Final = 200


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """
    One event, as written in the outbox and handed to the queue.

    Attributes:
        id: Stable and unique (128 random bits in hex): the idempotency key every
            consumer deduplicates on (the ``webhook-id`` of a webhook).
        key: What the event is about (``"bill:42"``). Events of one key are
            relayed in the order their transactions committed, when one
            committed before the next began.
        type: What happened (``"vote.cast"``).
        payload: The event's JSON data.
        created_at: When it was written (UTC).
        position: Its row id: the relay's order.

    .. versionadded:: 0.2.0
    """

    id: str
    key: str
    type: str
    payload: dict[str, Any] = field(hash=False)
    created_at: datetime
    position: int = 0

    def to_message(self) -> dict[str, Any]:
        """The event as a JSON-ready dict (what a queue message carries)."""
        return {
            "id": self.id,
            "key": self.key,
            "type": self.type,
            "payload": self.payload,
            "created_at": self.created_at.isoformat(),
            "position": self.position,
        }

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Event:
        """The event :meth:`to_message` made."""
        return cls(
            id=str(message["id"]),
            key=str(message["key"]),
            type=str(message["type"]),
            payload=dict(message["payload"]),
            created_at=datetime.fromisoformat(str(message["created_at"])),
            position=int(message.get("position", 0)),
        )


def _text(field_name: str, value: object) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_NAME:
        msg = f"an event's {field_name} must be a non-empty string of at most {MAX_NAME} characters"
        raise ValueError(msg)
    return value


class Outbox:
    """
    A transactional outbox: events written in the same transaction as the data they describe.

    The table holds only what waits to be relayed: the relay deletes what it
    published. One row costs one append to one B-tree (no secondary index),
    so an event adds little to a write (docs/benchmarks.md, "Outbox").

    :meth:`add` inserts the event on the caller's connection, inside its
    transaction: if the transaction rolls back, the event never existed; if
    it commits, the event is there to be relayed (:class:`Relay`), at least
    once, to a queue. Nothing is sent from inside the transaction, so a
    queue that is down never fails a write, and a write that fails never
    sends anything.

    Args:
        metadata: The ``MetaData`` the outbox table joins (one of its own by
            default), so ``metadata.create_all()`` and migrations see it.
        name: The table's name.

    Example::

        outbox = Outbox(metadata=Base.metadata)
        with engine.begin() as conn:
            conn.execute(orders.insert().values(id=7, total=12))
            outbox.add(conn, type="order.placed", key="order:7", payload={"total": 12})

    .. versionadded:: 0.2.0
    """

    __slots__ = ("_driver_sql", "_insert", "_insert_many", "table")

    def __init__(self, *, metadata: sa.MetaData | None = None, name: str = DEFAULT_TABLE) -> None:
        self.table = sa.Table(
            name,
            metadata if metadata is not None else sa.MetaData(),
            sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                      primary_key=True, autoincrement=True),
            sa.Column("id", sa.String(32), nullable=False),  # a UUID: unique without an index
            sa.Column("key", sa.String(MAX_NAME), nullable=False),
            sa.Column("type", sa.String(MAX_NAME), nullable=False),
            sa.Column("payload", sa.Text(), nullable=False),
            sa.Column("created_at", UTCDateTime(), nullable=False),
        )  # fmt: skip
        self._insert = self.table.insert().returning(self.table.c.position)
        self._driver_sql: dict[str, str] = {}
        self._insert_many = self.table.insert().returning(
            self.table.c.position, sort_by_parameter_order=True
        )

    def create(self, engine: Engine) -> None:
        """Create the table if it is missing (:func:`perfkit.db.create_tables`)."""
        _db.create_tables(engine, self.table)

    def add(
        self,
        conn: Connection,
        *,
        type: str,
        key: str,
        payload: Mapping[str, Any],
    ) -> Event:
        """
        Write one event on *conn*, in its current transaction.

        Raises:
            ValueError: *type* or *key* is empty or longer than 200
                characters, or *payload* is not JSON (NaN included).
            TypeError: *payload* is not a mapping.
        """
        row = _prepare(type, key, payload)
        return _event(row, payload, self._insert_one(conn, row))

    def _insert_one(self, conn: Connection, row: _Row) -> int:
        # The row rides along on every business write, so on the usual drivers it goes
        # down the path SQLAlchemy keeps for its own small statements (sequences,
        # defaults): one cursor call, with the before/after_cursor_execute events (query
        # timing and counts see it) and DBAPI errors wrapped as usual (retries classify
        # them), but no compiled statement and no result object: half the instructions
        # of exec_driver_sql (docs/benchmarks.md, "Outbox").
        dialect = conn.dialect
        cursor_execute = getattr(conn, "_cursor_execute", None)  # private: fall back without
        if cursor_execute is None:
            return int(
                conn.execute(self._insert, dict(zip(_COLUMNS, row, strict=True))).scalar_one()
            )
        if not conn.in_transaction():
            conn.begin()  # what conn.execute() would do (autobegin): commit() then commits it
        if dialect.name == "sqlite" and dialect.paramstyle == "qmark":
            created = row[4].replace(tzinfo=None)  # UTC already; SQLAlchemy's text format:
            params: tuple[Any, ...] = (
                *row[:4],
                created.isoformat(sep=" ", timespec="microseconds"),
            )
            sql = self._driver_sql.get("sqlite") or self._sql(dialect, "?", "")
            cursor = conn.connection.cursor()
            try:
                cursor_execute(cursor, sql, params)
                return int(cursor.lastrowid)
            finally:
                cursor.close()
        if dialect.name == "postgresql" and dialect.paramstyle in {"format", "pyformat"}:
            sql = self._driver_sql.get("postgresql") or self._sql(
                dialect, "%s", " RETURNING position"
            )
            cursor = conn.connection.cursor()
            try:
                cursor_execute(cursor, sql, row)
                fetched = cursor.fetchone()
                assert fetched is not None  # RETURNING of an INSERT of one row
                return int(fetched[0])
            finally:
                cursor.close()
        return self._compiled_insert(conn, row)

    def _compiled_insert(self, conn: Connection, row: _Row) -> int:
        values = dict(zip(_COLUMNS, row, strict=True))
        return int(conn.execute(self._insert, values).scalar_one())

    def _sql(self, dialect: Any, marker: str, suffix: str) -> str:
        quote = dialect.identifier_preparer.quote
        columns = ", ".join(quote(column) for column in _COLUMNS)
        markers = ", ".join([marker] * len(_COLUMNS))
        table = quote(self.table.name)
        sql = f"INSERT INTO {table} ({columns}) VALUES ({markers}){suffix}"  # noqa: S608
        self._driver_sql[dialect.name] = sql
        return sql

    def add_many(
        self, conn: Connection, events: Iterable[tuple[str, str, Mapping[str, Any]]]
    ) -> list[Event]:
        """
        Write several events, each ``(type, key, payload)``, in one statement on *conn*.

        Their positions follow the given order. Raises as :meth:`add` does,
        before anything is written.
        """
        given = [(payload, _prepare(kind, key, payload)) for kind, key, payload in events]
        if not given:
            return []
        if len(given) == 1:  # a plain INSERT: half the cost of the executemany path
            payload, row = given[0]
            return [_event(row, payload, self._insert_one(conn, row))]
        params = [dict(zip(_COLUMNS, row, strict=True)) for _, row in given]
        positions = conn.execute(self._insert_many, params).scalars().all()
        return [
            _event(row, payload, position)
            for (payload, row), position in zip(given, positions, strict=True)
        ]

    async def aadd(
        self,
        conn: AsyncConnection,
        *,
        type: str,
        key: str,
        payload: Mapping[str, Any],
    ) -> Event:
        """The asyncio twin of :meth:`add`, on an ``AsyncConnection``."""
        row = _prepare(type, key, payload)
        values = dict(zip(_COLUMNS, row, strict=True))
        position = (await conn.execute(self._insert, values)).scalar_one()
        return _event(row, payload, position)


_Row = tuple[str, str, str, str, datetime]  # id, key, type, payload (JSON), created_at
_ENCODE: Final = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode


def _prepare(kind: object, key: object, payload: object) -> _Row:
    """The row of one event, checked: id, key, type, payload as JSON text, created_at."""
    if type(payload) is not dict and not isinstance(payload, Mapping):
        msg = f"an event's payload must be a mapping, not {type(payload).__name__}"
        raise TypeError(msg)
    try:
        text = _ENCODE(payload)
    except (TypeError, ValueError) as exc:
        msg = f"an event's payload must be JSON: {exc}"
        raise ValueError(msg) from exc
    return os.urandom(16).hex(), _text("key", key), _text("type", kind), text, datetime.now(UTC)


def _event(row: _Row, payload: Mapping[str, Any], position: int) -> Event:
    # The caller's payload, copied: a consumer sees it after a JSON round trip.
    return Event(row[0], row[1], row[2], dict(payload), row[4], position)
