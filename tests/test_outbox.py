"""
The transactional outbox: events written in the caller's transaction (sync and async,
SQLite and PostgreSQL), relayed to dramatiq on a real RabbitMQ at least once and in order
per key, resumed without loss after a relay is killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from helpers import wait_until
from perfkit import db
from perfkit.outbox import Event, InProcessPublisher, Outbox, Relay

# -- writing -------------------------------------------------------------------------------------


@pytest.fixture
def outbox(engine: Engine) -> Outbox:
    """An empty outbox table on each database."""
    return _empty(engine, Outbox())


def _empty(engine: Engine, box: Outbox) -> Outbox:
    box.create(engine)  # where the migrations did not make it (SQLite: only the reference's)
    with engine.begin() as conn:
        conn.execute(box.table.delete())
    return box


def _pending(engine: Engine, box: Outbox) -> list[tuple[str, str]]:
    table = box.table
    stmt = sa.select(table.c.key, table.c.type)
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(stmt.order_by(table.c.position))]


def test_events_commit_and_roll_back_with_the_transaction(engine: Engine, outbox: Outbox) -> None:
    """A committed transaction's events are there, in order; a rolled-back one's are not."""
    with engine.begin() as conn:
        first = outbox.add(conn, type="a", key="k:1", payload={"n": 1})
        second = outbox.add(conn, type="b", key="k:1", payload={"nested": [1, "two", None]})

    def rolled_back() -> None:
        with engine.begin() as conn:
            outbox.add(conn, type="lost", key="k:1", payload={})
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError, match="rolled back"):
        rolled_back()
    assert _pending(engine, outbox) == [("k:1", "a"), ("k:1", "b")]
    assert (first.position < second.position, len({first.id, second.id})) == (True, 2)
    assert second.payload == {"nested": [1, "two", None]}


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ({"type": "", "key": "k", "payload": {}}, ValueError, "type must be a non-empty"),
        ({"type": "t", "key": "k" * 201, "payload": {}}, ValueError, "key must be"),
        ({"type": "t", "key": "k", "payload": {"x": float("nan")}}, ValueError, "JSON"),
        ({"type": "t", "key": "k", "payload": {"x": object()}}, ValueError, "JSON"),
        ({"type": "t", "key": "k", "payload": [1]}, TypeError, "mapping"),
    ],
)
def test_bad_events_fail_in_the_callers_transaction(
    sqlite_engine: Engine, fields: dict[str, Any], error: type[Exception], match: str
) -> None:
    """A malformed event raises before anything is written."""
    box = Outbox()
    box.create(sqlite_engine)
    with pytest.raises(error, match=match), sqlite_engine.begin() as conn:
        box.add(conn, **fields)
    assert _pending(sqlite_engine, box) == []


def test_aadd_writes_in_an_async_transaction(engine: Engine, outbox: Outbox) -> None:
    """The asyncio twin commits and rolls back with its AsyncConnection."""

    async def write() -> None:
        async_engine = db.create_async_engine(engine.url)
        try:
            async with async_engine.begin() as conn:
                await outbox.aadd(conn, type="kept", key="k", payload={"n": 1})
            try:
                async with async_engine.begin() as conn:
                    await outbox.aadd(conn, type="lost", key="k", payload={})
                    raise RuntimeError("rolled back")
            except RuntimeError:
                pass
        finally:
            await async_engine.dispose()

    asyncio.run(write())
    assert _pending(engine, outbox) == [("k", "kept")]


def test_event_messages_round_trip() -> None:
    """to_message is JSON-ready and from_message gives the same event back."""
    event = Event("e1", "k", "t", {"a": [1]}, datetime.now(UTC), 3)
    assert event == Event.from_message(event.to_message())


# -- relaying in process -------------------------------------------------------------------------


def test_relay_publishes_in_order_then_marks(engine: Engine, outbox: Outbox) -> None:
    """run_once hands a batch over in position order and deletes it; then nothing is pending."""
    with engine.begin() as conn:
        for n in range(5):
            outbox.add(conn, type="t", key=f"k:{n % 2}", payload={"n": n})
    seen: list[int] = []
    relay = Relay(engine, outbox, InProcessPublisher(lambda e: seen.append(e.payload["n"])),
                  batch_size=3)  # fmt: skip
    assert [relay.run_once(), relay.run_once(), relay.run_once()] == [3, 2, 0]
    assert (seen, relay.pending()) == ([0, 1, 2, 3, 4], 0)


def test_a_failing_publisher_leaves_the_batch_pending(engine: Engine, outbox: Outbox) -> None:
    """The publisher raises: nothing is deleted, and the next step offers the same events."""
    with engine.begin() as conn:
        outbox.add(conn, type="t", key="k", payload={"n": 1})
    calls: list[str] = []

    def flaky(event: Event) -> None:
        calls.append(event.id)
        if len(calls) == 1:
            raise ConnectionError("broker down")

    relay = Relay(engine, outbox, InProcessPublisher(flaky))
    with pytest.raises(ConnectionError):
        relay.run_once()
    assert relay.pending() == 1
    assert relay.run_once() == 1
    assert (calls[0], 0) == (calls[1], relay.pending())


def test_bad_relay_options_are_value_errors(sqlite_engine: Engine) -> None:
    """batch_size and the intervals are checked."""
    box = Outbox()
    for options in ({"batch_size": 0}, {"batch_size": 1.5}, {"poll_interval": 0}):
        with pytest.raises(ValueError, match=r"batch_size|poll_interval"):
            Relay(sqlite_engine, box, InProcessPublisher(print), **options)  # type: ignore[arg-type]


def test_a_second_relay_waits_until_the_first_stops(engine: Engine, outbox: Outbox) -> None:
    """Two relays on one outbox: only the lock holder publishes; the standby takes over."""
    if engine.dialect.name == "sqlite" and not engine.url.database:
        pytest.skip("needs a file database")
    published: dict[str, list[int]] = defaultdict(list)
    lock = threading.Lock()

    def handler(name: str) -> InProcessPublisher:
        def record(event: Event) -> None:
            with lock:
                published[name].append(event.payload["n"])

        return InProcessPublisher(record)

    first = Relay(engine, outbox, handler("first"), poll_interval=0.02)
    second = Relay(engine, outbox, handler("second"), poll_interval=0.02)
    first.start()
    with engine.begin() as conn:
        outbox.add(conn, type="t", key="k", payload={"n": 0})
    wait_until(lambda: published["first"] == [0])  # the first holds the lock
    second.start()
    with engine.begin() as conn:
        outbox.add(conn, type="t", key="k", payload={"n": 1})
    wait_until(lambda: published["first"] == [0, 1])
    first.stop()
    with engine.begin() as conn:
        outbox.add(conn, type="t", key="k", payload={"n": 2})
    wait_until(lambda: published["second"] == [2])
    second.stop()
    assert dict(published) == {"first": [0, 1], "second": [2]}


# -- through dramatiq and RabbitMQ ---------------------------------------------------------------


class Receiver:
    """What the worker got: every delivery, in arrival order."""

    def __init__(self) -> None:
        self.deliveries: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.deliveries.append(Event.from_message(message))

    def ids(self) -> set[str]:
        with self.lock:
            return {event.id for event in self.deliveries}

    def first_order(self, key: str) -> list[str]:
        """Ids of *key*, each at its first delivery: the order a deduplicating consumer sees."""
        seen: list[str] = []
        with self.lock:
            for event in self.deliveries:
                if event.key == key and event.id not in seen:
                    seen.append(event.id)
        return seen


@pytest.fixture(scope="module")
def queue(rabbitmq_url: str) -> Iterator[tuple[Any, Receiver, str]]:
    """A dramatiq actor on a fresh RabbitMQ queue, a worker consuming it, and what it received."""
    import dramatiq  # noqa: PLC0415
    from dramatiq.brokers.rabbitmq import RabbitmqBroker  # noqa: PLC0415

    name = f"perfkit-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    broker = RabbitmqBroker(url=rabbitmq_url, confirm_delivery=True)
    receiver = Receiver()
    actor = dramatiq.actor(receiver, broker=broker, queue_name=name, actor_name="receive",
                           max_retries=0)  # fmt: skip
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        yield actor, receiver, name
    finally:
        worker.stop()
        for queue_name in (name, f"{name}.DQ", f"{name}.XQ"):
            broker.channel.queue_delete(queue_name)
        broker.close()


def _publisher(queue: tuple[Any, Receiver, str]) -> Any:
    from perfkit.outbox import DramatiqPublisher  # noqa: PLC0415

    return DramatiqPublisher(queue[0])


def test_a_broker_without_confirms_is_refused(rabbitmq_url: str) -> None:
    """Without publisher confirms a send can be lost after the relay marked it: refused."""
    import dramatiq  # noqa: PLC0415
    from dramatiq.brokers.rabbitmq import RabbitmqBroker  # noqa: PLC0415

    from perfkit.outbox import DramatiqPublisher  # noqa: PLC0415

    broker = RabbitmqBroker(url=rabbitmq_url)
    actor = dramatiq.actor(print, broker=broker, queue_name="perfkit-unconfirmed")
    with pytest.raises(ValueError, match="confirm_delivery=True"):
        DramatiqPublisher(actor)
    broker.close()


Write = tuple[int, bool, bool]  # key number, commit?, async?


@settings(max_examples=int(os.environ.get("PERFKIT_PROPERTY_EXAMPLES", "60")) // 4 or 5,
          deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(writes=st.lists(st.tuples(st.integers(0, 2), st.booleans(), st.booleans()), max_size=12))
def test_delivered_events_are_the_committed_writes_in_order_per_key(
    engine: Engine, outbox: Outbox, queue: tuple[Any, Receiver, str], writes: list[Write]
) -> None:
    """Random committed and rolled-back writes, sync and async: the worker receives every
    committed event (deduplicated by id, exactly the committed set), in commit order per key."""
    run = uuid.uuid4().hex[:8]
    committed: dict[str, list[str]] = defaultdict(list)
    async_engine = None
    for number, (key_number, commit, use_async) in enumerate(writes):
        key = f"{run}:{key_number}"
        if use_async:
            async_engine = async_engine or db.create_async_engine(engine.url)
            event = asyncio.run(_async_write(async_engine, outbox, key, number, commit=commit))
        else:
            event = _write(engine, outbox, key, number, commit=commit)
        if event is not None:
            committed[key].append(event.id)
    if async_engine is not None:
        asyncio.run(async_engine.dispose())
    relay = Relay(engine, outbox, _publisher(queue), batch_size=5)
    while relay.run_once():
        pass
    receiver = queue[1]
    expected = {i for ids in committed.values() for i in ids}
    wait_until(lambda: expected <= receiver.ids())
    ours = {e.id for e in receiver.deliveries if e.key.startswith(run)}
    assert expected == ours
    for key, ids in committed.items():
        assert ids == receiver.first_order(key)


def _write(engine: Engine, box: Outbox, key: str, number: int, *, commit: bool) -> Event | None:
    conn = engine.connect()
    try:
        with conn.begin() as transaction:
            event = box.add(conn, type="write", key=key, payload={"n": number})
            if not commit:
                transaction.rollback()
                return None
        return event
    finally:
        conn.close()


async def _async_write(
    engine: Any, box: Outbox, key: str, number: int, *, commit: bool
) -> Event | None:
    async with engine.connect() as conn:
        transaction = await conn.begin()
        event = await box.aadd(conn, type="write", key=key, payload={"n": number})
        if not commit:
            await transaction.rollback()
            return None
        await transaction.commit()
        return event


def test_concurrent_writers_and_a_running_relay_lose_nothing(
    engine: Engine, outbox: Outbox, queue: tuple[Any, Receiver, str]
) -> None:
    """Four writer threads (a fifth of their transactions rolled back) while the relay runs:
    every committed event arrives, each writer's in its commit order."""
    run = uuid.uuid4().hex[:8]
    committed: dict[str, list[str]] = defaultdict(list)
    errors: list[BaseException] = []

    def writer(thread: int) -> None:
        try:
            key = f"{run}:{thread}"
            for number in range(40):
                event = _write(engine, outbox, key, number, commit=number % 5 != 0)
                if event is not None:
                    committed[key].append(event.id)
        except BaseException as exc:
            errors.append(exc)

    relay = Relay(engine, outbox, _publisher(queue), batch_size=7, poll_interval=0.01)
    relay.start()
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    expected = {i for ids in committed.values() for i in ids}
    wait_until(lambda: expected <= queue[1].ids())
    relay.stop()
    assert (errors, len(expected)) == ([], 4 * 32)
    for key, ids in committed.items():
        assert ids == queue[1].first_order(key)


