"""
The dramatiq worker that consumes the API's events from RabbitMQ: ``dramatiq bill_api.worker``.

Needs ``PERFKIT_AMQP_URL``, and ``PERFKIT_DATABASE_URL`` (default: the demo database),
where the webhook endpoints and deliveries are. The broker confirms what it accepts, so
the relay (``python -m bill_api.relay``) deletes an event from the outbox only once
RabbitMQ holds it; the worker acknowledges a message after :func:`deliver` returns, so a
worker killed mid-message leaves it to be delivered again. :func:`deliver` logs the event
and fans it out to the webhook endpoints; each attempt is a message on
``bill_api.webhooks`` (:data:`webhook_queue`), delayed until it is due.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bill_api import events
from bill_api.app import DEFAULT_DATABASE_URL
from perfkit import db
from perfkit.outbox import Event
from perfkit.webhooks import DramatiqWebhooks

__all__ = ["broker", "deliver", "webhook_queue"]

_url = events.amqp_url()
if _url is None:
    msg = "set PERFKIT_AMQP_URL to the RabbitMQ the events go through"
    raise SystemExit(msg)
broker = RabbitmqBroker(url=_url, confirm_delivery=True)
dramatiq.set_broker(broker)
logging.getLogger("bill_api.events").setLevel(logging.INFO)
_engine = db.create_engine(os.environ.get("PERFKIT_DATABASE_URL") or DEFAULT_DATABASE_URL)
webhook_queue = DramatiqWebhooks(
    events.webhooks(_engine), broker=broker, queue_name=events.WEBHOOK_QUEUE
)


# dramatiq's retries are delayed messages, held unacknowledged: keep them under
# RabbitMQ's 30-minute consumer timeout (dramatiq's default backoff goes up to 7 days).
@dramatiq.actor(queue_name=events.QUEUE, max_retries=20, max_backoff=600_000)
def deliver(message: dict[str, Any]) -> None:
    """One event from the outbox: logged, and fanned out to the webhook endpoints."""
    events.consumer(webhook_queue.dispatch)(Event.from_message(message))
