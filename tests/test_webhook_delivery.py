"""
Webhook delivery (perfkit.webhooks.Webhooks) against a real HTTP receiver that verifies
signatures and fails on command, on SQLite and PostgreSQL; the schedule under a fake clock.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from helpers import wait_until
from perfkit import CircuitBreaker, Conflict, InvalidInput, NotFound
from perfkit.outbox import Event
from perfkit.testing import FakeClock
from perfkit.webhooks import RETRY_SCHEDULE, Webhooks, WebhookWorker
from webhook_receiver import Receiver, serve

SECRET = "whsec_" + base64.b64encode(b"webhook-test-key-0123456").decode()
LOOPBACK = {"hooks.test": ["127.0.0.1"]}

Make = Callable[..., Webhooks]


def _resolve(host: str, _port: int) -> list[str]:
    return LOOPBACK.get(host, ["127.0.0.1"])


@pytest.fixture
def wall() -> FakeClock:
    """A fake wall clock, at today's time (the receiver checks timestamps against it)."""
    return FakeClock(start=time.time())


@pytest.fixture
def receiver(wall: FakeClock) -> Iterator[Receiver]:
    with serve(Receiver([SECRET], now=wall.monotonic)) as running:
        yield running


@pytest.fixture
def make(engine: Engine, wall: FakeClock) -> Iterator[Make]:
    """Webhooks on fresh tables of their own (dropped afterwards), loopback allowed."""
    made: list[Webhooks] = []

    def build(**options: Any) -> Webhooks:
        settings: dict[str, Any] = {
            "prefix": f"wh_{uuid.uuid4().hex[:8]}",
            "allow_private": True,
            "resolve": _resolve,
            "clock": wall,
            "random": random.Random(7),
            "timeout": 2.0,
        }
        settings.update(options)
        hooks = Webhooks(engine, **settings)
        hooks.create()
        made.append(hooks)
        return hooks

    yield build
    for hooks in made:
        hooks.close()
        hooks.tables.deliveries.drop(engine, checkfirst=True)
        hooks.tables.endpoints.drop(engine, checkfirst=True)


def event(kind: str = "vote.cast", **payload: Any) -> Event:
    return Event(os.urandom(16).hex(), "bill:1", kind, payload or {"n": 1}, datetime.now(UTC))


def only(hooks: Webhooks, ev: Event) -> int:
    ids = hooks.dispatch(ev)
    assert len(ids) == 1
    return ids[0]


# -- delivered, signed ------------------------------------------------------------------


def test_a_delivery_is_signed_and_carries_the_event(make: Make, receiver: Receiver) -> None:
    hooks = make()
    sub = hooks.subscribe(receiver.url, secret=SECRET)
    ev = event(bill_id=3, choice="yea")
    delivery_id = only(hooks, ev)
    assert hooks.attempt(delivery_id) is None
    (got,) = receiver.received
    assert got.verified
    assert got.id == ev.id  # webhook-id is the event's id: what receivers deduplicate on
    assert json.loads(got.body) == {
        "type": "vote.cast",
        "timestamp": ev.created_at.isoformat(),
        "data": {"bill_id": 3, "choice": "yea"},
    }
    assert got.headers["content-type"] == "application/json"
    done = hooks.delivery(delivery_id)
    assert (done.status, done.attempts, done.last_status) == ("delivered", 1, 204)
    assert hooks.counts(sub.endpoint.id) == {"pending": 0, "delivered": 1, "dead": 0}


def test_the_connection_goes_to_the_address_checked(make: Make, receiver: Receiver) -> None:
    """A host name is resolved once and checked; the request goes to that address."""
    hooks = make()
    port = receiver.url.split(":")[2].split("/")[0]
    hooks.subscribe(f"http://hooks.test:{port}/hook", secret=SECRET)
    assert hooks.attempt(only(hooks, event())) is None
    assert receiver.received[0].headers["host"] == f"hooks.test:{port}"


