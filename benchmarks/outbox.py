"""
The outbox: what an event costs a write, and how long it takes to reach a consumer.

Cost per write: ``votes.cast`` on the reference stores (SQLite file, memory cache),
with and without an outbox writing its ``vote.cast`` event in the same transaction.
Counted in instructions with callgrind (SQLite runs in process, so its own work is in
the count; wall-clock ratios on this machine move more than the gap judged): a fresh
Python casts N and 3N votes; the difference over 2N is per cast. On PostgreSQL, where
the server's work is in another process, it is wall-clock: medians of interleaved rounds.

Delivery latency: events written at 100/s, one per transaction; a relay in a thread
(``poll_interval`` 10 ms) publishes through dramatiq to RabbitMQ (publisher confirms) and
a dramatiq worker in the same process receives them. Latency runs from just before the
write's COMMIT to the worker's call, median and p99 of 1,000 events; also with
``InProcessPublisher``.

Webhook delivery latency: the same writes, each event fanned out to one webhook endpoint
(a real HTTP server on loopback that verifies each signature) and POSTed by a
``WebhookWorker`` in process, or by ``DramatiqWebhooks`` in a dramatiq worker on RabbitMQ
(the relay's actor dispatches, the webhook actor attempts). Latency runs from the COMMIT to
the receiver's handler, 500 events at 100/s.

Usage: ``python benchmarks/outbox.py [--casts N] [--postgres URL] [--amqp URL]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import callgrind

SEEDED_USERS = 20_000


def _stores(url: str, *, outbox: bool) -> Any:
    from perfkit import Cache, MemoryBackend  # noqa: PLC0415
    from perfkit.outbox import Outbox  # noqa: PLC0415
    from perfkit.reference import open_stores  # noqa: PLC0415

    cache = Cache(MemoryBackend(), namespace=f"o{outbox}", ttl=60)
    return open_stores(url, cache=cache, outbox=Outbox() if outbox else None)


def child(variant: str, casts: int) -> None:
    """*casts* votes on fresh pairs, with or without the outbox (a fresh seeded database)."""
    from perfkit import db  # noqa: PLC0415
    from perfkit.reference import Base, seed  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'outbox.sqlite3'}"
        engine = db.create_engine(url)
        Base.metadata.create_all(engine)
        seed(engine, users=SEEDED_USERS, bills=10, votes=0)
        engine.dispose()
        stores = _stores(url, outbox=variant == "outbox")
        for user in range(1, casts + 2):
            stores.votes.cast(bill_id=1, user_id=user, choice="yes")
        stores.close()


def wall_clock(url: str, rounds: int, casts: int) -> tuple[float, float]:
    """Median µs per cast without and with the outbox, interleaved rounds."""
    from perfkit.reference import Base, seed  # noqa: PLC0415

    plain, boxed = _stores(url, outbox=False), _stores(url, outbox=True)
    Base.metadata.drop_all(plain.engine)
    Base.metadata.create_all(plain.engine)
    seed(plain.engine, users=SEEDED_USERS, bills=200, votes=0)
    timings: dict[bool, list[float]] = {False: [], True: []}
    user = 1
    for number in range(rounds):
        for with_outbox in (False, True) if number % 2 else (True, False):
            stores = boxed if with_outbox else plain
            started = time.perf_counter()
            for _ in range(casts):
                stores.votes.cast(
                    bill_id=1 + user // SEEDED_USERS, user_id=1 + user % SEEDED_USERS, choice="no"
                )
                user += 1
            timings[with_outbox].append((time.perf_counter() - started) / casts * 1e6)
    plain.close()
    boxed.close()
    return statistics.median(timings[False]), statistics.median(timings[True])


def _write(engine: Any, box: Any, events: int, committed: dict[int, float]) -> None:
    """Events at 100/s, one per transaction, each one's commit time noted by its number."""
    for number in range(events):
        with engine.begin() as conn:
            box.add(conn, type="bench", key="k", payload={"n": number})
            committed[number] = time.perf_counter()  # the COMMIT follows (the relay may be quicker)
        time.sleep(0.01)


