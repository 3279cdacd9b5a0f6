"""
Units of database work retried whole: a transaction (begin, run, commit, and again from the
top on a transient failure), or a read on a fresh connection per attempt.

The loop is tenacity's, driven by the policy objects of :mod:`._retry`; what is specific
here is the handle's lifetime (one per attempt) and what a lost COMMIT means.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import tenacity as _t
from sqlalchemy import exc as sa_exc
from sqlalchemy import text as sa_text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from perfkit._clock import SYSTEM_CLOCK, Clock
from perfkit.errors import CommitOutcomeUnknown

from ._budget import RetryBudget
from ._retry import Predicate, RetryHook, _Policy, _retry_async, _retry_sync, _retrying_kwargs, _Run
from ._transient import is_transient

__all__ = ["arun_in_transaction", "arun_read", "run_in_transaction", "run_read"]

R = TypeVar("R")
H = TypeVar("H")

_UNKNOWN = (
    "the connection was lost during COMMIT: the transaction may have been applied, "
    "so it was not retried (pass verify= to check, or idempotent=True if running it "
    "twice is harmless)"
)
log = logging.getLogger("perfkit.retry")

_BACKEND_GONE: Final = sa_text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
_POLL: Final = 0.01
_STILL_COMMITTING = (
    "the connection was lost during COMMIT and the server session that ran it is still "
    "there at the deadline: the transaction may yet be applied"
)
_UNSETTLED = (
    "the connection was lost during COMMIT and the outcome could not be checked "
    "before the retries ran out: the transaction may have been applied"
)


class _Outcome:
    """
    What one call knows about a lost COMMIT: the state the sync and async drivers share.

    ``unknown``: an attempt lost its COMMIT and nobody has looked yet. ``pid``: the
    PostgreSQL session that ran it, which must be gone before looking (a COMMIT still in
    flight there is not visible yet). ``settled``: verify found the writes; ``found`` is
    the result, returned even if a later step of that attempt fails.
    """

    __slots__ = ("found", "pid", "settled", "unknown")

    def __init__(self) -> None:
        self.unknown = False
        self.settled = False
        self.found: Any = None
        self.pid: int | None = None

    def commit_failed(self, exc: Exception, *, idempotent: bool, verifiable: bool) -> None:
        if idempotent or not _outcome_unknown(exc):
            return
        if not verifiable:
            raise CommitOutcomeUnknown(_UNKNOWN) from exc
        self.unknown = True  # the next attempt runs verify() first

    def checked(self, found: Any) -> bool:
        """Record what verify found; whether the unit is done (its writes are there)."""
        self.unknown = False
        self.pid = None
        if found is None:
            return False
        self.settled, self.found = True, found
        return True

    def gave_up(self, exc: Exception) -> None:
        if self.unknown and not isinstance(exc, CommitOutcomeUnknown):
            if not is_transient(exc):
                log.error("verify() failed after a lost COMMIT", exc_info=exc)
            raise CommitOutcomeUnknown(_UNSETTLED) from exc


def _never_unknown(on: Predicate) -> Predicate:
    """*on*, except that a lost COMMIT that cannot be checked is never retried."""

    def retry_on(exc: BaseException) -> bool:
        return not isinstance(exc, CommitOutcomeUnknown) and on(exc)

    return retry_on


def _backend_pid(handle: Any) -> int | None:
    """The PostgreSQL backend pid of *handle*'s connection (psycopg), else ``None``."""
    with contextlib.suppress(Exception):  # best effort: any other driver or handle
        sync = getattr(handle, "sync_connection", None) or getattr(handle, "sync_session", None)
        target = sync if sync is not None else handle
        if isinstance(target, Session):
            target = target.connection()
        if isinstance(target, Connection):
            pid = target.connection.driver_connection.info.backend_pid  # type: ignore[union-attr]
            return int(pid)
    return None


