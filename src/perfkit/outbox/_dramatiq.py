"""
The relay's publisher for dramatiq (``pip install perfkit[queue]``): RabbitMQ, confirmed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._outbox import Event

if TYPE_CHECKING:
    import dramatiq

__all__ = ["DramatiqPublisher"]


class DramatiqPublisher:
    """
    Send each event to a dramatiq *actor* as its one argument (:meth:`Event.to_message`).

    A RabbitMQ broker must confirm what it accepts
    (``RabbitmqBroker(confirm_delivery=True)``): only then does a send that
    returns mean the message is in RabbitMQ, and the relay may delete the
    event. One without confirms is refused. (Redis brokers answer each
    enqueue before it returns.) RabbitMQ keeps the order; a worker with one
    process and one thread handles it in that order. The worker starts with dramatiq's
    own command (``dramatiq yourapp.worker``); it acknowledges a message
    after the actor returns, so a worker killed mid-message leaves it to
    RabbitMQ to deliver again.

    Example::

        broker = RabbitmqBroker(url="amqp://guest:guest@127.0.0.1:5672/", confirm_delivery=True)

        @dramatiq.actor(broker=broker, queue_name="events")
        def deliver(message: dict) -> None:
            event = Event.from_message(message)
            ...

        Relay(engine, outbox, DramatiqPublisher(deliver)).run()

    .. versionadded:: 0.2.0
    """

    __slots__ = ("_actor",)

    def __init__(self, actor: dramatiq.Actor[Any, Any]) -> None:
        broker = actor.broker
        if getattr(broker, "confirm_delivery", None) is False:
            msg = (
                "the actor's broker does not confirm deliveries: a publish could be lost "
                "after the relay deleted it; use RabbitmqBroker(confirm_delivery=True)"
            )
            raise ValueError(msg)
        self._actor = actor

    def publish(self, events: Sequence[Event]) -> None:
        """Send each event in order; each send waits for the broker's confirm."""
        send = self._actor.send
        for event in events:
            send(event.to_message())
