"""
The dramatiq worker that consumes the API's events from RabbitMQ: ``dramatiq bill_api.worker``.

Needs ``PERFKIT_AMQP_URL``. The broker confirms what it accepts, so the relay
(``python -m bill_api.relay``) deletes an event from the outbox only once RabbitMQ holds
it; the worker acknowledges a message after :func:`bill_api.events.handle` returns, so a
worker killed mid-message leaves it to be delivered again.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bill_api import events
from perfkit.outbox import Event

__all__ = ["broker", "deliver"]

_url = events.amqp_url()
if _url is None:
    msg = "set PERFKIT_AMQP_URL to the RabbitMQ the events go through"
    raise SystemExit(msg)
broker = RabbitmqBroker(url=_url, confirm_delivery=True)
dramatiq.set_broker(broker)
logging.getLogger("bill_api.events").setLevel(logging.INFO)


@dramatiq.actor(queue_name=events.QUEUE, max_retries=20)
def deliver(message: dict[str, Any]) -> None:
    """One event from the outbox."""
    events.handle(Event.from_message(message))
