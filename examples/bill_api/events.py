"""
What happens to the API's events (vote casts, bill status changes) once they leave the outbox.

Every committed write's events are written to the outbox in the write's transaction
(:mod:`perfkit.reference.events`). The relay hands them on, and :func:`handle` consumes
each one: for now it writes it to the ``bill_api.events`` log as one JSON line (webhook
delivery comes next). Deliveries are at least once: a consumer deduplicates on ``id``.

Two ways to run the relay and the consumer:

* embedded (the default, and ``make demo``): a relay thread in the API process hands
  events straight to :func:`handle` (:class:`~perfkit.outbox.InProcessPublisher`);
* on RabbitMQ, with ``PERFKIT_AMQP_URL`` set: the API only writes the outbox, and two
  more processes move the events, one command each::

      PYTHONPATH=examples python -m bill_api.relay     # outbox -> RabbitMQ
      PYTHONPATH=examples dramatiq bill_api.worker     # RabbitMQ -> handle()
"""

from __future__ import annotations

import json
import logging
import os
from typing import Final

from perfkit.outbox import Event, Outbox

__all__ = ["QUEUE", "amqp_url", "handle", "outbox"]

log = logging.getLogger("bill_api.events")

QUEUE: Final = "bill_api.events"


def outbox() -> Outbox:
    """The API's outbox (table ``perfkit_outbox``)."""
    return Outbox()


def amqp_url() -> str | None:
    """The RabbitMQ the events go through, or ``None`` to relay them in process."""
    return os.environ.get("PERFKIT_AMQP_URL") or None


def handle(event: Event) -> None:
    """Consume one event: one JSON line on the ``bill_api.events`` log."""
    log.info("%s", json.dumps({"event": event.to_message()}, separators=(",", ":")))
