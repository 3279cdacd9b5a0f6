"""
``@retry_with_backoff``: a direct call on success, tenacity only after a retryable failure.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, Protocol, TypeVar, overload

import tenacity as _t

from perfkit._clock import SYSTEM_CLOCK, Clock

from ._budget import RetryBudget
from ._transient import is_transient

__all__ = [
    "RetryDetails",
    "RetryHook",
    "RetryStats",
    "backoff_delay",
    "retry_stats",
    "retry_with_backoff",
]

log = logging.getLogger("perfkit.retry")

P = ParamSpec("P")
R = TypeVar("R")

Predicate = Callable[[BaseException], bool]


@dataclass(frozen=True, slots=True)
class RetryDetails:
    """
    What a retry hook is told before each wait.

    Attributes:
        name: The retried function's qualified name.
        attempt: The attempt that just failed (1 for the first call).
        exception: Its exception.
        wait: Seconds about to be slept before the next attempt.
        elapsed: Seconds since the first attempt started.

    .. versionadded:: 0.1.0
    """

    name: str
    attempt: int
    exception: BaseException
    wait: float
    elapsed: float


class RetryHook(Protocol):
    """
    Called before each retry, e.g. to count it in metrics or log it.

    .. versionadded:: 0.1.0
    """

    def __call__(self, details: RetryDetails) -> None:
        """React to one upcoming retry."""
        ...


class RetryStats:
    """
    Process-wide retry counters (plain ints, read them for metrics).

    Attributes:
        retries: Retries performed (sleeps taken).
        gave_up: Calls that failed after exhausting attempts or time.
        denied: Retries the retry budget refused.
    """

    __slots__ = ("denied", "gave_up", "retries")

    def __init__(self) -> None:
        self.retries = self.gave_up = self.denied = 0


retry_stats: Final = RetryStats()


class _Testing:
    """The switch :func:`perfkit.testing.retries_without_sleep` flips."""

    __slots__ = ("attempts", "enabled")

    def __init__(self) -> None:
        self.enabled = False
        self.attempts: int | None = None


TESTING: Final = _Testing()


def backoff_delay(
    attempt: int, *, initial: float, maximum: float, rng: Callable[[], float] = random.random
) -> float:
    """
    Full-jitter exponential backoff: uniform in ``[0, min(maximum, initial * 2**(attempt-1))]``.

    *attempt* is the attempt that just failed, from 1.

    .. versionadded:: 0.1.0
    """
    ceiling = min(maximum, initial * 2.0 ** min(attempt - 1, 64))
    return ceiling * rng()


@dataclass(frozen=True, slots=True)
class _Policy:
    attempts: int
    timeout: float | None
    wait_initial: float
    wait_max: float
    on: Predicate
    budget: RetryBudget | None
    hooks: tuple[RetryHook, ...]
    clock: Clock


class _Run:
    """One call's retry loop state, for tenacity's stop/wait/before_sleep hooks."""

    __slots__ = ("deadline", "name", "policy", "started", "waits")

    def __init__(self, policy: _Policy, name: str, started: float) -> None:
        self.policy = policy
        self.name = name
        self.started = started
        self.deadline = None if policy.timeout is None else started + policy.timeout
        self.waits: dict[int, float] = {}

    def attempts(self) -> int:
        if TESTING.enabled and TESTING.attempts is not None:
            return min(self.policy.attempts, TESTING.attempts)
        return self.policy.attempts

    def wait_for(self, attempt: int) -> float:
        if attempt not in self.waits:
            delay = backoff_delay(
                attempt, initial=self.policy.wait_initial, maximum=self.policy.wait_max
            )
            if self.deadline is not None:
                delay = min(delay, max(0.0, self.deadline - self.policy.clock.monotonic()))
            self.waits[attempt] = 0.0 if TESTING.enabled else delay
        return self.waits[attempt]

    def stop(self, state: _t.RetryCallState) -> bool:
        attempt = state.attempt_number
        policy = self.policy
        if policy.budget is not None:
            policy.budget.record_failure()
        if attempt >= self.attempts():
            return self._give_up()
        if self.deadline is not None:
            # Never sleep past the deadline, and never start an attempt after it.
            remaining = self.deadline - policy.clock.monotonic()
            if remaining <= 0 or self.wait_for(attempt) >= remaining:
                return self._give_up()
        if policy.budget is not None and not policy.budget.allow_retry():
            retry_stats.denied += 1
            return self._give_up()
        return False

    def _give_up(self) -> bool:
        retry_stats.gave_up += 1
        return True

    def wait(self, state: _t.RetryCallState) -> float:
        return self.wait_for(state.attempt_number)

    def before_sleep(self, state: _t.RetryCallState) -> None:
        retry_stats.retries += 1
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        assert error is not None
        details = RetryDetails(
            name=self.name,
            attempt=state.attempt_number,
            exception=error,
            wait=self.wait_for(state.attempt_number),
            elapsed=self.policy.clock.monotonic() - self.started,
        )
        if log.isEnabledFor(logging.INFO):
            log.info(
                "retrying %s in %.3f s after attempt %d failed: %r",
                details.name,
                details.wait,
                details.attempt,
                details.exception,
            )
        for hook in self.policy.hooks:
            hook(details)


@overload
def retry_with_backoff(
    fn: Callable[P, Coroutine[Any, Any, R]], /
) -> Callable[P, Coroutine[Any, Any, R]]: ...
@overload
def retry_with_backoff(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def retry_with_backoff(
    fn: None = None,
    /,
    *,
    attempts: int = 5,
    timeout: float | None = 10.0,
    wait_initial: float = 0.05,
    wait_max: float = 1.0,
    on: Predicate | type[BaseException] | tuple[type[BaseException], ...] = is_transient,
    budget: RetryBudget | None = None,
    hooks: Sequence[RetryHook] = (),
    clock: Clock = SYSTEM_CLOCK,
) -> _Decorator: ...
def retry_with_backoff(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    attempts: int = 5,
    timeout: float | None = 10.0,
    wait_initial: float = 0.05,
    wait_max: float = 1.0,
    on: Predicate | type[BaseException] | tuple[type[BaseException], ...] = is_transient,
    budget: RetryBudget | None = None,
    hooks: Sequence[RetryHook] = (),
    clock: Clock = SYSTEM_CLOCK,
) -> Any:
    """
    Retry a sync or async function on transient failures, with jittered exponential backoff.

    A call that succeeds costs one extra function frame: the function is
    called directly, and tenacity is set up only after a failure that *on*
    says is worth retrying.

    Args:
        attempts: Total attempts, the first call included.
        timeout: Seconds from the first attempt after which no sleep extends
            and no attempt starts (``None``: attempts alone limit it). A
            running attempt is never interrupted.
        wait_initial: Upper bound of the first wait; doubled each attempt.
        wait_max: Cap of the upper bound (full jitter: each wait is uniform
            between 0 and the bound).
        on: Which exceptions to retry: a predicate, an exception type or a
            tuple of them (default: :func:`perfkit.is_transient`).
        budget: A :class:`RetryBudget` shared by callers, so a failing
            dependency is not hammered by everyone's retries at once.
        hooks: Called with :class:`RetryDetails` before each wait.
        clock: Monotonic clock and sleeps (a fake one in tests).

    Example::

        @retry_with_backoff(attempts=3, timeout=2.0)
        def load_user(user_id: int) -> User: ...

    .. versionadded:: 0.1.0
    """
    if attempts < 1:
        msg = f"attempts must be at least 1, not {attempts}"
        raise ValueError(msg)
    if timeout is not None and timeout <= 0:
        msg = f"timeout must be positive or None, not {timeout}"
        raise ValueError(msg)
    if wait_initial < 0 or wait_max < 0:
        msg = "wait_initial and wait_max must not be negative"
        raise ValueError(msg)
    predicate: Predicate = on if not isinstance(on, type | tuple) else _instance_of(on)
    policy = _Policy(
        attempts, timeout, wait_initial, wait_max, predicate, budget, tuple(hooks), clock
    )
    decorator = _Decorator(policy)
    return decorator if fn is None else decorator(fn)


def _instance_of(types: type[BaseException] | tuple[type[BaseException], ...]) -> Predicate:
    def predicate(exc: BaseException) -> bool:
        return isinstance(exc, types)

    return predicate


class _Decorator:
    __slots__ = ("_policy",)

    def __init__(self, policy: _Policy) -> None:
        self._policy = policy

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        policy = self._policy
        name = getattr(fn, "__qualname__", repr(fn))
        on = policy.on
        budget = policy.budget
        clock = policy.clock

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                started = clock.monotonic()
                try:
                    result = await fn(*args, **kwargs)
                except Exception as exc:
                    if not on(exc):
                        raise
                    first = exc
                else:
                    if budget is not None:
                        budget.record_success()
                    return result
                return await _retry_async(fn, args, kwargs, first, _Run(policy, name, started))

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = clock.monotonic()
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if not on(exc):
                    raise
                first = exc
            else:
                if budget is not None:
                    budget.record_success()
                return result
            return _retry_sync(fn, args, kwargs, first, _Run(policy, name, started))

        return wrapper


def _retrying_kwargs(run: _Run) -> dict[str, Any]:
    return {
        "stop": run.stop,
        "wait": run.wait,
        "retry": _t.retry_if_exception(run.policy.on),
        "before_sleep": run.before_sleep,
        "reraise": True,
    }


def _retry_sync(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    first: BaseException,
    run: _Run,
) -> Any:
    pending = [first]

    def attempt() -> Any:
        if pending:
            raise pending.pop()  # attempt 1 already ran and failed
        return fn(*args, **kwargs)

    clock = run.policy.clock
    retrying = _t.Retrying(sleep=clock.sleep, **_retrying_kwargs(run))
    result = retrying(attempt)
    if run.policy.budget is not None:
        run.policy.budget.record_success()
    return result


async def _retry_async(
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    first: BaseException,
    run: _Run,
) -> Any:
    pending = [first]

    async def attempt() -> Any:
        if pending:
            raise pending.pop()
        return await fn(*args, **kwargs)

    clock = run.policy.clock
    retrying = _t.AsyncRetrying(sleep=clock.asleep, **_retrying_kwargs(run))
    result: Any = await retrying(attempt)
    if run.policy.budget is not None:
        run.policy.budget.record_success()
    return result
