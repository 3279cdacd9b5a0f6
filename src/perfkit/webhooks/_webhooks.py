"""
Webhook endpoints and deliveries: subscribe, fan events out, attempt a delivery, record it.

One attempt: claim the delivery row (one claimant wins), check the URL again and pin the
address checked, POST the signed body through the endpoint's circuit breaker, then record
the outcome: delivered (2xx), disabled (410), due again on the retry schedule (anything
else, a ``Retry-After`` honoured), or dead when the schedule runs out. What runs the
attempts (a thread pool in process, or a queue's worker) is in :mod:`._runners`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random as _random
import ssl
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perfkit import db as _db
from perfkit._clock import SYSTEM_CLOCK, Clock
from perfkit.errors import CircuitOpenError, Conflict, InvalidInput, NotFound
from perfkit.outbox import Event
from perfkit.resilience import CircuitBreaker

from ._schedule import RETRY_SCHEDULE, parse_retry_after, retry_delay
from ._sender import Answer, Sender
from ._signing import WebhookSigner, _key
from ._store import (
    ACTIVE,
    DEAD,
    DELIVERED,
    DISABLED,
    MAX_ERROR,
    Claim,
    Delivery,
    DeliveryStatus,
    Endpoint,
    WebhookTables,
)
from ._targets import Resolver, check_url, system_resolver

__all__ = ["DEFAULT_TIMEOUT", "Subscription", "Webhooks"]

log = logging.getLogger("perfkit.webhooks")

DEFAULT_TIMEOUT: Final = 15.0
MAX_TIMEOUT: Final = 30.0
DEFAULT_PREFIX: Final = "perfkit_webhook"
MAX_TYPES: Final = 50
MAX_LIMIT: Final = 1_000
_STATUSES: Final = ("pending", DELIVERED, DEAD)


@dataclass(frozen=True, slots=True)
class Subscription:
    """
    A new endpoint and its signing secret (shown this once: it is not read back).

    .. versionadded:: 0.2.0
    """

    endpoint: Endpoint
    secret: str


class _Failed(Exception):
    """An attempt that failed: raised through the breaker so that it counts."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.error)
        self.answer = answer


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and 24 random bytes in base64 (192 bits)."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