def test_a_relay_killed_mid_batch_resumes_without_loss(
    engine: Engine, outbox: Outbox, queue: tuple[Any, Receiver, str], rabbitmq_url: str
) -> None:
    """SIGKILL the relay process while it publishes a batch; a new one delivers the rest."""
    if engine.dialect.name == "sqlite" and not engine.url.database:
        pytest.skip("needs a file database")
    run = uuid.uuid4().hex[:8]
    ids: list[str] = []
    with engine.begin() as conn:
        for number in range(60):
            ids.append(outbox.add(conn, type="t", key=f"{run}:k", payload={"n": number}).id)
    script = Path(__file__).with_name("outbox_relay_proc.py")
    url = engine.url.render_as_string(hide_password=False)
    command = [sys.executable, str(script), url, queue[2], rabbitmq_url]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert first.stdout is not None
    for line in first.stdout:  # kill it inside its first batch of 20
        if line.strip() == "published 7":
            break
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    first.stdout.close()
    wait_until(lambda: len(queue[1].ids() & set(ids)) >= 7)
    pending_after_kill = Relay(engine, outbox, InProcessPublisher(print)).pending()
    second = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env)
    try:
        wait_until(lambda: set(ids) <= queue[1].ids(), timeout=60)
    finally:
        second.send_signal(signal.SIGKILL)
        second.wait(timeout=10)
    assert pending_after_kill == 60  # nothing of the killed batch was marked
    assert ids == queue[1].first_order(f"{run}:k")