def _fresh_outbox(url: str) -> tuple[Any, Any]:
    """An engine on *url* and an outbox whose table starts empty."""
    from perfkit import db  # noqa: PLC0415
    from perfkit.outbox import Outbox  # noqa: PLC0415

    engine = db.create_engine(url)
    box = Outbox()
    box.table.drop(engine, checkfirst=True)
    box.create(engine)
    return engine, box


def _relay_while_writing(
    engine: Any,
    box: Any,
    publisher: Any,
    events: int,
    committed: dict[int, float],
    done: threading.Event,
) -> None:
    """A relay to *publisher* while *events* are written; stops once *done* (or after 60 s)."""
    from perfkit.outbox import Relay  # noqa: PLC0415

    relay = Relay(engine, box, publisher, poll_interval=0.01)
    relay.start()
    _write(engine, box, events, committed)
    done.wait(60)
    relay.stop()


def _median_p99(latencies: list[float]) -> tuple[float, float]:
    """Median and p99 of *latencies* (seconds), in ms."""
    ordered = sorted(latencies)
    return statistics.median(ordered) * 1e3, ordered[int(len(ordered) * 0.99) - 1] * 1e3


def delivery(url: str, amqp: str | None, events: int = 1_000) -> tuple[float, float]:
    """Median and p99 ms from commit to consumer, through RabbitMQ (or in process)."""
    from perfkit.outbox import Event, InProcessPublisher  # noqa: PLC0415

    engine, box = _fresh_outbox(url)
    committed: dict[int, float] = {}
    latencies: list[float] = []
    done = threading.Event()

    def receive(message: dict[str, Any]) -> None:
        arrived = time.perf_counter()
        number = Event.from_message(message).payload["n"]
        latencies.append(arrived - committed[number])
        if len(latencies) == events:
            done.set()

    worker = broker = None
    if amqp is None:
        publisher: Any = InProcessPublisher(lambda event: receive(event.to_message()))
    else:
        import dramatiq  # noqa: PLC0415
        from dramatiq.brokers.rabbitmq import RabbitmqBroker  # noqa: PLC0415

        from perfkit.outbox import DramatiqPublisher  # noqa: PLC0415

        queue = f"perfkit-bench-{uuid.uuid4().hex[:6]}"
        broker = RabbitmqBroker(url=amqp, confirm_delivery=True)
        actor = dramatiq.actor(receive, broker=broker, queue_name=queue, max_retries=0)
        worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=10)
        worker.start()
        publisher = DramatiqPublisher(actor)
    _relay_while_writing(engine, box, publisher, events, committed, done)
    if worker is not None and broker is not None:
        worker.stop()
        broker.channel.queue_delete(queue)
        broker.close()
    engine.dispose()
    return _median_p99(latencies)