def test_dispatch_is_idempotent_and_follows_types(make: Make, receiver: Receiver) -> None:
    hooks = make(event_types=["vote.cast", "bill.status_changed"])
    votes = hooks.subscribe(receiver.url, types=["vote.cast"]).endpoint
    every = hooks.subscribe(receiver.url).endpoint
    ev = event("vote.cast")
    first = hooks.dispatch(ev)
    assert first == hooks.dispatch(ev)  # a relay handing an event over twice adds nothing
    assert len(first) == 2
    status = hooks.dispatch(event("bill.status_changed"))
    assert [hooks.delivery(i).endpoint_id for i in status] == [every.id]
    assert hooks.counts(votes.id)["pending"] == 1
    with pytest.raises(InvalidInput, match="unknown event type"):
        hooks.subscribe(receiver.url, types=["vote.deleted"])


def test_rotation_signs_with_both_secrets(make: Make, receiver: Receiver) -> None:
    hooks = make()
    endpoint = hooks.subscribe(receiver.url, secret=SECRET).endpoint
    new = hooks.rotate_secret(endpoint.id)
    receiver.secrets = [new]  # a receiver that switched already
    hooks.attempt(only(hooks, event()))
    receiver.secrets = [SECRET]  # one that has not yet
    hooks.attempt(only(hooks, event()))
    assert [r.verified for r in receiver.received] == [True, True]
    assert len(receiver.received[0].headers["webhook-signature"].split(" ")) == 2


# -- failures and the schedule --------------------------------------------------------------


def test_the_retry_schedule_holds_under_a_fake_clock(
    make: Make, receiver: Receiver, wall: FakeClock
) -> None:
    """Every failure waits the spec's next delay (±10%), never sooner; then the delivery is dead."""
    hooks = make()
    hooks.subscribe(receiver.url, secret=SECRET)
    receiver.default = "500"
    delivery_id = only(hooks, event())
    for attempt, base in enumerate(RETRY_SCHEDULE[1:], start=2):
        wait = hooks.attempt(delivery_id)
        assert len(receiver.received) == attempt - 1
        assert wait is not None
        assert base * 0.9 <= wait <= base * 1.1, (attempt, wait)
        due = hooks.delivery(delivery_id).next_attempt_at
        assert (
            abs((due - datetime.fromtimestamp(wall.monotonic(), UTC)).total_seconds() - wait) < 1e-3
        )
        wall.advance(wait * 0.99)
        early = hooks.attempt(delivery_id)  # not due yet: no request
        assert early is not None
        assert 0 < early <= wait * 0.011
        assert len(receiver.received) == attempt - 1
        wall.advance(early + 0.001)  # due times are whole microseconds
    assert hooks.attempt(delivery_id) is None  # the eighth failure: the schedule ran out
    dead = hooks.delivery(delivery_id)
    assert (dead.status, dead.attempts, dead.last_status) == ("dead", 8, 500)
    assert dead.last_error is not None
    assert dead.last_error.startswith("500")
    assert len(receiver.received) == 8


def test_retry_after_is_honoured_when_it_asks_for_longer(
    make: Make, receiver: Receiver, wall: FakeClock
) -> None:
    hooks = make()
    hooks.subscribe(receiver.url, secret=SECRET)
    receiver.then("retry-after:120", "retry-after:1")
    delivery_id = only(hooks, event())
    wait = hooks.attempt(delivery_id)
    assert wait == 120  # the schedule said 5 s
    wall.advance(120.001)
    second = hooks.attempt(delivery_id)
    assert second is not None
    assert 270 <= second <= 330  # 1 s asked, the schedule's 5 min wins
    assert hooks.delivery(delivery_id).last_status == 503