def run_in_transaction(
    factory: Callable[[], H],
    fn: Callable[[H], R],
    *,
    attempts: int = 5,
    timeout: float | None = 10.0,
    wait_initial: float = 0.02,
    wait_max: float = 0.5,
    idempotent: bool = False,
    verify: Callable[[H], R | None] | None = None,
    on: Predicate = is_transient,
    budget: RetryBudget | None = None,
    hooks: tuple[RetryHook, ...] = (),
    clock: Clock = SYSTEM_CLOCK,
) -> R:
    """
    Run *fn* in a transaction, retrying the whole unit on transient failures.

    Each attempt takes a fresh ``Session`` or ``Connection`` from *factory*
    (a ``sessionmaker``, ``engine.connect``, ``perfkit.db.for_writes(engine).connect``…),
    begins, calls ``fn(handle)``, commits, and closes. A transient failure —
    SQLite busy, a PostgreSQL serialization failure or deadlock, a lost
    connection before COMMIT — rolls the attempt back and runs *fn* again
    from the top after a jittered backoff, so *fn* must do all its reads and
    writes through the handle it is given.

    If the connection is lost while COMMIT is in flight, nobody knows whether
    it was applied. With *verify*, the next attempt finds out: it calls
    ``verify(handle)`` in a fresh transaction first, which returns the unit's
    result if the unit's writes are there (the COMMIT went through: that
    result is returned) or ``None`` if they are not (the unit runs again).
    Without *verify*, that raises :class:`~perfkit.errors.CommitOutcomeUnknown`
    at once, unless *idempotent* says running the unit twice is harmless. It
    is raised too when the retries run out before the outcome could be
    checked: it reaches the caller only when the outcome cannot be known.

    Args:
        factory: Makes the handle of one attempt, used as a context manager.
        fn: The unit: all its reads and writes go through the handle.
        idempotent: Running *fn* twice is harmless: a lost COMMIT is retried
            like any transient failure.
        verify: Looks for the unit's writes after a lost COMMIT (a unit
            whose result is ``None`` cannot be verified this way: make it
            *idempotent* or return a value). It must find this unit's
            writes, not merely similar ones: look them up by a key the unit
            chose (the unique pair a vote is stored under, a timestamp taken
            before the first attempt).

    The other options are those of :func:`retry_with_backoff`.

    Example::

        def cast(conn):
            conn.execute(insert(votes).values(bill_id=7, user_id=3, choice="yes"))
            return True

        def stored(conn):
            query = select(votes.c.choice).where(votes.c.bill_id == 7, votes.c.user_id == 3)
            return conn.execute(query).scalar() == "yes" or None

        run_in_transaction(perfkit.db.for_writes(engine).connect, cast, verify=stored)

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 *verify*.
    """
    run = _run(
        fn, attempts, timeout, wait_initial, wait_max, _never_unknown(on), budget, hooks, clock
    )
    retrying = _t.Retrying(sleep=clock.sleep, **_retrying_kwargs(run))
    outcome = _Outcome()

    def attempt() -> R:
        if outcome.settled:
            found: R = outcome.found
            return found
        with factory() as handle:  # type: ignore[attr-defined]
            if outcome.unknown and outcome.pid is not None:
                _wait_for_session_end(handle, outcome.pid, run)
            transaction = handle.begin()
            try:
                if outcome.unknown:
                    assert verify is not None
                    if outcome.checked(verify(handle)):
                        with contextlib.suppress(Exception):  # it only read
                            transaction.rollback()
                        return outcome.found  # type: ignore[no-any-return]
                result = fn(handle)
            except BaseException:
                transaction.rollback()
                raise
            if verify is not None:
                outcome.pid = _backend_pid(handle)
            try:
                transaction.commit()
            except Exception as exc:
                outcome.commit_failed(exc, idempotent=idempotent, verifiable=verify is not None)
                raise
            return result

    try:
        result: R = retrying(attempt)
    except Exception as exc:
        outcome.gave_up(exc)
        raise
    if budget is not None:
        budget.record_success()
    return result


