"""
What makes the attempts: a thread pool in process, or a dramatiq actor on RabbitMQ.

Both only wake :meth:`Webhooks.attempt` up at the right time; the deliveries table holds
the state, so either can stop or crash anywhere and the next wake-up carries on.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final

from perfkit.outbox import Event

from ._webhooks import Webhooks

if TYPE_CHECKING:
    import dramatiq

__all__ = ["DramatiqWebhooks", "WebhookWorker"]

log = logging.getLogger("perfkit.webhooks")

MAX_HOLD: Final = 600.0


class WebhookWorker:
    """
    Attempt due deliveries in this process, on a pool of *threads*: the embedded default.

    :meth:`dispatch` fans an event out and wakes the worker; it also looks for
    due deliveries every *poll_interval* seconds, so a delivery due later, or
    one left by a process that stopped, is attempted on time. One slow
    endpoint holds one thread for at most its timeout. Several processes may
    run a worker on one database: each delivery is attempted by one of them.

    Example::

        worker = WebhookWorker(webhooks)
        worker.start()
        Relay(engine, outbox, InProcessPublisher(worker.dispatch)).start()

    .. versionadded:: 0.2.0
    """

    def __init__(self, webhooks: Webhooks, *, threads: int = 4, poll_interval: float = 1.0) -> None:
        if threads < 1 or not poll_interval > 0:
            msg = "threads must be at least 1 and poll_interval positive"
            raise ValueError(msg)
        self.webhooks = webhooks
        self._threads = threads
        self._poll = poll_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._busy: set[int] = set()  # queued on the pool or running
        self._busy_lock = threading.Lock()
        self._running = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def dispatch(self, event: Event) -> list[int]:
        """Fan *event* out (:meth:`Webhooks.dispatch`) and wake the worker up."""
        ids = self.webhooks.dispatch(event)
        if ids:
            self._wake.set()
        return ids

    def wake(self) -> None:
        """Look for due deliveries now (one was redelivered, say)."""
        self._wake.set()

    def run_once(self) -> int:
        """Attempt every delivery due now, in this thread; how many were attempted."""
        done = 0
        for delivery_id in self.webhooks.due(limit=1_000):
            self.webhooks.attempt(delivery_id)
            done += 1
        return done

    def start(self) -> None:
        """
        Start the worker's threads.

        Raises:
            RuntimeError: it is running already.
        """
        if self._thread is not None and self._thread.is_alive():
            msg = "this webhook worker is running already"
            raise RuntimeError(msg)
        self._stop.clear()
        with self._busy_lock:
            self._busy.clear()  # what a stop() cancelled is due again: found again
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="perfkit-webhook")
        self._thread = threading.Thread(target=self._run, name="perfkit-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """
        Stop looking for work, drop what is queued, and wait up to *timeout* seconds for
        the attempts under way (each ends within the webhooks' timeout; one cut short
        is attempted again once its lease runs out).
        """
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        thread, pool = self._thread, self._pool
        if thread is not None:
            thread.join(timeout)
            self._thread = None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            with self._idle:
                self._idle.wait_for(
                    lambda: not self._running, max(0.0, deadline - time.monotonic())
                )
            self._pool = None

    def _run(self) -> None:
        pool = self._pool
        assert pool is not None
        failures = 0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._submit_due(pool)
                soonest = self.webhooks.next_due()
                failures = 0
            except Exception:
                failures += 1
                soonest = None
                log.exception("webhook worker could not read the due deliveries")
            wait = self._poll * min(2**failures, 30) if failures else self._poll
            with self._busy_lock:
                busy = bool(self._busy)
            # Due ones still queued on the pool count as due: while any are, a finished
            # attempt wakes the loop, so it does not poll the table meanwhile.
            if soonest is not None and (soonest > 0 or not busy):
                wait = min(wait, max(soonest, 0.01))
            self._wake.wait(wait)

    def _submit_due(self, pool: ThreadPoolExecutor) -> None:
        """Queue due deliveries on the pool: at most two per thread waiting or running."""
        cap = self._threads * 2
        with self._busy_lock:
            busy = len(self._busy)
        if busy >= cap:
            return
        for delivery_id in self.webhooks.due(limit=cap):  # the busy ones may be among them
            with self._busy_lock:
                if delivery_id in self._busy or len(self._busy) >= cap:
                    continue
                self._busy.add(delivery_id)
            with self._idle:
                self._running += 1  # from now: stop() waits for it, or for its cancelling
            future = pool.submit(self._attempt, delivery_id)
            future.add_done_callback(functools.partial(self._finished, delivery_id))

    def _attempt(self, delivery_id: int) -> None:
        try:
            self.webhooks.attempt(delivery_id)
        except Exception:
            log.exception("webhook delivery %s: the attempt could not be recorded", delivery_id)

    def _finished(self, delivery_id: int, _future: object) -> None:
        """After an attempt, or its cancelling by stop(): free its place."""
        with self._busy_lock:
            self._busy.discard(delivery_id)
        with self._idle:
            self._running -= 1
            self._idle.notify_all()
        self._wake.set()  # a thread is free; a deferred delivery may be due soon


class DramatiqWebhooks:
    """
    Attempt deliveries in dramatiq workers: one message per attempt, delayed until it is due.

    :attr:`actor` (on *queue_name*) makes one attempt (:meth:`Webhooks.wake`)
    and, when the delivery is due again later, sends itself a delayed message.
    Each message carries the delivery's attempt count when it was sent: one
    that is stale, or that finds an attempt in flight, does nothing, so
    extra messages (a sweep, a relay publishing an event twice) never
    multiply. Dramatiq holds a delayed message unacknowledged in the worker
    until it is due, and RabbitMQ closes a channel that holds one longer than
    its ``consumer_timeout`` (30 minutes by default): so no message waits more
    than *max_hold* seconds, and one that wakes early only sends the next.
    The worker starts with dramatiq's command (``dramatiq yourapp.worker``).
    Call :meth:`sweep` now and then (:meth:`start_sweeping` does, every minute;
    from any process): a
    wake-up is lost when a worker dies between recording an attempt and
    sending the next message, when that send fails, or when dramatiq gives
    up on a message after its own retries, and the sweep sends one for each
    due delivery (the extra ones for the others do nothing).

    Example::

        webhooks = Webhooks(engine)
        queue = DramatiqWebhooks(webhooks, broker=broker)

        @dramatiq.actor(broker=broker, queue_name="events")
        def on_event(message: dict) -> None:
            queue.dispatch(Event.from_message(message))

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        webhooks: Webhooks,
        *,
        broker: dramatiq.Broker | None = None,
        queue_name: str = "perfkit.webhooks",
        actor_name: str | None = None,
        max_hold: float = MAX_HOLD,
        max_retries: int = 20,
    ) -> None:
        import dramatiq  # noqa: PLC0415 - perfkit[queue]

        if not 0 < max_hold <= 1_500:
            msg = f"max_hold must be more than 0 and under RabbitMQ's 30 minutes, not {max_hold!r}"
            raise ValueError(msg)
        self.webhooks = webhooks
        self._hold = max_hold
        self._sweeper: threading.Thread | None = None
        self._stop_sweeping = threading.Event()
        self.actor: dramatiq.Actor[[int, int], None] = dramatiq.actor(
            actor_name=actor_name or f"perfkit_webhook_{queue_name.replace('.', '_')}",
            queue_name=queue_name,
            broker=broker,
            max_retries=max_retries,
            # dramatiq's own retries are delayed messages too: keep them under the hold.
            max_backoff=int(max_hold * 1000),
        )(self._deliver)

    def _deliver(self, delivery_id: int, attempts: int) -> None:
        following = self.webhooks.wake(delivery_id, attempts)
        if following is not None:
            self.later(delivery_id, *following)

    def later(self, delivery_id: int, seconds: float, attempts: int) -> None:
        """
        Wake delivery *delivery_id*, at *attempts* attempts, after *seconds* (at most
        *max_hold*; a wake-up that comes early sends the next).
        """
        delay = int(min(max(seconds, 0.0), self._hold) * 1000)
        self.actor.send_with_options(args=(delivery_id, attempts), delay=delay or None)

    def dispatch(self, event: Event) -> list[int]:
        """Fan *event* out (:meth:`Webhooks.dispatch`) and send one message per delivery."""
        ids = self.webhooks.dispatch(event)
        for delivery_id in ids:
            self.actor.send(delivery_id, 0)  # stale, and dropped, if it had attempts already
        return ids

    def start_sweeping(self, interval: float = 60.0) -> None:
        """
        Call :meth:`sweep` every *interval* seconds on a daemon thread, until
        :meth:`stop_sweeping` (a failed sweep is logged and tried at the next one).

        Raises:
            RuntimeError: it is sweeping already.
        """
        if not interval > 0:
            msg = f"interval must be positive, not {interval!r}"
            raise ValueError(msg)
        if self._sweeper is not None and self._sweeper.is_alive():
            msg = "this DramatiqWebhooks is sweeping already"
            raise RuntimeError(msg)
        stopped = self._stop_sweeping = threading.Event()

        def run() -> None:
            while not stopped.wait(interval):
                try:
                    self.sweep()
                except Exception:
                    log.exception("the webhook sweep failed; again in %.0f s", interval)

        self._sweeper = threading.Thread(target=run, name="perfkit-webhook-sweep", daemon=True)
        self._sweeper.start()

    def stop_sweeping(self, timeout: float = 10.0) -> None:
        """Stop the thread :meth:`start_sweeping` started (after its current sweep)."""
        self._stop_sweeping.set()
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.join(timeout)

    def sweep(self, limit: int = 1_000) -> int:
        """Send a message for each delivery due now (extra ones are dropped); how many."""
        due = self.webhooks.due_wakeups(limit=limit)
        for delivery_id, attempts in due:
            self.actor.send(delivery_id, attempts)
        return len(due)

    def __repr__(self) -> str:
        return f"DramatiqWebhooks(actor={self.actor.actor_name!r})"