def test_a_stalled_receiver_times_out_and_is_tried_again(make: Make, receiver: Receiver) -> None:
    hooks = make(timeout=0.3)
    hooks.subscribe(receiver.url, secret=SECRET)
    receiver.then("stall:1.5")
    delivery_id = only(hooks, event())
    started = time.monotonic()
    wait = hooks.attempt(delivery_id)
    assert time.monotonic() - started < 1.4
    assert wait is not None
    failed = hooks.delivery(delivery_id)
    assert (failed.status, failed.last_status) == ("pending", None)
    assert failed.last_error == "timed out (after 0.3 s)"


def test_an_attempt_has_one_deadline_for_all_of_it(make: Make, receiver: Receiver) -> None:
    """A receiver trickling its headers a byte at a time is cut off at the timeout in all."""
    hooks = make(timeout=0.5)
    hooks.subscribe(receiver.url, secret=SECRET)
    receiver.then("trickle:3")
    delivery_id = only(hooks, event())
    started = time.monotonic()
    assert hooks.attempt(delivery_id) is not None
    assert time.monotonic() - started < 1.5  # each read came within 0.05 s: no read timed out
    assert hooks.delivery(delivery_id).last_error == "timed out (after 0.5 s)"


def test_a_stalled_body_does_not_lose_the_status(make: Make, receiver: Receiver) -> None:
    """410 and then a body that never comes: still a 410 (the endpoint is disabled)."""
    hooks = make(timeout=1.0)
    endpoint = hooks.subscribe(receiver.url, secret=SECRET).endpoint
    receiver.then("stall-body:410:3")
    assert hooks.attempt(only(hooks, event())) is None
    assert hooks.endpoint(endpoint.id).status == "disabled"


def test_close_during_a_lookup_ends_the_attempt(make: Make, receiver: Receiver) -> None:
    """A name whose lookup hangs, and the webhooks closed meanwhile: the attempt returns."""
    looking = threading.Event()

    def slow(host: str, port: int) -> list[str]:
        if host == "slow.test":
            looking.set()
            time.sleep(1.5)
        return _resolve(host, port)

    hooks = make(resolve=slow, timeout=5.0)
    hooks.subscribe("http://slow.test/hook", secret=SECRET)
    delivery_id = only(hooks, event())
    results: list[float | None] = []
    attempt = threading.Thread(target=lambda: results.append(hooks.attempt(delivery_id)))
    attempt.start()
    assert looking.wait(5)
    hooks.close()
    attempt.join(4)
    assert not attempt.is_alive()
    assert results[0] is not None  # a failed attempt, due again
    assert receiver.received == []


def test_a_restarted_worker_finds_what_stop_cancelled(make: Make, receiver: Receiver) -> None:
    hooks = make(clock=None)
    receiver.now = time.time
    hooks.subscribe(receiver.url, secret=SECRET)
    receiver.default = "stall:0.3"
    worker = WebhookWorker(hooks, threads=1, poll_interval=0.05)
    worker.start()
    for n in range(4):
        worker.dispatch(event(n=n))
    wait_until(lambda: len(receiver.received) >= 1, timeout=10)
    worker.stop(timeout=5)  # one under way, the rest queued and cancelled
    receiver.default = "ok"
    worker.start()
    try:
        wait_until(lambda: hooks.counts(1)["delivered"] == 4, timeout=30)
    finally:
        worker.stop()


def test_an_internationalised_host_is_sent_as_idna(make: Make, receiver: Receiver) -> None:
    hooks = make()
    port = receiver.url.split(":")[2].split("/")[0]
    LOOPBACK["xn--bcher-kva.test"] = ["127.0.0.1"]
    hooks.subscribe(f"http://bücher.test:{port}/hook", secret=SECRET)
    assert hooks.attempt(only(hooks, event())) is None
    assert receiver.received[0].headers["host"] == f"xn--bcher-kva.test:{port}"


