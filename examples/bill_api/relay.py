"""
The outbox relay of the API's events: ``python -m bill_api.relay`` (needs ``PERFKIT_AMQP_URL``).

It reads the events committed to the outbox of ``PERFKIT_DATABASE_URL`` (default: the
demo database) and publishes them to RabbitMQ for ``dramatiq bill_api.worker``, until
SIGINT or SIGTERM. A second relay started on the same database waits as a standby.
Every minute it also sends a message for each webhook delivery that is due (which
recovers one whose message dramatiq gave up on, or one redelivered through the API; the
extra messages for the others are dropped).
"""

from __future__ import annotations

import logging
import os

from bill_api import events
from bill_api.app import DEFAULT_DATABASE_URL
from perfkit import db, migrations
from perfkit.outbox import DramatiqPublisher, Relay

SWEEP_INTERVAL = 60.0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    from bill_api.worker import deliver, webhook_queue  # noqa: PLC0415 - needs PERFKIT_AMQP_URL

    url = os.environ.get("PERFKIT_DATABASE_URL") or DEFAULT_DATABASE_URL
    engine = db.create_engine(url)
    outbox = events.outbox()
    migrations.prepare(engine, "perfkit")  # SQLite: migrated here; elsewhere: checked
    logging.getLogger("bill_api.relay").info("relaying %s to %s", url, events.QUEUE)
    webhook_queue.start_sweeping(SWEEP_INTERVAL)
    try:
        Relay(engine, outbox, DramatiqPublisher(deliver)).serve()  # until SIGINT or SIGTERM
    finally:
        webhook_queue.stop_sweeping()
        engine.dispose()


if __name__ == "__main__":
    main()
