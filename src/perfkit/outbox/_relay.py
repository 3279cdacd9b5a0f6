"""
The relay: committed outbox rows handed to a queue, at least once, in order, then marked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import signal
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Final, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perfkit import db as _db

from ._outbox import Event, Outbox

__all__ = ["InProcessPublisher", "Publisher", "Relay"]

log = logging.getLogger("perfkit.outbox")

DEFAULT_BATCH_SIZE: Final = 100
MAX_BATCH_SIZE: Final = 10_000


class Publisher(Protocol):
    """
    Where the relay hands events: a queue engine, or a handler in process.

    :meth:`publish` returns only once every event is durably in the queue's
    hands (a broker's publisher confirm); it raises if any may not be. The
    relay deletes the events only after it returns, so an event is
    never lost, but may be published twice (after a crash between the two):
    consumers deduplicate on :attr:`Event.id`.

    .. versionadded:: 0.2.0
    """

    def publish(self, events: Sequence[Event]) -> None:
        """Hand *events* over, in order."""
        ...


class InProcessPublisher:
    """
    Call *handler* with each event, in this process: the embedded default, no broker.

    The outbox table is then the queue: an event whose handler raises stays
    pending, and the relay offers it again after a backoff (the events
    before it in the batch were handled and are offered again too: handlers
    must be idempotent on :attr:`Event.id`, as with any queue).

    .. versionadded:: 0.2.0
    """

    __slots__ = ("_handler",)

    def __init__(self, handler: Callable[[Event], object]) -> None:
        self._handler = handler

    def publish(self, events: Sequence[Event]) -> None:
        """Handle each event in order; the first failure stops the batch."""
        for event in events:
            self._handler(event)


class Relay:
    """
    Move committed events from an :class:`Outbox` to a :class:`Publisher`.

    Each step reads up to *batch_size* pending events in position order
    (short read, no lock held), publishes them, then deletes them (a short
    write). A relay that crashes anywhere loses nothing: what it had not
    deleted is published again when it, or another, resumes. One relay
    runs at a time per outbox: :meth:`run` first takes a lock that dies with
    its process (a PostgreSQL advisory lock on a connection of its own; on
    SQLite, an exclusive ``flock`` beside the database file), and a second
    relay waits as a standby.

    Order: events of one key are published in the order their transactions
    committed, whenever one committed before the next began (positions come
    from a sequence, so they follow that order). Concurrent transactions
    have no order between them to keep.

    Args:
        engine: The database the outbox is in.
        outbox: The outbox.
        publisher: Where events go.
        batch_size: Events per step (1 to 10,000).
        poll_interval: Seconds between steps that found nothing.
        max_backoff: The most seconds between attempts after failures
            (doubling from *poll_interval*, with jitter).

    Example::

        relay = Relay(engine, outbox, DramatiqPublisher(deliver))
        relay.run()  # until stop() or a signal

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        engine: Engine,
        outbox: Outbox,
        publisher: Publisher,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_interval: float = 0.2,
        max_backoff: float = 30.0,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            msg = f"batch_size must be an integer, not {batch_size!r}"
            raise ValueError(msg)
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            msg = f"batch_size must be from 1 to {MAX_BATCH_SIZE:,}, not {batch_size}"
            raise ValueError(msg)
        if not poll_interval > 0 or not max_backoff >= poll_interval:
            msg = "poll_interval must be positive and max_backoff at least poll_interval"
            raise ValueError(msg)
        self._engine = engine
        self._writer = _db.for_writes(engine)
        self._outbox = outbox
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll = poll_interval
        self._max_backoff = max_backoff
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        table = outbox.table
        self._pending = (
            sa.select(table.c.position, table.c.id, table.c.key, table.c.type)
            .add_columns(table.c.payload, table.c.created_at)
            .order_by(table.c.position)
            .limit(sa.bindparam("limit", type_=sa.Integer()))
        )
        self._done = table.delete().where(
            table.c.position.in_(sa.bindparam("positions", expanding=True))
        )

    def run_once(self) -> int:
        """
        Publish one batch of pending events, then delete it; return how many (0: none pending).

        Raises whatever the read, the publisher or the delete raised: the
        batch then stays pending.
        """
        with self._engine.connect() as conn:
            rows = conn.execute(self._pending, {"limit": self._batch_size}).all()
        if not rows:
            return 0
        events = [
            Event(row.id, row.key, row.type, json.loads(row.payload), row.created_at, row.position)
            for row in rows
        ]
        self._publisher.publish(events)
        with self._writer.begin() as conn:
            conn.execute(self._done, {"positions": [event.position for event in events]})
        return len(events)

    def pending(self) -> int:
        """How many events wait to be relayed."""
        stmt = sa.select(sa.func.count()).select_from(self._outbox.table)
        with self._engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def run(self) -> None:
        """
        Take the relay lock, then relay until :meth:`stop`.

        Every failure backs off (doubling from *poll_interval* up to
        *max_backoff*, with jitter) and is tried again: a step's, the lock's,
        and the lock's own connection dying (on PostgreSQL it is checked
        before each step; if it is gone, so is the lock, and the relay stops
        publishing until it holds the lock again).
        """
        failures = 0
        while not self._stop.is_set():
            try:
                with self._lock() as alive:
                    if alive is None:
                        return  # stopped while waiting as a standby
                    failures = 0
                    self._relay_while(alive)
            except Exception:
                failures += 1
                delay = self._backoff(failures)
                log.exception(
                    "outbox relay lost its lock or could not take it; again in %.1f s", delay
                )
                self._stop.wait(delay)

    def _relay_while(self, alive: Callable[[], None]) -> None:
        """Relay until stopped (raises if the lock died)."""
        failures = 0
        while not self._stop.is_set():
            alive()  # raises when the lock's connection is gone
            try:
                relayed = self.run_once()
            except Exception:
                failures += 1
                delay = self._backoff(failures)
                log.exception("outbox relay step failed; again in %.1f s", delay)
                self._stop.wait(delay)
                continue
            failures = 0
            if relayed < self._batch_size:
                self._stop.wait(self._poll)

    def _backoff(self, failures: int) -> float:
        capped: float = min(self._max_backoff, self._poll * 2 ** min(failures, 32))
        return capped * random.uniform(0.5, 1.0)

    def start(self) -> None:
        """
        Run :meth:`run` in a daemon thread (relay in process); :meth:`stop` ends it.

        Raises:
            RuntimeError: this relay's thread is still running (a :meth:`stop`
                whose join timed out included).
        """
        if self._thread is not None and self._thread.is_alive():
            msg = "this relay is running already"
            raise RuntimeError(msg)
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="perfkit-outbox-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """
        Stop after the current step, and join the thread :meth:`start` made.

        A stop before :meth:`run` begins counts: it returns at once. Call it
        from another thread, not from a signal handler (``threading.Event``
        is not safe there): :meth:`serve` does that for a relay's process.
        """
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if not thread.is_alive():
                self._thread = None

    def serve(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        """
        Relay until one of *signals* arrives: a relay's whole process, from the main thread.

        The relay runs in its thread (:meth:`start`); the signal handlers only
        set a flag (nothing that takes a lock runs in a handler), and the main
        thread then stops the relay after its current step. The previous
        handlers are put back.

        Example::

            Relay(engine, outbox, DramatiqPublisher(deliver)).serve()
        """
        received: list[int] = []
        previous = {
            sig: signal.signal(sig, lambda sig, _frame: received.append(sig)) for sig in signals
        }
        try:
            self.start()
            thread = self._thread
            while not received and thread is not None and thread.is_alive():
                thread.join(0.5)
        finally:
            self.stop(timeout=None)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[Callable[[], None] | None]:
        """Hold the relay lock; yield a check that raises if it was lost (None: stopped first)."""
        name = self._outbox.table.name
        if self._engine.dialect.name == "postgresql":
            key = zlib.crc32(f"perfkit-outbox:{name}".encode())
            with self._engine.connect() as conn:
                while not conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar():
                    conn.commit()
                    if self._stop.wait(self._poll * 5):
                        yield None
                        return
                conn.commit()

                def alive() -> None:
                    conn.execute(_PING)  # a dead connection raises: its lock died with it
                    conn.commit()

                try:
                    yield alive
                finally:
                    with contextlib.suppress(Exception):  # gone with the connection anyway
                        conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                        conn.commit()
            return
        path = _lock_path(self._engine)
        if path is None:
            yield _nothing  # one process: nothing to share the outbox with
            return
        import fcntl  # noqa: PLC0415 - POSIX; only the SQLite file lock needs it

        with open(f"{path}.{name}.relay-lock", "a+b") as handle:
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if self._stop.wait(self._poll * 5):
                        yield None
                        return
            try:
                yield _nothing  # a file lock lives as long as the process
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


_PING: Final = sa.text("SELECT 1")


def _nothing() -> None:
    return None


def _lock_path(engine: Engine) -> str | None:
    """The SQLite database file to lock beside, or None (in memory: one process)."""
    if engine.dialect.name != "sqlite":
        return None
    path = engine.url.database or ""
    if path.startswith("file:"):  # a URI filename: file:path?mode=...
        path, _, query = path.removeprefix("file:").partition("?")
        if "mode=memory" in query:
            return None
    return None if not path or path == ":memory:" else path