def test_a_stale_claim_cannot_record_over_a_newer_one(
    make: Make, receiver: Receiver, wall: FakeClock
) -> None:
    """An attempt that outlived its lease (a frozen process) records nothing."""
    hooks = make()
    hooks.subscribe(receiver.url, secret=SECRET)
    delivery_id = only(hooks, event())
    now = datetime.fromtimestamp(wall.monotonic(), UTC)
    with hooks.engine.begin() as conn:
        lease = now + timedelta(seconds=9)
        assert hooks.tables.claim(
            conn, delivery_id, now=now, lease=lease, token="a" * 32, attempts=None
        )
        stale = hooks.tables.claimed(conn, delivery_id, token="a" * 32, now=now)
    assert hooks.attempt(delivery_id) is not None  # leased: not attempted
    assert receiver.received == []
    wall.advance(10)
    assert hooks.attempt(delivery_id) is None  # the lease ran out: a second claim delivers
    with hooks.engine.begin() as conn:
        assert not hooks.tables.finish(conn, stale, status="dead", last_error="stale")
    done = hooks.delivery(delivery_id)
    assert (done.status, done.attempts) == ("delivered", 2)


def test_a_wake_up_redelivered_after_its_worker_died_carries_on(
    make: Make, receiver: Receiver, wall: FakeClock
) -> None:
    """The claim of a killed worker holds the row until its lease ends; then the same
    wake-up (redelivered by the broker) makes the attempt. Stale wake-ups do nothing."""
    hooks = make()
    hooks.subscribe(receiver.url, secret=SECRET)
    delivery_id = only(hooks, event())
    assert hooks.wake(delivery_id, 3) is None  # not this delivery's attempt count
    now = datetime.fromtimestamp(wall.monotonic(), UTC)
    with hooks.engine.begin() as conn:  # the worker that died had claimed it on wake-up 0
        lease = now + timedelta(seconds=9)
        assert hooks.tables.claim(
            conn, delivery_id, now=now, lease=lease, token="b" * 32, attempts=0
        )
    again = hooks.wake(delivery_id, 0)
    assert again is not None
    assert 8.9 < again[0] <= 9
    assert again[1] == 0
    assert receiver.received == []
    wall.advance(10)
    assert hooks.wake(delivery_id, 0) is None  # the lease ran out: delivered
    done = hooks.delivery(delivery_id)
    assert (done.status, done.attempts, len(receiver.received)) == ("delivered", 2, 1)
    assert hooks.wake(delivery_id, 0) is None
    assert hooks.wake(delivery_id, 2) is None


def test_a_delivery_of_an_endpoint_disabled_meanwhile_is_not_sent(
    make: Make, receiver: Receiver
) -> None:
    """Fanned out just before its endpoint was disabled (a race): dead at its attempt, unsent."""
    hooks = make()
    endpoint = hooks.subscribe(receiver.url, secret=SECRET).endpoint
    delivery_id = only(hooks, event())
    with hooks.engine.begin() as conn:  # the status alone, as a disable racing the fan-out
        hooks.tables.set_endpoint(
            conn, endpoint.id, now=datetime.now(UTC), status="disabled", disabled_reason="x"
        )
    assert hooks.due() == []
    assert hooks.attempt(delivery_id) is None
    assert hooks.delivery(delivery_id).status == "dead"
    assert receiver.received == []


def test_every_event_arrives_once_the_receiver_recovers(
    make: Make, receiver: Receiver, wall: FakeClock
) -> None:
    """Twelve events while the receiver fails its first 20 requests: all arrive, once each."""
    hooks = make()
    hooks.subscribe(receiver.url, secret=SECRET)
    receiver.then(*["502"] * 20)
    sent = [event(n=n) for n in range(12)]
    worker = WebhookWorker(hooks)
    for ev in sent:
        worker.dispatch(ev)
    for _ in range(200):
        worker.run_once()
        soonest = hooks.next_due()
        if soonest is None:
            break
        wall.advance(soonest + 0.001)
    assert sorted(receiver.delivered) == sorted(ev.id for ev in sent)
    assert len(set(receiver.delivered)) == len(receiver.delivered)
    assert all(r.verified for r in receiver.received)