# -- the row's own statement path ----------------------------------------------------------------


def test_the_event_insert_is_seen_by_query_counts_and_timing(
    engine: Engine, outbox: Outbox
) -> None:
    """The outbox's INSERT fires the cursor events: counted, and timed as a query."""
    from perfkit._context import CURRENT  # noqa: PLC0415
    from perfkit.observability import RequestTiming  # noqa: PLC0415
    from perfkit.observability._sqlalchemy import instrument_engine  # noqa: PLC0415
    from perfkit.testing import count_queries  # noqa: PLC0415

    instrument_engine(engine, metrics=False)
    timing = RequestTiming()
    token = CURRENT.set(timing)
    try:
        with count_queries(engine) as log, engine.begin() as conn:
            outbox.add(conn, type="t", key="k", payload={})
    finally:
        CURRENT.reset(token)
    assert [f"INSERT INTO {outbox.table.name}"] == [
        s[: len(s.split("(")[0])].strip() for s in log.statements
    ]
    assert (timing.db_queries, timing.db_seconds > 0) == (1, True)


def test_a_failing_event_insert_raises_sqlalchemys_error(sqlite_engine: Engine) -> None:
    """A driver error comes out wrapped, as any statement's would (retries classify it)."""
    box = Outbox(name="missing_table")
    with (
        pytest.raises(sa.exc.OperationalError, match="no such table"),
        sqlite_engine.begin() as conn,
    ):
        box.add(conn, type="t", key="k", payload={})