async def arun_in_transaction(
    factory: Callable[[], H],
    fn: Callable[[H], Awaitable[R]],
    *,
    attempts: int = 5,
    timeout: float | None = 10.0,
    wait_initial: float = 0.02,
    wait_max: float = 0.5,
    idempotent: bool = False,
    verify: Callable[[H], Awaitable[R | None]] | None = None,
    on: Predicate = is_transient,
    budget: RetryBudget | None = None,
    hooks: tuple[RetryHook, ...] = (),
    clock: Clock = SYSTEM_CLOCK,
) -> R:
    """
    The asyncio twin of :func:`run_in_transaction` (``async_sessionmaker``,
    ``async_engine.connect``); *verify* is a coroutine function too.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 *verify*.
    """
    run = _run(
        fn, attempts, timeout, wait_initial, wait_max, _never_unknown(on), budget, hooks, clock
    )
    retrying = _t.AsyncRetrying(sleep=clock.asleep, **_retrying_kwargs(run))
    outcome = _Outcome()

    async def attempt() -> R:
        if outcome.settled:
            found: R = outcome.found
            return found
        async with factory() as handle:  # type: ignore[attr-defined]
            if outcome.unknown and outcome.pid is not None:
                await _await_session_end(handle, outcome.pid, run)
            transaction = await handle.begin()
            try:
                if outcome.unknown:
                    assert verify is not None
                    if outcome.checked(await verify(handle)):
                        with contextlib.suppress(Exception):  # it only read
                            await transaction.rollback()
                        return outcome.found  # type: ignore[no-any-return]
                result = await fn(handle)
            except BaseException:
                await transaction.rollback()
                raise
            if verify is not None:
                outcome.pid = _backend_pid(handle)
            try:
                await transaction.commit()
            except Exception as exc:
                outcome.commit_failed(exc, idempotent=idempotent, verifiable=verify is not None)
                raise
            return result

    try:
        result: R = await retrying(attempt)
    except Exception as exc:
        outcome.gave_up(exc)
        raise
    if budget is not None:
        budget.record_success()
    return result


def run_read(
    factory: Callable[[], H],
    fn: Callable[[H], R],
    *,
    attempts: int = 10,
    timeout: float | None = 2.0,
    wait_initial: float = 0.01,
    wait_max: float = 0.25,
    on: Predicate = is_transient,
    budget: RetryBudget | None = None,
    hooks: tuple[RetryHook, ...] = (),
    clock: Clock = SYSTEM_CLOCK,
) -> R:
    """
    Run the read *fn* on a fresh handle from *factory*, retried on transient failures.

    For reads that a dropped connection, a database restart or a busy SQLite
    file may interrupt mid-query, which ``pool_pre_ping`` does not cover (it
    checks a connection only before it is handed out). Each attempt takes a
    new handle from *factory* (``engine.connect``, a ``sessionmaker``), calls
    ``fn(handle)`` and closes it, so *fn* must read through the handle it is
    given and must not write: nothing is committed.

    On success this costs what ``with factory() as handle: fn(handle)``
    costs, plus a ``try``: tenacity is set up only after a failure. The
    defaults suit a request's read: a 2 s deadline, waits from 10 ms. The
    deadline stops retries (no wait past it, no attempt started after it);
    it does not interrupt an attempt, so one stuck connecting or waiting for
    the pool lasts as long as ``connect_timeout`` or ``pool_timeout`` allow.

    Args:
        factory: Makes the handle of one attempt, used as a context manager.
        fn: The read.

    The other options are those of :func:`retry_with_backoff`.

    Example::

        def titles(conn):
            return conn.execute(select(bills.c.title)).scalars().all()

        run_read(engine.connect, titles)

    .. versionadded:: 0.2.0
    """

    def attempt() -> R:
        with factory() as handle:  # type: ignore[attr-defined]
            return fn(handle)

    started = clock.monotonic()
    try:
        result = attempt()
    except Exception as exc:
        if not on(exc):
            raise
        first = exc
    else:
        if budget is not None:
            budget.record_success()
        return result
    run = _run(fn, attempts, timeout, wait_initial, wait_max, on, budget, hooks, clock, started)
    retried: R = _retry_sync(attempt, (), {}, first, run)
    return retried


