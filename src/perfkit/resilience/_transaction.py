"""
Retrying a whole transaction: begin, run, commit — and again from the top on a transient failure.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import tenacity as _t
from sqlalchemy import exc as sa_exc

from perfkit._clock import SYSTEM_CLOCK, Clock
from perfkit.errors import CommitOutcomeUnknown

from ._budget import RetryBudget
from ._retry import Predicate, RetryHook, _Policy, _retrying_kwargs, _Run
from ._transient import is_transient

__all__ = ["arun_in_transaction", "run_in_transaction"]

R = TypeVar("R")
H = TypeVar("H")


def run_in_transaction(
    factory: Callable[[], H],
    fn: Callable[[H], R],
    *,
    attempts: int = 5,
    timeout: float | None = 10.0,
    wait_initial: float = 0.02,
    wait_max: float = 0.5,
    idempotent: bool = False,
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
    it was applied: that raises :class:`~perfkit.errors.CommitOutcomeUnknown`
    instead of retrying, unless *idempotent* says running the unit twice is
    harmless.

    The other options are those of :func:`retry_with_backoff`.

    Example::

        def transfer(conn):
            ...

        run_in_transaction(perfkit.db.for_writes(engine).connect, transfer)

    .. versionadded:: 0.1.0
    """
    run = _run(
        fn,
        attempts=attempts,
        timeout=timeout,
        wait_initial=wait_initial,
        wait_max=wait_max,
        on=on,
        budget=budget,
        hooks=hooks,
        clock=clock,
    )
    retrying = _t.Retrying(sleep=clock.sleep, **_retrying_kwargs(run))

    def attempt() -> R:
        with factory() as handle:  # type: ignore[attr-defined]
            transaction = handle.begin()
            try:
                result = fn(handle)
            except BaseException:
                transaction.rollback()
                raise
            try:
                transaction.commit()
            except Exception as exc:
                _check_commit_failure(exc, idempotent)
                raise
            return result

    result: R = retrying(attempt)
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
    on: Predicate = is_transient,
    budget: RetryBudget | None = None,
    hooks: tuple[RetryHook, ...] = (),
    clock: Clock = SYSTEM_CLOCK,
) -> R:
    """
    The asyncio twin of :func:`run_in_transaction` (``async_sessionmaker``,
    ``async_engine.connect``).

    .. versionadded:: 0.1.0
    """
    run = _run(
        fn,
        attempts=attempts,
        timeout=timeout,
        wait_initial=wait_initial,
        wait_max=wait_max,
        on=on,
        budget=budget,
        hooks=hooks,
        clock=clock,
    )
    retrying = _t.AsyncRetrying(sleep=clock.asleep, **_retrying_kwargs(run))

    async def attempt() -> R:
        async with factory() as handle:  # type: ignore[attr-defined]
            transaction = await handle.begin()
            try:
                result = await fn(handle)
            except BaseException:
                await transaction.rollback()
                raise
            try:
                await transaction.commit()
            except Exception as exc:
                _check_commit_failure(exc, idempotent)
                raise
            return result

    result: R = await retrying(attempt)
    if budget is not None:
        budget.record_success()
    return result


def _run(
    fn: Callable[..., Any],
    *,
    attempts: int,
    timeout: float | None,
    wait_initial: float,
    wait_max: float,
    on: Predicate,
    budget: RetryBudget | None,
    hooks: tuple[RetryHook, ...],
    clock: Clock,
) -> _Run:
    if attempts < 1:
        msg = f"attempts must be at least 1, not {attempts}"
        raise ValueError(msg)
    policy = _Policy(attempts, timeout, wait_initial, wait_max, on, budget, hooks, clock)
    return _Run(policy, getattr(fn, "__qualname__", repr(fn)), clock.monotonic())


def _check_commit_failure(exc: Exception, idempotent: bool) -> None:
    """Raise CommitOutcomeUnknown when COMMIT may or may not have happened."""
    if idempotent or not _outcome_unknown(exc):
        return
    msg = (
        "the connection was lost during COMMIT: the transaction may have been applied, "
        "so it was not retried (pass idempotent=True if running it twice is harmless)"
    )
    raise CommitOutcomeUnknown(msg) from exc


def _outcome_unknown(exc: BaseException) -> bool:
    """A transient commit failure that is not a clean abort (busy, serialization, deadlock)."""
    if not is_transient(exc):
        return False
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    if getattr(orig, "sqlstate", None) in ("40001", "40P01"):
        return False  # the server aborted it: known not applied
    sqlite3 = sys.modules.get("sqlite3")
    return not (sqlite3 is not None and isinstance(orig, sqlite3.OperationalError))
