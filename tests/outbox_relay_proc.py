"""
A relay in a process of its own, for the kill test: ``python outbox_relay_proc.py DB_URL QUEUE``.

It publishes through dramatiq to RabbitMQ, slowly (10 ms per event, batches of 20), so the
test can kill it mid-batch; it prints "published N" after each send.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from perfkit import db
from perfkit.outbox import DramatiqPublisher, Event, Outbox, Relay


class Slow:
    def __init__(self, inner: DramatiqPublisher) -> None:
        self.inner = inner
        self.sent = 0

    def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            self.inner.publish([event])
            self.sent += 1
            print(f"published {self.sent}", flush=True)
            time.sleep(0.01)


def main() -> None:
    url, queue, amqp = sys.argv[1:4]
    broker = RabbitmqBroker(url=amqp, confirm_delivery=True)
    actor = dramatiq.actor(lambda message: None, broker=broker, queue_name=queue,
                           actor_name="receive")  # fmt: skip  # the test's receiver
    relay = Relay(db.create_engine(url), Outbox(), Slow(DramatiqPublisher(actor)), batch_size=20)
    relay.run()


if __name__ == "__main__":
    main()