class Webhooks:
    """
    Webhook endpoints, and the delivery of events to them per the Standard Webhooks spec.

    The state lives in two tables (``<prefix>_endpoints`` and
    ``<prefix>_deliveries``) in *engine*'s database. :meth:`dispatch` turns an
    event (from the outbox's relay, say) into one pending delivery per
    subscribed endpoint; :meth:`attempt` makes one attempt at one delivery and
    says when the next is due. Something must call it: a
    :class:`WebhookWorker` thread pool in process, or a queue's worker
    (:class:`DramatiqWebhooks`). The table is the truth, so a wake-up that is
    lost, late or doubled changes nothing: two attempts at one delivery never
    run at once.

    Each attempt POSTs the event as ``{"type", "timestamp", "data"}`` JSON, signed
    with every secret of the endpoint (``webhook-id`` is the event's id on
    every attempt: receivers deduplicate on it). A 2xx answer delivers it; 410
    Gone disables the endpoint (its pending deliveries turn dead); anything else
    (a status, a timeout, a refused address, an open breaker aside) is tried
    again on *schedule* with jitter, later when the receiver's ``Retry-After``
    asks, until the schedule runs out and the delivery is dead (the dead-letter
    state: :meth:`deliveries` lists them, :meth:`redeliver` starts one again).
    Each endpoint has its own circuit breaker: while it is open, deliveries wait
    without using up attempts.

    Args:
        engine: The database of the two tables.
        metadata: The ``MetaData`` the tables join (one of their own by default).
        prefix: The tables' name prefix.
        timeout: Seconds an attempt may take in all: the name's lookup,
            connecting, sending, and the answer's status and headers (more than
            0 and at most 30; Standard Webhooks suggests 15-30).
        allow_private: Send to loopback and private addresses too (tests, a
            private network); by default a URL must resolve to public addresses
            only, at subscription and before every attempt.
        resolve: The name resolver (``resolve(host, port) -> addresses``).
        event_types: The types endpoints may subscribe to (``None``: any).
        schedule: Seconds before each attempt (:data:`RETRY_SCHEDULE`).
        jitter: Spread of each delay, as a fraction either way.
        breaker: Makes each endpoint's breaker from its id (default: open after
            5 failures in a row, a trial after 60 s).
        verify: TLS verification, as httpx takes it: ``True`` (the system's
            CAs), an ``ssl.SSLContext`` (a private CA), or ``False`` (tests only).
        clock: A fake clock for tests: its reading is taken as the wall time,
            in seconds since the epoch.
        random: The jitter's random source.

    Example::

        webhooks = Webhooks(engine, event_types=["order.placed"])
        webhooks.create()
        sub = webhooks.subscribe("https://hooks.example.com/orders", types=["order.placed"])
        worker = WebhookWorker(webhooks)
        worker.start()
        Relay(engine, outbox, InProcessPublisher(worker.dispatch)).start()

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        engine: Engine,
        *,
        metadata: sa.MetaData | None = None,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        allow_private: bool = False,
        resolve: Resolver = system_resolver,
        event_types: Collection[str] | None = None,
        schedule: Sequence[float] = RETRY_SCHEDULE,
        jitter: float = 0.1,
        breaker: Callable[[int], CircuitBreaker] | None = None,
        verify: ssl.SSLContext | str | bool = True,
        clock: Clock | None = None,
        random: _random.Random | None = None,
    ) -> None:
        if not 0 < timeout <= MAX_TIMEOUT:
            msg = f"timeout must be more than 0 and at most {MAX_TIMEOUT:g} s, not {timeout!r}"
            raise ValueError(msg)
        if not schedule:
            msg = "the schedule needs at least one attempt"
            raise ValueError(msg)
        self.engine = engine
        self._writer = _db.for_writes(engine)
        self.tables = WebhookTables(metadata if metadata is not None else sa.MetaData(), prefix)
        self.timeout = timeout
        self.allow_private = allow_private
        self._resolve = resolve
        self.event_types = None if event_types is None else frozenset(event_types)
        self._schedule = tuple(schedule)
        self._jitter = jitter
        self._random = random
        self._clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        self._wall: Callable[[], float] = time.time if clock is None else clock.monotonic
        self._make_breaker = breaker or self._default_breaker
        self._breakers: dict[int, CircuitBreaker] = {}
        self._breakers_lock = threading.Lock()
        self._sender = Sender(
            timeout=timeout, allow_private=allow_private, resolve=resolve, verify=verify
        )

    # -- setup -----------------------------------------------------------------------

    def create(self) -> None:
        """Create the two tables if they are missing (:func:`perfkit.db.create_tables`)."""
        _db.create_tables(self.engine, self.tables.endpoints, self.tables.deliveries)

    def close(self) -> None:
        """Close the HTTP client and stop its thread (a later attempt starts them again)."""
        self._sender.close()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._wall(), UTC)

    # -- endpoints -------------------------------------------------------------------

    def check_url(self, url: str) -> str:
        """
        *url* if webhooks may be sent there (see :func:`check_url`).

        Raises:
            InvalidInput: they may not.
        """
        check_url(url, allow_private=self.allow_private, resolve=self._resolve)
        return url

    def subscribe(
        self, url: str, *, secret: str | None = None, types: Sequence[str] | None = None
    ) -> Subscription:
        """
        Subscribe an endpoint to every event, or to *types*; return it with its secret.

        Args:
            url: Where to POST (checked: :meth:`check_url`).
            secret: Its signing secret (``whsec_`` + base64, at least 16
                bytes); a new random one by default.
            types: The event types it receives (``None``: every one).

        Raises:
            InvalidInput: the URL, the secret or the types are refused.
        """
        chosen = new_secret() if secret is None else secret
        try:
            _key(chosen)
        except ValueError as exc:
            raise InvalidInput("secret", str(exc)) from None
        wanted = self._check_types(types)
        self.check_url(url)  # last: it may look the name up
        with self._writer.begin() as conn:
            endpoint = self.tables.add_endpoint(
                conn, url=url, secrets=[chosen], types=wanted, now=self._now()
            )
        return Subscription(endpoint, chosen)

    def _check_types(self, types: Sequence[str] | None) -> list[str] | None:
        if types is None:
            return None
        if isinstance(types, str) or not 0 < len(types) <= MAX_TYPES:
            msg = f"types is a list of 1 to {MAX_TYPES} event types, or null for every type"
            raise InvalidInput("types", msg)
        for kind in types:
            if type(kind) is not str or not 0 < len(kind) <= 200:
                raise InvalidInput("types", "an event type is a string of 1 to 200 characters")
            if self.event_types is not None and kind not in self.event_types:
                known = ", ".join(sorted(self.event_types))
                raise InvalidInput("types", f"unknown event type {kind!r} (known: {known})")
        return list(dict.fromkeys(types))

    def endpoint(self, endpoint_id: int) -> Endpoint:
        """
        The endpoint *endpoint_id*.

        Raises:
            NotFound: there is none.
        """
        with self.engine.connect() as conn:
            found = self.tables.get_endpoint(conn, endpoint_id)
        if found is None:
            raise NotFound("webhook endpoint", endpoint_id)
        return found

    def counts(self, endpoint_id: int) -> dict[str, int]:
        """How many of the endpoint's deliveries are pending, delivered and dead."""
        with self.engine.connect() as conn:
            return self.tables.counts(conn, endpoint_id)

    def disable(self, endpoint_id: int, *, reason: str = "disabled by hand") -> Endpoint:
        """
        Stop sending to an endpoint; its pending deliveries turn dead (redeliverable).

        Raises:
            NotFound: there is no such endpoint.
        """
        now = self._now()
        with self._writer.begin() as conn:
            self._disable(conn, endpoint_id, reason=reason, now=now)
        return self.endpoint(endpoint_id)

    def _disable(
        self,
        conn: sa.Connection,
        endpoint_id: int,
        *,
        reason: str,
        now: datetime,
        missing_ok: bool = False,
    ) -> None:
        text = reason[:MAX_ERROR]
        if not self.tables.set_endpoint(
            conn, endpoint_id, now=now, status=DISABLED, disabled_reason=text
        ):
            if missing_ok:
                return
            raise NotFound("webhook endpoint", endpoint_id)
        self.tables.kill_pending(conn, endpoint_id, reason=f"endpoint disabled: {text}")

    def enable(self, endpoint_id: int) -> Endpoint:
        """
        Send to a disabled endpoint again (its dead deliveries stay dead: :meth:`redeliver`).

        Raises:
            NotFound: there is no such endpoint.
        """
        with self._writer.begin() as conn:
            if not self.tables.set_endpoint(
                conn, endpoint_id, now=self._now(), status=ACTIVE, disabled_reason=None
            ):
                raise NotFound("webhook endpoint", endpoint_id)
        with self._breakers_lock:
            self._breakers.pop(endpoint_id, None)  # a fresh start
        return self.endpoint(endpoint_id)

    def rotate_secret(self, endpoint_id: int, secret: str | None = None) -> str:
        """
        Sign with a new secret (returned) and, for a while, the previous one too.

        Messages carry both signatures until the next rotation, so a receiver
        can switch to the new secret when it likes.

        Raises:
            NotFound: there is no such endpoint.
            InvalidInput: *secret* is malformed.
        """
        chosen = new_secret() if secret is None else secret
        try:
            _key(chosen)
        except ValueError as exc:
            raise InvalidInput("secret", str(exc)) from None
        with self._writer.begin() as conn:
            current = self.tables.secrets(conn, endpoint_id)
            if current is None:
                raise NotFound("webhook endpoint", endpoint_id)
            self.tables.set_endpoint(
                conn, endpoint_id, now=self._now(), secrets=json.dumps([chosen, current[0]])
            )
        return chosen

    def unsubscribe(self, endpoint_id: int) -> None:
        """
        Delete an endpoint and its deliveries.

        Raises:
            NotFound: there is no such endpoint.
        """
        with self._writer.begin() as conn:
            if not self.tables.delete_endpoint(conn, endpoint_id):
                raise NotFound("webhook endpoint", endpoint_id)
        with self._breakers_lock:
            self._breakers.pop(endpoint_id, None)

    # -- deliveries ------------------------------------------------------------------

    def dispatch(self, event: Event) -> list[int]:
        """
        One pending delivery of *event* per active endpoint subscribed to its type.

        Idempotent on the event's id (a relay may hand an event over twice):
        returns the ids of the event's pending deliveries, due now.
        """
        with self.engine.connect() as conn:
            endpoints = self.tables.active_endpoints(conn)
        wanted = [e.id for e in endpoints if e.types is None or event.type in e.types]
        if not wanted:
            return []
        body = json.dumps(
            {"type": event.type, "timestamp": event.created_at.isoformat(), "data": event.payload},
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
        with self._writer.begin() as conn:
            return self.tables.fan_out(
                conn,
                event_id=event.id,
                event_type=event.type,
                body=body,
                endpoint_ids=wanted,
                now=self._now(),
            )

    def delivery(self, delivery_id: int) -> Delivery:
        """
        The delivery *delivery_id*.

        Raises:
            NotFound: there is none.
        """
        with self.engine.connect() as conn:
            found = self.tables.get_delivery(conn, delivery_id)
        if found is None:
            raise NotFound("webhook delivery", delivery_id)
        return found

    def deliveries(
        self,
        endpoint_id: int,
        *,
        status: DeliveryStatus | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        """
        An endpoint's deliveries, newest first: all, or those in *status*
        (``"dead"``: the dead letters); *before* a delivery id, to page on.

        Raises:
            NotFound: there is no such endpoint.
            InvalidInput: *status* or *limit* is out of range.
        """
        if status is not None and status not in _STATUSES:
            raise InvalidInput("status", f"one of {', '.join(_STATUSES)}, not {status!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_LIMIT:
            raise InvalidInput("limit", f"an integer from 1 to {MAX_LIMIT:,}")
        with self.engine.connect() as conn:
            if self.tables.get_endpoint(conn, endpoint_id) is None:
                raise NotFound("webhook endpoint", endpoint_id)
            return self.tables.list_deliveries(
                conn, endpoint_id, status=status, before=before, limit=limit
            )

    def redeliver(self, delivery_id: int, *, endpoint_id: int | None = None) -> Delivery:
        """
        Start a dead delivery again: pending, due now, attempts from zero.

        Args:
            delivery_id: The delivery.
            endpoint_id: The endpoint it must belong to (an API's path), if any.

        Raises:
            NotFound: there is no such delivery (of that endpoint).
            Conflict: it is not dead, or its endpoint is disabled (:meth:`enable` it).
        """
        tables = self.tables
        with self._writer.begin() as conn:
            revived = tables.revive(conn, delivery_id, endpoint_id=endpoint_id, now=self._now())
            found = tables.get_delivery(conn, delivery_id)
            if found is None or endpoint_id not in (None, found.endpoint_id):
                raise NotFound("webhook delivery", delivery_id)
            if revived:
                return found
            endpoint = tables.get_endpoint(conn, found.endpoint_id)
        if endpoint is None or endpoint.status != ACTIVE:
            raise Conflict(f"webhook endpoint {found.endpoint_id} is disabled; enable it first")
        raise Conflict(f"webhook delivery {delivery_id} is {found.status}, not dead")

    def due(self, limit: int = 100) -> list[int]:
        """The ids of pending deliveries due now and not being attempted, soonest first."""
        return [delivery_id for delivery_id, _ in self.due_wakeups(limit)]

    def due_wakeups(self, limit: int = 100) -> list[tuple[int, int]]:
        """:meth:`due` as ``(id, attempts)``: what a queue's wake-up (:meth:`wake`) carries."""
        with self.engine.connect() as conn:
            return self.tables.due(conn, now=self._now(), limit=limit)

    def next_due(self) -> float | None:
        """
        Seconds until the soonest pending delivery is due (0: one is), leaving out those
        being attempted; ``None``: none.
        """
        now = self._now()
        with self.engine.connect() as conn:
            when = self.tables.next_due(conn, now=now)
        return None if when is None else max(0.0, (when - now).total_seconds())

    def purge(self, older_than: timedelta) -> int:
        """Delete delivered and dead deliveries made more than *older_than* ago; how many."""
        with self._writer.begin() as conn:
            return self.tables.purge(conn, before=self._now() - older_than)

    # -- one attempt -----------------------------------------------------------------

    def attempt(self, delivery_id: int) -> float | None:
        """
        Make one attempt at a delivery if it is due, and record the outcome.

        Returns the seconds until it should be looked at again (it failed and
        is due again then, it is not due yet, or another attempt holds it), or
        ``None``: it is done (delivered or dead), or there is no such delivery.
        Raises only what the database raises (the attempt is then made again
        once its lease has run out).
        """
        outcome = self._attempt(delivery_id, expected=None)
        return None if outcome is None else outcome[0]

    def wake(self, delivery_id: int, attempts: int) -> tuple[float, int] | None:
        """
        A queue's wake-up for a delivery, sent when it had made *attempts* attempts.

        Like :meth:`attempt`, but a wake-up that is stale (the delivery has
        made more attempts since) or that finds another attempt in flight does
        nothing and returns ``None``: that attempt sends the next wake-up, so
        wake-ups never multiply however many were sent. Otherwise returns
        ``(seconds, attempts)`` for the next wake-up to send, or ``None``: done.
        """
        return self._attempt(delivery_id, expected=attempts)

    def _attempt(self, delivery_id: int, *, expected: int | None) -> tuple[float, int] | None:
        now = self._now()
        token = os.urandom(16).hex()
        lease = now + timedelta(seconds=2 * self.timeout + 5)  # an attempt takes <= timeout
        with self._writer.begin() as conn:
            claimed = self.tables.claim(
                conn, delivery_id, now=now, lease=lease, token=token, attempts=expected
            )
            claim = (
                self.tables.claimed(conn, delivery_id, token=token, now=now) if claimed else None
            )
        if claim is None:
            return self._not_claimed(delivery_id, now, expected)
        breaker = self._breaker(claim.endpoint_id)
        try:
            answer = breaker.call(self._send, claim)
        except CircuitOpenError as refused:
            wait = max(refused.retry_after, 5.0)
            with self._writer.begin() as conn:  # waits without using up an attempt
                kept = self.tables.finish(
                    conn,
                    claim,
                    attempts=claim.attempt - 1,
                    next_attempt_at=self._now() + timedelta(seconds=wait),
                    last_error=f"circuit breaker open; tried again in {wait:.0f} s",
                )
            return (wait, claim.attempt - 1) if kept else None
        except _Failed as failed:
            answer = failed.answer
        again = self._record(claim, answer)
        return None if again is None else (again, claim.attempt)

    def _not_claimed(
        self, delivery_id: int, now: datetime, expected: int | None
    ) -> tuple[float, int] | None:
        with self.engine.connect() as conn:
            row = self.tables.state(conn, delivery_id)
        if row is None or row.status != "pending":
            return None
        if row.endpoint_status != ACTIVE:  # disabled (or deleted) since it was fanned out
            with self._writer.begin() as conn:
                self.tables.bury(conn, delivery_id, reason="endpoint disabled or deleted")
            return None
        leased = row.lease_until is not None
        if expected is None:
            expected = row.attempts
        elif not (row.attempts == expected or (row.attempts == expected + 1 and leased)):
            return None  # stale: the wake-up of a later attempt count carries on
        if leased and row.lease_until > now:
            # In flight, or claimed by a process that died holding this very wake-up (the
            # broker redelivered it): look again when the lease ends. If the attempt was
            # alive, this wake-up is stale by then and does nothing.
            return (row.lease_until - now).total_seconds(), expected
        return max(0.0, (row.next_attempt_at - now).total_seconds()), expected

    def _record(self, claim: Claim, answer: Answer) -> float | None:
        now = self._now()
        status = answer.status
        done = {"last_status": status, "last_attempt_at": claim.claimed_at}
        with self._writer.begin() as conn:
            if status is not None and 200 <= status < 300:
                self.tables.finish(
                    conn, claim, status=DELIVERED, delivered_at=now, last_error=None, **done
                )
                return None
            error = (answer.error or "")[:MAX_ERROR]
            if status == 410:
                if self.tables.finish(conn, claim, status=DEAD, last_error=error, **done):
                    reason = f"it answered 410 Gone at {now:%Y-%m-%d %H:%M:%S} UTC"
                    self._disable(conn, claim.endpoint_id, reason=reason, now=now, missing_ok=True)
                    log.warning(
                        "webhook endpoint %s answered 410 Gone: disabled", claim.endpoint_id
                    )
                return None
            retry_after = parse_retry_after(answer.retry_after, now=self._wall())
            wait = retry_delay(
                claim.attempt + 1,
                retry_after=retry_after,
                schedule=self._schedule,
                jitter=self._jitter,
                random=self._random,
            )
            if wait is None:
                self.tables.finish(conn, claim, status=DEAD, last_error=error, **done)
                log.warning(
                    "webhook delivery %s is dead after %d attempts: %s",
                    claim.id, claim.attempt, error,
                )  # fmt: skip
                return None
            recorded = self.tables.finish(
                conn,
                claim,
                next_attempt_at=now + timedelta(seconds=wait),
                last_error=error,
                **done,
            )
            return wait if recorded else None

    def _send(self, claim: Claim) -> Answer:
        """POST one signed attempt; raise _Failed when it failed (the breaker counts it)."""
        headers = WebhookSigner(claim.secrets).headers(
            claim.event_id, claim.body, timestamp=int(self._wall())
        )
        headers["content-type"] = "application/json"
        headers["user-agent"] = "perfkit-webhooks"
        answer = self._sender.post(claim.url, claim.body, headers)
        status = answer.status
        if status is not None and (200 <= status < 300 or status == 410):
            return answer  # 410 is not the endpoint failing: it is gone
        raise _Failed(answer)

    def _breaker(self, endpoint_id: int) -> CircuitBreaker:
        breakers = self._breakers
        found = breakers.get(endpoint_id)
        if found is None:
            with self._breakers_lock:
                found = breakers.get(endpoint_id)
                if found is None:
                    found = breakers[endpoint_id] = self._make_breaker(endpoint_id)
        return found

    def _default_breaker(self, endpoint_id: int) -> CircuitBreaker:
        return CircuitBreaker(
            name=f"webhook-endpoint-{endpoint_id}",
            fail_max=5,
            reset_timeout=60,
            clock=self._clock,
        )