# -- the reference stores ------------------------------------------------------------------------


def _events(engine: Engine, box: Outbox) -> list[tuple[str, str, dict[str, Any]]]:
    import json  # noqa: PLC0415

    table = box.table
    stmt = sa.select(table.c.type, table.c.key, table.c.payload).order_by(table.c.position)
    with engine.connect() as conn:
        return [(t, k, json.loads(p)) for t, k, p in conn.execute(stmt)]


def test_store_writes_record_their_events_and_failed_writes_none(engine: Engine) -> None:
    """cast, cast_many and status changes write events in their transactions; a refused
    write, a rolled-back one or an update that changes no status writes none."""
    from perfkit.errors import Conflict  # noqa: PLC0415
    from perfkit.reference import open_stores, seed  # noqa: PLC0415

    seed(engine, users=5, bills=2, votes=0)
    box = _empty(engine, Outbox())
    with open_stores(engine, outbox=box) as stores:
        vote = stores.votes.cast(bill_id=1, user_id=1, choice="yes")
        with pytest.raises(Conflict):
            stores.votes.cast(bill_id=1, user_id=1, choice="no")
        stores.votes.cast_many(
            [{"bill_id": 2, "user_id": u, "choice": "no"} for u in (1, 2)]
            + [{"bill_id": 1, "user_id": 1, "choice": "no"}]  # taken: no event
        )
        stores.bills.update(2, title="Renamed")  # no status change: no event
        stores.bills.update(2, status="passed")
    events = _events(engine, box)
    expected = [("vote.cast", "bill:1"), ("vote.cast", "bill:2"), ("vote.cast", "bill:2")]
    expected.append(("bill.status_changed", "bill:2"))
    assert expected == [(t, k) for t, k, _ in events]
    assert vote.to_dict() == events[0][2]
    assert (events[3][2]["bill"]["status"], events[3][2]["previous_status"]) == ("passed", "draft")


