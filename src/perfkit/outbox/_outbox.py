"""
The outbox table and its writer: events stored in the caller's transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["DEFAULT_TABLE", "Event", "Outbox"]

DEFAULT_TABLE: Final = "perfkit_outbox"
MAX_NAME: Final = 200


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """
    One event, as written in the outbox and handed to the queue.

    Attributes:
        id: Stable and unique (a UUID in hex): the idempotency key every
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


class _UTC(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes on SQLite (naive there) and PostgreSQL alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _text(field_name: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        msg = f"an event's {field_name} must be a non-empty string of at most {MAX_NAME} characters"
        raise ValueError(msg)
    return value


class Outbox:
    """
    A transactional outbox: events written in the same transaction as the data they describe.

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

    __slots__ = ("_insert", "table")

    def __init__(self, *, metadata: sa.MetaData | None = None, name: str = DEFAULT_TABLE) -> None:
        self.table = sa.Table(
            name,
            metadata if metadata is not None else sa.MetaData(),
            sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                      primary_key=True, autoincrement=True),
            sa.Column("id", sa.String(32), nullable=False, unique=True),
            sa.Column("key", sa.String(MAX_NAME), nullable=False),
            sa.Column("type", sa.String(MAX_NAME), nullable=False),
            sa.Column("payload", sa.Text(), nullable=False),
            sa.Column("created_at", _UTC(), nullable=False),
            sa.Column("published_at", _UTC(), nullable=True),
            sa.Index(
                f"ix_{name}_pending",
                "position",
                postgresql_where=sa.text("published_at IS NULL"),
                sqlite_where=sa.text("published_at IS NULL"),
            ),
        )  # fmt: skip
        self._insert = self.table.insert().returning(self.table.c.position)

    def create(self, engine: Engine) -> None:
        """Create the table (and its index) if it is missing."""
        self.table.create(engine, checkfirst=True)

    def _row(self, kind: str, key: str, payload: object) -> tuple[Event, dict[str, Any]]:
        if not isinstance(payload, Mapping):
            msg = f"an event's payload must be a mapping, not {type(payload).__name__}"
            raise TypeError(msg)
        try:
            text = json.dumps(payload, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            msg = f"an event's payload must be JSON: {exc}"
            raise ValueError(msg) from exc
        event = Event(
            id=uuid.uuid4().hex,
            key=_text("key", key),
            type=_text("type", kind),
            payload=json.loads(text),  # what a consumer will see
            created_at=_now(),
        )
        values = {
            "id": event.id,
            "key": event.key,
            "type": event.type,
            "payload": text,
            "created_at": event.created_at,
        }
        return event, values

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
        event, values = self._row(type, key, payload)
        position = conn.execute(self._insert, values).scalar_one()
        return _placed(event, position)

    async def aadd(
        self,
        conn: AsyncConnection,
        *,
        type: str,
        key: str,
        payload: Mapping[str, Any],
    ) -> Event:
        """The asyncio twin of :meth:`add`, on an ``AsyncConnection``."""
        event, values = self._row(type, key, payload)
        position = (await conn.execute(self._insert, values)).scalar_one()
        return _placed(event, position)


def _placed(event: Event, position: int) -> Event:
    return Event(event.id, event.key, event.type, event.payload, event.created_at, position)
