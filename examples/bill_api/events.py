"""
What happens to the API's events (vote casts, bill status changes) once they leave the outbox.

Every committed write's events are written to the outbox in the write's transaction
(:mod:`perfkit.reference.events`). The relay hands them on, and each one is consumed
twice over: :func:`handle` writes it to the ``bill_api.events`` log as one JSON line,
and the webhooks fan it out to every endpoint subscribed with ``POST /webhooks``
(:func:`webhooks`), delivered signed, on the Standard Webhooks retry schedule.
Deliveries are at least once: a consumer deduplicates on ``id`` (``webhook-id``).

Two ways to run the relay and the consumers:

* embedded (the default, and ``make demo``): a relay thread in the API process hands
  events to :func:`handle` and to a :class:`~perfkit.webhooks.WebhookWorker`'s threads;
* on RabbitMQ, with ``PERFKIT_AMQP_URL`` set: the API only writes the outbox, and two
  more processes move the events, one command each::

      PYTHONPATH=examples python -m bill_api.relay     # outbox -> RabbitMQ
      PYTHONPATH=examples dramatiq bill_api.worker     # RabbitMQ -> handle(), webhooks

``PERFKIT_WEBHOOKS_ALLOW_PRIVATE=1`` lets endpoints be on loopback and private addresses
(a receiver on this machine, the tests); by default they must be public.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Final

from sqlalchemy.engine import Engine

from perfkit.outbox import Event, Outbox
from perfkit.reference.events import TYPES
from perfkit.webhooks import Webhooks

__all__ = ["QUEUE", "WEBHOOK_QUEUE", "amqp_url", "consumer", "handle", "outbox", "webhooks"]

log = logging.getLogger("bill_api.events")

QUEUE: Final = "bill_api.events"
WEBHOOK_QUEUE: Final = "bill_api.webhooks"


def outbox() -> Outbox:
    """The API's outbox (table ``perfkit_outbox``)."""
    return Outbox()


def amqp_url() -> str | None:
    """The RabbitMQ the events go through, or ``None`` to relay them in process."""
    return os.environ.get("PERFKIT_AMQP_URL") or None


def handle(event: Event) -> None:
    """Consume one event: one JSON line on the ``bill_api.events`` log."""
    log.info("%s", json.dumps({"event": event.to_message()}, separators=(",", ":")))


def webhooks(engine: Engine, *, create: bool = True) -> Webhooks:
    """The API's webhook endpoints and deliveries (tables ``perfkit_webhook_*``)."""
    hooks = Webhooks(
        engine,
        event_types=TYPES,
        allow_private=os.environ.get("PERFKIT_WEBHOOKS_ALLOW_PRIVATE") == "1",
    )
    if create:
        hooks.create()
    return hooks


def consumer(dispatch: Callable[[Event], object]) -> Callable[[Event], None]:
    """What consumes each event: the log line, then the webhooks' fan-out by *dispatch*."""

    def consume(event: Event) -> None:
        handle(event)
        dispatch(event)

    return consume