# -- 410 and the dead letters ------------------------------------------------------------


def test_410_disables_the_endpoint_and_its_deliveries_turn_dead(
    make: Make, receiver: Receiver
) -> None:
    hooks = make()
    endpoint = hooks.subscribe(receiver.url, secret=SECRET).endpoint
    first, second = only(hooks, event()), only(hooks, event())
    receiver.then("410")
    assert hooks.attempt(first) is None
    gone = hooks.endpoint(endpoint.id)
    assert gone.status == "disabled"
    assert gone.disabled_reason is not None
    assert "410" in gone.disabled_reason
    assert hooks.attempt(second) is None  # not sent: dead with the endpoint
    assert len(receiver.received) == 1
    dead = hooks.deliveries(endpoint.id, status="dead")
    assert [d.id for d in dead] == [second, first]  # newest first
    assert dead[0].last_error == f"endpoint disabled: {gone.disabled_reason}"
    assert hooks.dispatch(event()) == []  # nothing new for a disabled endpoint
    with pytest.raises(Conflict, match="disabled"):
        hooks.redeliver(second)
    hooks.enable(endpoint.id)
    assert hooks.redeliver(second).status == "pending"
    assert hooks.attempt(second) is None
    assert hooks.delivery(second).status == "delivered"
    with pytest.raises(Conflict, match="delivered, not dead"):
        hooks.redeliver(second)


# -- the breaker -------------------------------------------------------------------------


def test_the_breaker_opens_and_closes(make: Make, receiver: Receiver, wall: FakeClock) -> None:
    """Three failures open it: the rest wait unsent, keeping their attempts; a trial closes it."""
    breakers: list[CircuitBreaker] = []

    def breaker(endpoint_id: int) -> CircuitBreaker:
        made = CircuitBreaker(name=f"test-{endpoint_id}", fail_max=3, reset_timeout=30, clock=wall)
        breakers.append(made)
        return made

    hooks = make(breaker=breaker)
    hooks.subscribe(receiver.url, secret=SECRET)
    ids = [only(hooks, event()) for _ in range(5)]
    receiver.default = "500"
    for delivery_id in ids[:3]:
        assert hooks.attempt(delivery_id) is not None
    (guard,) = breakers
    assert guard.state == "open"
    for delivery_id in ids[3:]:
        assert hooks.attempt(delivery_id) == 30  # the breaker's reset time
        waiting = hooks.delivery(delivery_id)
        assert (waiting.attempts, waiting.status) == (0, "pending")
        assert waiting.last_error is not None
        assert "circuit breaker open" in waiting.last_error
    assert len(receiver.received) == 3  # nothing sent while it was open
    receiver.default = "ok"
    wall.advance(30.001)  # due times are whole microseconds
    assert hooks.attempt(ids[3]) is None  # the trial
    assert guard.state == "closed"
    assert hooks.attempt(ids[4]) is None
    assert [hooks.delivery(i).attempts for i in ids[3:]] == [1, 1]


# -- concurrency -------------------------------------------------------------------------