def webhook_delivery(url: str, amqp: str | None, events: int = 500) -> tuple[float, float]:
    """Median and p99 ms from commit to a webhook receiver's handler."""
    import base64  # noqa: PLC0415
    import json  # noqa: PLC0415
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: PLC0415

    from perfkit.outbox import Event, InProcessPublisher  # noqa: PLC0415
    from perfkit.webhooks import Webhooks, WebhookWorker, verify_webhook  # noqa: PLC0415

    secret = "whsec_" + base64.b64encode(b"benchmark-webhook-secret").decode()
    committed: dict[int, float] = {}
    latencies: list[float] = []
    done = threading.Event()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            verify_webhook(dict(self.headers), body, [secret])
            number = json.loads(body)["data"]["n"]
            latencies.append(time.perf_counter() - committed[number])
            if len(latencies) == events:
                done.set()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    engine, box = _fresh_outbox(url)
    hooks = Webhooks(engine, prefix=f"bench_{uuid.uuid4().hex[:6]}", allow_private=True)
    hooks.create()
    hooks.subscribe(f"http://127.0.0.1:{server.server_address[1]}/hook", secret=secret)
    worker: Any = None
    broker: Any = None
    queues: list[str] = []
    if amqp is None:
        worker = WebhookWorker(hooks, threads=4)
        worker.start()
        publisher: Any = InProcessPublisher(worker.dispatch)
    else:
        import dramatiq  # noqa: PLC0415
        from dramatiq.brokers.rabbitmq import RabbitmqBroker  # noqa: PLC0415

        from perfkit.outbox import DramatiqPublisher  # noqa: PLC0415
        from perfkit.webhooks import DramatiqWebhooks  # noqa: PLC0415

        name = f"perfkit-bench-{uuid.uuid4().hex[:6]}"
        queues = [name, f"{name}.hooks"]
        broker = RabbitmqBroker(url=amqp, confirm_delivery=True)
        webhook_queue = DramatiqWebhooks(hooks, broker=broker, queue_name=queues[1])

        def on_event(message: dict[str, Any]) -> None:
            webhook_queue.dispatch(Event.from_message(message))

        actor = dramatiq.actor(on_event, broker=broker, queue_name=name, max_retries=0)
        worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=10)
        worker.start()
        publisher = DramatiqPublisher(actor)
    _relay_while_writing(engine, box, publisher, events, committed, done)
    worker.stop()
    if broker is not None:
        for queue in queues:
            for suffix in ("", ".DQ", ".XQ"):
                broker.channel.queue_delete(queue + suffix)
        broker.close()
    server.shutdown()
    server.server_close()
    hooks.tables.deliveries.drop(engine)
    hooks.tables.endpoints.drop(engine)
    hooks.close()
    engine.dispose()
    if len(latencies) < events:
        msg = f"only {len(latencies)} of {events} webhooks arrived"
        raise RuntimeError(msg)
    return _median_p99(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--casts", type=int, default=300)
    parser.add_argument("--postgres", help="PostgreSQL URL for the wall-clock and delivery rows")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("n", nargs="?", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(options.child, options.n)
        return
    counts = callgrind.per_iteration(__file__, ["plain", "outbox"], options.casts)
    added = counts["outbox"] - counts["plain"]
    print("### What an event costs a write\n")
    print("| database | measure | cast | cast + outbox event | added |")
    print("|---|---|---|---|---|")
    print(
        f"| SQLite | instructions per cast (callgrind) | {counts['plain']:,.0f} "
        f"| {counts['outbox']:,.0f} | {added:,.0f} ({100 * added / counts['plain']:.1f}%) |"
    )
    if options.postgres:
        plain, boxed = wall_clock(options.postgres, rounds=7, casts=200)
        print(
            f"| PostgreSQL | µs per cast (median of 7 interleaved rounds) | {plain:,.0f} "
            f"| {boxed:,.0f} | {boxed - plain:,.0f} ({100 * (boxed - plain) / plain:.1f}%) |"
        )
    print("\n### Delivery latency, commit to consumer (1,000 events at 100/s)\n")
    print("| database | publisher | median (ms) | p99 (ms) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_url = f"sqlite:///{Path(tmp) / 'delivery.sqlite3'}"
        targets = [("SQLite", sqlite_url)]
        if options.postgres:
            targets.append(("PostgreSQL", options.postgres))
        for name, url in targets:
            for label, amqp in (("in process", None), ("dramatiq + RabbitMQ", options.amqp)):
                median, p99 = delivery(url, amqp)
                print(f"| {name} | {label} | {median:.1f} | {p99:.1f} |", flush=True)
        print("\n### Webhook delivery latency, commit to receiver (500 events at 100/s)\n")
        print("| database | attempts run by | median (ms) | p99 (ms) |")
        print("|---|---|---|---|")
        for name, url in targets:
            for label, amqp in (("WebhookWorker", None), ("DramatiqWebhooks", options.amqp)):
                median, p99 = webhook_delivery(url, amqp)
                print(f"| {name} | {label} | {median:.1f} | {p99:.1f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