def test_add_on_a_connection_that_has_not_begun_joins_its_transaction(
    engine: Engine, outbox: Outbox
) -> None:
    """Commit-as-you-go: the event is the connection's first statement, and still commits
    with commit() and goes with rollback(), like any statement would."""
    with engine.connect() as conn:
        outbox.add(conn, type="kept", key="k", payload={})
        conn.commit()
        outbox.add(conn, type="lost", key="k", payload={})
        conn.rollback()
    assert _pending(engine, outbox) == [("k", "kept")]


def test_a_stop_before_run_is_kept_and_backoff_stays_finite(sqlite_engine: Engine) -> None:
    """stop() then run(): run returns at once; a thousand failures still back off finitely."""
    box = Outbox()
    box.create(sqlite_engine)
    relay = Relay(sqlite_engine, box, InProcessPublisher(print), max_backoff=30)
    relay.stop()
    runner = threading.Thread(target=relay.run)
    runner.start()
    runner.join(timeout=30)  # a hang guard: run() returns without relaying
    assert not runner.is_alive()
    assert 0 < relay._backoff(2_000) <= 30


def test_a_relay_whose_lock_connection_dies_takes_it_again(pg_engine: Engine) -> None:
    """PostgreSQL: the relay's lock connection is killed; it stops, takes the lock again on
    a new connection, and relays what was written meanwhile."""
    box = Outbox(name="outbox_lock_death")
    box.table.drop(pg_engine, checkfirst=True)
    box.create(pg_engine)
    seen: list[int] = []
    relay = Relay(pg_engine, box, InProcessPublisher(lambda e: seen.append(e.payload["n"])),
                  poll_interval=0.02, max_backoff=0.1)  # fmt: skip
    relay.start()
    try:
        with pg_engine.begin() as conn:
            box.add(conn, type="t", key="k", payload={"n": 1})
        wait_until(lambda: seen == [1])
        ours = "locktype = 'advisory' AND objid = :key"  # the relay's key: crc32 of the table
        key = {"key": zlib.crc32(b"perfkit-outbox:outbox_lock_death")}
        kill = sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_locks WHERE {ours}")
        with pg_engine.begin() as conn:
            assert conn.execute(kill, key).all()  # the relay held it
        with pg_engine.begin() as conn:
            box.add(conn, type="t", key="k", payload={"n": 2})
        wait_until(lambda: seen == [1, 2])
        with pg_engine.connect() as conn:
            held = conn.execute(
                sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
            )
            assert held.scalar_one() == 1  # taken again
    finally:
        relay.stop()
        box.table.drop(pg_engine)