def test_concurrent_attempts_send_once(make: Make, receiver: Receiver) -> None:
    """Eight threads, two Webhooks objects (as two processes) on one delivery: one request."""
    hooks = make()
    twin = make(prefix=hooks.tables.endpoints.name.removesuffix("_endpoints"))
    hooks.subscribe(receiver.url, secret=SECRET)
    delivery_id = only(hooks, event())
    receiver.then("stall:0.3")  # 200 after 0.3 s: the others arrive while it is held
    start = threading.Barrier(8)
    results: list[float | None] = []

    def go(which: Webhooks) -> None:
        start.wait()
        results.append(which.attempt(delivery_id))

    threads = [threading.Thread(target=go, args=(hooks if n % 2 else twin,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(receiver.received) == 1
    assert hooks.delivery(delivery_id).status == "delivered"
    assert results.count(None) >= 1


def test_the_worker_delivers_in_the_background(make: Make, receiver: Receiver) -> None:
    hooks = make(clock=None)
    receiver.now = time.time
    hooks.subscribe(receiver.url, secret=SECRET)
    worker = WebhookWorker(hooks, threads=2, poll_interval=0.05)
    worker.start()
    try:
        sent = [event(n=n) for n in range(20)]
        for ev in sent:
            worker.dispatch(ev)
        wait_until(lambda: len(receiver.delivered) == 20, timeout=30)
    finally:
        worker.stop()
    assert sorted(receiver.delivered) == sorted(ev.id for ev in sent)


# -- bad input, and what is refused -------------------------------------------------------


def test_subscribe_refuses_bad_input(make: Make) -> None:
    hooks = make(allow_private=False)
    for url in ("http://127.0.0.1/hook", "http://hooks.test/", "ftp://1.1.1.1/", "not a url"):
        with pytest.raises(InvalidInput) as refused:
            hooks.subscribe(url)
        assert refused.value.field == "url"
    with pytest.raises(InvalidInput) as bad_secret:
        hooks.subscribe("https://1.1.1.1/hook", secret="short")
    assert bad_secret.value.field == "secret"
    with pytest.raises(InvalidInput, match="types"):
        hooks.subscribe("https://1.1.1.1/hook", types=[])
    with pytest.raises(InvalidInput, match="limit"):
        hooks.deliveries(1, limit=0)
    with pytest.raises(NotFound):
        hooks.deliveries(999)
    with pytest.raises(NotFound):
        hooks.endpoint(999)
    with pytest.raises(NotFound):
        hooks.unsubscribe(999)
    with pytest.raises(ValueError, match="timeout"):
        make(timeout=31)


def test_an_address_that_turned_private_is_refused_before_sending(
    make: Make, receiver: Receiver
) -> None:
    """Subscribed while the name was public; pointed at loopback later: no connection."""
    answers = {"hooks.test": ["93.184.215.14"]}
    hooks = make(allow_private=False, resolve=lambda host, _port: answers[host])
    hooks.subscribe("http://hooks.test/hook", secret=SECRET)
    answers["hooks.test"] = ["127.0.0.1"]
    delivery_id = only(hooks, event())
    assert hooks.attempt(delivery_id) is not None
    refused = hooks.delivery(delivery_id)
    assert refused.last_error is not None
    assert refused.last_error.startswith("refused: url:")
    assert receiver.received == []


def test_unsubscribe_and_purge(make: Make, receiver: Receiver, wall: FakeClock) -> None:
    hooks = make()
    endpoint = hooks.subscribe(receiver.url, secret=SECRET).endpoint
    hooks.attempt(only(hooks, event()))
    wall.advance(3600)
    assert hooks.purge(timedelta(minutes=30)) == 1
    only(hooks, event())
    hooks.unsubscribe(endpoint.id)
    with hooks.engine.connect() as conn:
        left = conn.execute(sa.select(sa.func.count()).select_from(hooks.tables.deliveries))
        assert left.scalar_one() == 0


# -- on dramatiq and RabbitMQ --------------------------------------------------------------


@pytest.fixture
def broker(rabbitmq_url: str) -> Iterator[Any]:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker  # noqa: PLC0415

    made = RabbitmqBroker(url=rabbitmq_url, confirm_delivery=True)
    yield made
    made.close()


def test_dramatiq_delivers_and_retries_with_delayed_messages(
    make: Make, receiver: Receiver, broker: Any
) -> None:
    """A real worker: the first attempt gets 503 Retry-After: 1, a delayed message tries again."""
    import dramatiq  # noqa: PLC0415

    from perfkit.webhooks import DramatiqWebhooks  # noqa: PLC0415

    hooks = make(clock=None, schedule=(0, 0.2, 0.2))
    receiver.now = time.time
    hooks.subscribe(receiver.url, secret=SECRET)
    name = f"perfkit-webhooks-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    queue = DramatiqWebhooks(hooks, broker=broker, queue_name=name)
    receiver.then("retry-after:1")
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        ev = event()
        started = time.monotonic()
        (delivery_id,) = queue.dispatch(ev)
        queue.dispatch(ev)  # the relay published it twice: a stale extra wake-up
        queue.sweep()  # and a sweep found it due: another
        wait_until(lambda: receiver.delivered == [ev.id], timeout=30)
        took = time.monotonic() - started
        time.sleep(1.5)  # extra wake-ups would show as more requests by now
    finally:
        worker.stop()
        for queue_name in (name, f"{name}.DQ", f"{name}.XQ"):
            broker.channel.queue_delete(queue_name)
    assert took >= 1.0  # the receiver's Retry-After, not the schedule's 0.2 s
    done = hooks.delivery(delivery_id)
    assert (done.status, done.attempts) == ("delivered", 2)
    assert [r.answer for r in receiver.received] == ["retry-after:1", "ok"]
    assert queue.sweep() == 0  # nothing due is left without a message


def test_dramatiq_holds_no_message_past_its_limit(make: Make, broker: Any) -> None:
    """A delivery due in 5 hours is woken after max_hold (under RabbitMQ's ack timeout), not 5 h."""
    import dramatiq  # noqa: PLC0415

    from perfkit.webhooks import DramatiqWebhooks  # noqa: PLC0415

    name = f"perfkit-webhooks-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    queue = DramatiqWebhooks(make(), broker=broker, queue_name=name)
    try:
        before = time.time() * 1000
        queue.later(7, 5 * 3600, 3)
        queue.later(8, 2.5, 0)
        etas = {}
        for _ in range(2):
            wait_until(
                lambda: (
                    broker.channel.queue_declare(f"{name}.DQ", passive=True).method.message_count
                    > 0
                ),
                timeout=10,
            )
            _method, _props, body = broker.channel.basic_get(f"{name}.DQ", auto_ack=True)
            message = dramatiq.Message.decode(body)
            etas[message.args[0]] = message.options["eta"] - before
    finally:
        for queue_name in (name, f"{name}.DQ", f"{name}.XQ"):
            broker.channel.queue_delete(queue_name)
    assert 599_000 <= etas[7] < 610_000  # eta is whole milliseconds
    assert 2_400 <= etas[8] < 12_500
    with pytest.raises(ValueError, match="max_hold"):
        DramatiqWebhooks(make(), broker=broker, max_hold=3600)


def test_the_sweeper_sends_what_lost_its_wake_up(
    make: Make, receiver: Receiver, broker: Any
) -> None:
    """A due delivery with no message (its wake-up lost) is delivered by the sweeping thread."""
    import dramatiq  # noqa: PLC0415

    from perfkit.webhooks import DramatiqWebhooks  # noqa: PLC0415

    hooks = make(clock=None)
    receiver.now = time.time
    hooks.subscribe(receiver.url, secret=SECRET)
    name = f"perfkit-webhooks-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    queue = DramatiqWebhooks(hooks, broker=broker, queue_name=name)
    ev = event()
    hooks.dispatch(ev)  # fanned out without a message, as if it had been lost
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    queue.start_sweeping(0.1)
    try:
        with pytest.raises(RuntimeError, match="sweeping already"):
            queue.start_sweeping(0.1)
        wait_until(lambda: receiver.delivered == [ev.id], timeout=30)
    finally:
        queue.stop_sweeping()
        worker.stop()
        for queue_name in (name, f"{name}.DQ", f"{name}.XQ"):
            broker.channel.queue_delete(queue_name)
    assert hooks.due() == []
