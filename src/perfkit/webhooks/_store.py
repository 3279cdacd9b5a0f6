"""
The webhook tables: endpoints (who is subscribed) and deliveries (one per event and endpoint).

The deliveries table is the truth of every delivery: its state, its attempts and when it
is due. A queue message or an in-process wake-up only says "look at delivery 17 now", so
a message lost, late or delivered twice changes nothing: an attempt first claims the row
with a conditional UPDATE (one claimant wins; it writes a random claim token and a lease),
and records its outcome only while the row still carries its token. SQL only: no HTTP here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from perfkit._sqltypes import UTCDateTime

__all__ = ["Delivery", "DeliveryStatus", "Endpoint", "EndpointStatus", "WebhookTables"]

EndpointStatus = Literal["active", "disabled"]
DeliveryStatus = Literal["pending", "delivered", "dead"]
PENDING: Final = "pending"
DELIVERED: Final = "delivered"
DEAD: Final = "dead"
ACTIVE: Final = "active"
DISABLED: Final = "disabled"
MAX_ERROR: Final = 500


@dataclass(frozen=True, slots=True)
class Endpoint:
    """
    A subscribed webhook endpoint.

    Attributes:
        id: Its id.
        url: Where deliveries are POSTed.
        types: The event types it receives (``None``: every type).
        status: ``"active"``, or ``"disabled"`` (it answered 410 Gone, or was
            disabled by hand): nothing is sent to it until it is enabled.
        disabled_reason: Why it was disabled.
        created_at: When it subscribed.
        updated_at: When it last changed.

    Its secrets are not an attribute: they are read only to sign.

    .. versionadded:: 0.2.0
    """

    id: int
    url: str
    types: tuple[str, ...] | None
    status: EndpointStatus
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The endpoint as JSON-ready data (no secrets)."""
        return {
            "id": self.id,
            "url": self.url,
            "types": None if self.types is None else list(self.types),
            "status": self.status,
            "disabled_reason": self.disabled_reason,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    """
    One event on its way to one endpoint.

    Attributes:
        id: Its id.
        endpoint_id: The endpoint.
        event_id: The event's id: the ``webhook-id`` header, the same on every
            attempt and to every endpoint (receivers deduplicate on it).
        event_type: The event's type.
        status: ``"pending"`` (due at *next_attempt_at*), ``"delivered"``, or
            ``"dead"``: the retry schedule ran out, or the endpoint was disabled
            (the dead-letter state; :meth:`Webhooks.redeliver` starts it again).
        attempts: How many attempts were made.
        next_attempt_at: When a pending delivery is due.
        last_status: The HTTP status of the last attempt (``None``: no answer).
        last_error: What went wrong last (a status line, a timeout, a refusal).
        last_attempt_at: When the last attempt was made.
        created_at: When the event was fanned out to the endpoint.
        delivered_at: When a 2xx answer came.

    .. versionadded:: 0.2.0
    """

    id: int
    endpoint_id: int
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """The delivery as JSON-ready data."""
        stamp = _iso
        return {
            "id": self.id,
            "endpoint_id": self.endpoint_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": stamp(self.next_attempt_at),
            "last_status": self.last_status,
            "last_error": self.last_error,
            "last_attempt_at": stamp(self.last_attempt_at),
            "created_at": stamp(self.created_at),
            "delivered_at": stamp(self.delivered_at),
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery claimed for one attempt: what to send, and to whom."""

    id: int
    token: str
    claimed_at: datetime
    attempt: int
    endpoint_id: int
    url: str
    secrets: tuple[str, ...]
    event_id: str
    body: bytes


def _id_type() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class WebhookTables:
    """The two tables, and the statements over them."""

    def __init__(self, metadata: sa.MetaData, prefix: str) -> None:
        self.endpoints = sa.Table(
            f"{prefix}_endpoints",
            metadata,
            sa.Column("id", _id_type(), primary_key=True, autoincrement=True),
            sa.Column("url", sa.String(2_000), nullable=False),
            sa.Column("secrets", sa.Text(), nullable=False),  # JSON list, newest first
            sa.Column("types", sa.Text(), nullable=True),  # JSON list; NULL: every type
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("disabled_reason", sa.String(MAX_ERROR), nullable=True),
            sa.Column("created_at", UTCDateTime(), nullable=False),
            sa.Column("updated_at", UTCDateTime(), nullable=False),
        )
        self.deliveries = sa.Table(
            f"{prefix}_deliveries",
            metadata,
            sa.Column("id", _id_type(), primary_key=True, autoincrement=True),
            sa.Column(
                "endpoint_id",
                _id_type(),
                sa.ForeignKey(self.endpoints.c.id, ondelete="CASCADE"),
                nullable=False,
            ),
            sa.Column("event_id", sa.String(32), nullable=False),
            sa.Column("event_type", sa.String(200), nullable=False),
            sa.Column("body", sa.Text(), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
            sa.Column("lease_until", UTCDateTime(), nullable=True),
            sa.Column("claim_token", sa.String(32), nullable=True),
            sa.Column("last_status", sa.Integer(), nullable=True),
            sa.Column("last_error", sa.String(MAX_ERROR), nullable=True),
            sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
            sa.Column("created_at", UTCDateTime(), nullable=False),
            sa.Column("delivered_at", UTCDateTime(), nullable=True),
            sa.UniqueConstraint("event_id", "endpoint_id"),  # a fan-out twice adds nothing
            sa.Index(f"ix_{prefix}_deliveries_due", "status", "next_attempt_at"),
            sa.Index(f"ix_{prefix}_deliveries_endpoint", "endpoint_id", "id"),
        )

    # -- endpoints -----------------------------------------------------------------

    def add_endpoint(
        self,
        conn: Connection,
        *,
        url: str,
        secrets: Sequence[str],
        types: Sequence[str] | None,
        now: datetime,
    ) -> Endpoint:
        table = self.endpoints
        values = {
            "url": url,
            "secrets": json.dumps(list(secrets)),
            "types": None if types is None else json.dumps(list(types)),
            "status": ACTIVE,
            "disabled_reason": None,
            "created_at": now,
            "updated_at": now,
        }
        new_id = conn.execute(table.insert().returning(table.c.id), values).scalar_one()
        return _endpoint({"id": new_id, **values})

    def get_endpoint(self, conn: Connection, endpoint_id: int) -> Endpoint | None:
        row = conn.execute(
            sa.select(self.endpoints).where(self.endpoints.c.id == endpoint_id)
        ).mappings().first()  # fmt: skip
        return None if row is None else _endpoint(row)

    def active_endpoints(self, conn: Connection) -> list[Endpoint]:
        table = self.endpoints
        rows = conn.execute(
            sa.select(table).where(table.c.status == ACTIVE).order_by(table.c.id)
        ).mappings()  # fmt: skip
        return [_endpoint(row) for row in rows]

    def set_endpoint(
        self, conn: Connection, endpoint_id: int, *, now: datetime, **values: Any
    ) -> bool:
        table = self.endpoints
        done = conn.execute(
            table.update().where(table.c.id == endpoint_id).values(updated_at=now, **values)
        )
        return done.rowcount > 0

    def secrets(self, conn: Connection, endpoint_id: int) -> list[str] | None:
        table = self.endpoints
        text = conn.execute(
            sa.select(table.c.secrets).where(table.c.id == endpoint_id)
        ).scalar_one_or_none()  # fmt: skip
        return None if text is None else list(json.loads(text))

    def delete_endpoint(self, conn: Connection, endpoint_id: int) -> bool:
        # The deliveries go first: SQLite enforces the foreign key only with the pragma.
        conn.execute(self.deliveries.delete().where(self.deliveries.c.endpoint_id == endpoint_id))
        done = conn.execute(self.endpoints.delete().where(self.endpoints.c.id == endpoint_id))
        return done.rowcount > 0

    def kill_pending(self, conn: Connection, endpoint_id: int, *, reason: str) -> int:
        """Every pending delivery of an endpoint becomes dead (it was disabled)."""
        table = self.deliveries
        done = conn.execute(
            table.update()
            .where(table.c.endpoint_id == endpoint_id, table.c.status == PENDING)
            .values(status=DEAD, lease_until=None, claim_token=None, last_error=reason[:MAX_ERROR])
        )
        return done.rowcount

    # -- deliveries ----------------------------------------------------------------

    def fan_out(
        self,
        conn: Connection,
        *,
        event_id: str,
        event_type: str,
        body: str,
        endpoint_ids: Sequence[int],
        now: datetime,
    ) -> list[int]:
        """One pending delivery per endpoint (none twice); the pending ones' ids."""
        table = self.deliveries
        if endpoint_ids:
            rows = [
                {
                    "endpoint_id": endpoint_id,
                    "event_id": event_id,
                    "event_type": event_type,
                    "body": body,
                    "status": PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for endpoint_id in endpoint_ids
            ]
            insert = (sqlite if conn.dialect.name == "sqlite" else postgresql).insert(table)
            conn.execute(insert.on_conflict_do_nothing(), rows)
        ids = conn.execute(
            sa.select(table.c.id)
            .where(table.c.event_id == event_id, table.c.status == PENDING)
            .order_by(table.c.id)
        ).scalars()
        return list(ids)

    def get_delivery(self, conn: Connection, delivery_id: int) -> Delivery | None:
        row = conn.execute(
            sa.select(self.deliveries).where(self.deliveries.c.id == delivery_id)
        ).mappings().first()  # fmt: skip
        return None if row is None else _delivery(row)

    def list_deliveries(
        self,
        conn: Connection,
        endpoint_id: int,
        *,
        status: DeliveryStatus | None,
        before: int | None,
        limit: int,
    ) -> list[Delivery]:
        table = self.deliveries
        query = sa.select(table).where(table.c.endpoint_id == endpoint_id)
        if status is not None:
            query = query.where(table.c.status == status)
        if before is not None:
            query = query.where(table.c.id < before)
        rows = conn.execute(query.order_by(table.c.id.desc()).limit(limit)).mappings()
        return [_delivery(row) for row in rows]

    def counts(self, conn: Connection, endpoint_id: int) -> dict[str, int]:
        table = self.deliveries
        rows = conn.execute(
            sa.select(table.c.status, sa.func.count())
            .where(table.c.endpoint_id == endpoint_id)
            .group_by(table.c.status)
        ).all()
        counts = dict.fromkeys((PENDING, DELIVERED, DEAD), 0)
        counts.update({str(status): int(count) for status, count in rows})
        return counts

    def _ready(self, now: datetime) -> sa.ColumnElement[bool]:
        """Pending, not leased to an attempt, and of an active endpoint."""
        table, endpoints = self.deliveries, self.endpoints
        active = (
            sa.select(endpoints.c.id)
            .where(endpoints.c.id == table.c.endpoint_id, endpoints.c.status == ACTIVE)
            .exists()
        )
        free = sa.or_(table.c.lease_until.is_(None), table.c.lease_until <= now)
        return sa.and_(table.c.status == PENDING, free, active)

    def due(self, conn: Connection, *, now: datetime, limit: int) -> list[tuple[int, int]]:
        """(id, attempts) of the deliveries due now, soonest first."""
        table = self.deliveries
        rows = conn.execute(
            sa.select(table.c.id, table.c.attempts)
            .where(self._ready(now), table.c.next_attempt_at <= now)
            .order_by(table.c.next_attempt_at, table.c.id)
            .limit(limit)
        )
        return [(int(row.id), int(row.attempts)) for row in rows]

    def next_due(self, conn: Connection, *, now: datetime) -> datetime | None:
        """When the soonest delivery that is ready (see _ready) is due."""
        table = self.deliveries
        when: datetime | None = conn.execute(
            sa.select(sa.func.min(table.c.next_attempt_at)).where(self._ready(now))
        ).scalar()
        return when

    def claim(
        self,
        conn: Connection,
        delivery_id: int,
        *,
        now: datetime,
        lease: datetime,
        token: str,
        attempts: int | None,
    ) -> bool:
        """
        Take a due, ready delivery for one attempt (False: not due, taken, or disabled;
        or it has made other than *attempts* attempts, if given: a stale wake-up, unless
        the one more it made died with its lease unrecorded).
        """
        table = self.deliveries
        query = table.update().where(
            table.c.id == delivery_id, self._ready(now), table.c.next_attempt_at <= now
        )
        if attempts is not None:
            # Also the attempt after it, when that one's lease ran out unrecorded: the
            # process that claimed it on this wake-up died, and the broker redelivered it.
            died = sa.and_(table.c.attempts == attempts + 1, table.c.lease_until.is_not(None))
            query = query.where(sa.or_(table.c.attempts == attempts, died))
        done = conn.execute(
            query.values(attempts=table.c.attempts + 1, lease_until=lease, claim_token=token)
        )
        return done.rowcount == 1

    def claimed(self, conn: Connection, delivery_id: int, *, token: str, now: datetime) -> Claim:
        deliveries, endpoints = self.deliveries, self.endpoints
        row = conn.execute(
            sa.select(
                deliveries.c.id,
                deliveries.c.attempts,
                deliveries.c.endpoint_id,
                endpoints.c.url,
                endpoints.c.secrets,
                deliveries.c.event_id,
                deliveries.c.body,
            )
            .join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
            .where(deliveries.c.id == delivery_id)
        ).one()
        return Claim(
            row.id,
            token,
            now,
            row.attempts,
            row.endpoint_id,
            row.url,
            tuple(json.loads(row.secrets)),
            row.event_id,
            row.body.encode(),
        )

    def state(self, conn: Connection, delivery_id: int) -> Any:
        """A delivery's status, due time, lease and attempts, and its endpoint's status."""
        table, endpoints = self.deliveries, self.endpoints
        return conn.execute(
            sa.select(
                table.c.status,
                table.c.next_attempt_at,
                table.c.lease_until,
                table.c.attempts,
                endpoints.c.status.label("endpoint_status"),
            )
            .select_from(table.outerjoin(endpoints, endpoints.c.id == table.c.endpoint_id))
            .where(table.c.id == delivery_id)
        ).first()

    def bury(self, conn: Connection, delivery_id: int, *, reason: str) -> None:
        """A pending delivery whose endpoint is disabled or gone becomes dead."""
        table = self.deliveries
        conn.execute(
            table.update()
            .where(table.c.id == delivery_id, table.c.status == PENDING)
            .values(status=DEAD, lease_until=None, claim_token=None, last_error=reason[:MAX_ERROR])
        )

    def finish(self, conn: Connection, claim: Claim, **values: Any) -> bool:
        """Record an attempt's outcome, if the claim still holds (no one took it over)."""
        table = self.deliveries
        done = conn.execute(
            table.update()
            .where(
                table.c.id == claim.id,
                table.c.claim_token == claim.token,
                table.c.status == PENDING,
            )
            .values(lease_until=None, claim_token=None, **values)
        )
        return done.rowcount == 1

    def revive(
        self, conn: Connection, delivery_id: int, *, endpoint_id: int | None, now: datetime
    ) -> bool:
        """A dead delivery of an active endpoint (of *endpoint_id*, if given) pending again."""
        table, endpoints = self.deliveries, self.endpoints
        active = (
            sa.select(endpoints.c.id)
            .where(endpoints.c.id == table.c.endpoint_id, endpoints.c.status == ACTIVE)
            .exists()
        )
        query = table.update().where(table.c.id == delivery_id, table.c.status == DEAD, active)
        if endpoint_id is not None:
            query = query.where(table.c.endpoint_id == endpoint_id)
        done = conn.execute(
            query.values(
                status=PENDING, attempts=0, next_attempt_at=now, lease_until=None, claim_token=None
            )
        )
        return done.rowcount == 1

    def purge(self, conn: Connection, *, before: datetime) -> int:
        table = self.deliveries
        done = conn.execute(
            table.delete().where(table.c.status != PENDING, table.c.created_at < before)
        )
        return done.rowcount


def _endpoint(row: Any) -> Endpoint:
    types = row["types"]
    return Endpoint(
        id=int(row["id"]),
        url=row["url"],
        types=None if types is None else tuple(json.loads(types)),
        status=row["status"],
        disabled_reason=row["disabled_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _delivery(row: Any) -> Delivery:
    return Delivery(
        id=int(row["id"]),
        endpoint_id=int(row["endpoint_id"]),
        event_id=row["event_id"],
        event_type=row["event_type"],
        status=row["status"],
        attempts=int(row["attempts"]),
        next_attempt_at=row["next_attempt_at"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        last_attempt_at=row["last_attempt_at"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
    )