async def arun_read(
    factory: Callable[[], H],
    fn: Callable[[H], Awaitable[R]],
    *,
    attempts: int = 10,
    timeout: float | None = 2.0,
    wait_initial: float = 0.01,
    wait_max: float = 0.25,
    on: Predicate = is_transient,
    budget: RetryBudget | None = None,
    hooks: tuple[RetryHook, ...] = (),
    clock: Clock = SYSTEM_CLOCK,
) -> R:
    """
    The asyncio twin of :func:`run_read` (``async_engine.connect``, an ``async_sessionmaker``).

    .. versionadded:: 0.2.0
    """

    async def attempt() -> R:
        async with factory() as handle:  # type: ignore[attr-defined]
            return await fn(handle)

    started = clock.monotonic()
    try:
        result = await attempt()
    except Exception as exc:
        if not on(exc):
            raise
        first = exc
    else:
        if budget is not None:
            budget.record_success()
        return result
    run = _run(fn, attempts, timeout, wait_initial, wait_max, on, budget, hooks, clock, started)
    retried: R = await _retry_async(attempt, (), {}, first, run)
    return retried


def _run(  # noqa: PLR0917 - private; the public signatures spell the options out
    fn: Callable[..., Any],
    attempts: int,
    timeout: float | None,
    wait_initial: float,
    wait_max: float,
    on: Predicate,
    budget: RetryBudget | None,
    hooks: tuple[RetryHook, ...],
    clock: Clock,
    started: float | None = None,
) -> _Run:
    if attempts < 1:
        msg = f"attempts must be at least 1, not {attempts}"
        raise ValueError(msg)
    if timeout is not None and not timeout > 0:
        msg = f"timeout must be positive or None, not {timeout}"
        raise ValueError(msg)
    if wait_initial < 0 or wait_max < 0:
        msg = "wait_initial and wait_max must not be negative"
        raise ValueError(msg)
    policy = _Policy(attempts, timeout, wait_initial, wait_max, on, budget, hooks, clock)
    name = getattr(fn, "__qualname__", repr(fn))
    return _Run(policy, name, clock.monotonic() if started is None else started)


def _wait_for_session_end(handle: Any, pid: int, run: _Run) -> None:
    """
    Wait until PostgreSQL session *pid* (which lost its client during COMMIT) has ended:
    until then its COMMIT may still be running, and a look at the data could miss it.
    """
    clock = run.policy.clock
    while True:
        alive = handle.execute(_BACKEND_GONE, {"pid": pid}).scalar_one()
        handle.rollback()  # its own transaction: verify's snapshot must start after
        if not alive:
            return
        if run.deadline is not None and clock.monotonic() >= run.deadline:
            raise CommitOutcomeUnknown(_STILL_COMMITTING)
        clock.sleep(_POLL)


async def _await_session_end(handle: Any, pid: int, run: _Run) -> None:
    """The asyncio twin of :func:`_wait_for_session_end`."""
    clock = run.policy.clock
    while True:
        alive = (await handle.execute(_BACKEND_GONE, {"pid": pid})).scalar_one()
        await handle.rollback()
        if not alive:
            return
        if run.deadline is not None and clock.monotonic() >= run.deadline:
            raise CommitOutcomeUnknown(_STILL_COMMITTING)
        await clock.asleep(_POLL)


def _outcome_unknown(exc: BaseException) -> bool:
    """A transient commit failure that is not a clean abort (busy, serialization, deadlock)."""
    if not is_transient(exc):
        return False
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    if getattr(orig, "sqlstate", None) in ("40001", "40P01"):
        return False  # the server aborted it: known not applied
    sqlite3 = sys.modules.get("sqlite3")
    return not (sqlite3 is not None and isinstance(orig, sqlite3.OperationalError))
