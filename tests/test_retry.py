"""
perfkit.retry_with_backoff: the fast success path, backoff bounds, the deadline, budgets, hooks.

The clock is fake: sleeping advances it, nothing waits for real.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfkit import RetryBudget, retry_with_backoff
from perfkit.resilience import RetryDetails, backoff_delay, retry_stats
from perfkit.testing import FakeClock, retries_without_sleep


class Flaky(Exception):
    """A failure the tests declare transient."""


class SleepLog(FakeClock):
    """A fake clock that also remembers each sleep and when each attempt started."""

    def __init__(self) -> None:
        super().__init__(start=0.0)
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


def failing(times: int, clock: SleepLog, starts: list[float]) -> Any:
    calls = {"n": 0}

    def fn() -> str:
        starts.append(clock.monotonic())
        calls["n"] += 1
        clock.advance(0.01)  # each attempt takes 10 ms
        if calls["n"] <= times:
            raise Flaky(calls["n"])
        return "ok"

    return fn


def test_success_calls_the_function_once_and_never_sleeps() -> None:
    """A call that works is a direct call: no retry machinery, no sleep."""
    clock = SleepLog()
    starts: list[float] = []
    fn = retry_with_backoff(on=Flaky, clock=clock)(failing(0, clock, starts))

    assert fn() == "ok"
    assert (len(starts), clock.sleeps) == (1, [])


def test_transient_failures_are_retried_until_success() -> None:
    """Two failures then success: three attempts, two jittered waits within bounds."""
    clock = SleepLog()
    starts: list[float] = []
    fn = retry_with_backoff(on=Flaky, wait_initial=0.1, wait_max=1.0, clock=clock)(
        failing(2, clock, starts)
    )
    before = retry_stats.retries

    assert fn() == "ok"
    assert len(starts) == 3
    assert 0 <= clock.sleeps[0] <= 0.1
    assert 0 <= clock.sleeps[1] <= 0.2
    assert retry_stats.retries - before == 2


def test_gives_up_after_attempts_and_reraises_the_last_error() -> None:
    """After the last attempt the original exception surfaces, not a wrapper."""
    clock = SleepLog()
    starts: list[float] = []
    fn = retry_with_backoff(on=Flaky, attempts=3, clock=clock)(failing(10, clock, starts))

    with pytest.raises(Flaky) as info:
        fn()
    assert info.value.args == (3,)
    assert len(starts) == 3


def test_non_transient_errors_are_not_retried() -> None:
    """An error `on` rejects propagates from the first attempt."""
    clock = SleepLog()
    calls: list[int] = []

    @retry_with_backoff(clock=clock)  # default: is_transient
    def broken() -> None:
        calls.append(1)
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        broken()
    assert (calls, clock.sleeps) == ([1], [])


@given(
    timeout=st.floats(0.05, 5.0),
    wait_initial=st.floats(0.001, 1.0),
    wait_max=st.floats(0.001, 3.0),
    attempts=st.integers(1, 12),
)
@settings(max_examples=300, deadline=None)
def test_the_deadline_is_never_overshot(
    timeout: float, wait_initial: float, wait_max: float, attempts: int
) -> None:
    """No sleep ends after the deadline and no attempt starts after it."""
    clock = SleepLog()
    starts: list[float] = []
    fn = retry_with_backoff(
        on=Flaky, attempts=attempts, timeout=timeout, wait_initial=wait_initial,
        wait_max=wait_max, clock=clock,
    )(failing(10_000, clock, starts))  # fmt: skip

    with pytest.raises(Flaky):
        fn()

    assert len(starts) <= attempts
    assert all(start <= timeout for start in starts)
    assert sum(clock.sleeps) <= timeout


@given(
    attempt=st.integers(1, 200),
    initial=st.floats(0.0, 10.0),
    maximum=st.floats(0.0, 60.0),
    draw=st.floats(0.0, 1.0, exclude_max=True),
)
def test_backoff_is_full_jitter_within_the_exponential_cap(
    attempt: int, initial: float, maximum: float, draw: float
) -> None:
    """Each wait lies in [0, min(maximum, initial * 2**(attempt-1))]."""
    delay = backoff_delay(attempt, initial=initial, maximum=maximum, rng=lambda: draw)

    assert 0.0 <= delay <= min(maximum, initial * 2.0 ** (attempt - 1))


def test_hooks_see_every_retry() -> None:
    """Hooks get the attempt, the error, the wait and the elapsed time."""
    clock = SleepLog()
    seen: list[RetryDetails] = []
    fn = retry_with_backoff(on=Flaky, hooks=[seen.append], clock=clock)(failing(2, clock, []))

    fn()

    assert [d.attempt for d in seen] == [1, 2]
    assert all(isinstance(d.exception, Flaky) for d in seen)
    assert [d.wait for d in seen] == clock.sleeps
    assert seen[1].elapsed > seen[0].elapsed


def test_budget_stops_retry_storms() -> None:
    """Once failures drain the bucket below half, retries are refused and counted."""
    clock = SleepLog()
    budget = RetryBudget(max_tokens=4, token_ratio=1)
    fn = retry_with_backoff(on=Flaky, attempts=10, budget=budget, clock=clock)(
        failing(10_000, clock, [])
    )

    with pytest.raises(Flaky):
        fn()  # 4 -> 3 -> 2 (no longer > 2): the third failure's retry is denied
    assert len(clock.sleeps) == 1
    assert budget.denied == 1
    budget.record_success()
    budget.record_success()
    assert budget.allow_retry()


def test_testing_switch_removes_sleeps_and_caps_attempts() -> None:
    """retries_without_sleep() makes retries instant and bounded, and resets on exit."""
    clock = SleepLog()
    starts: list[float] = []
    fn = retry_with_backoff(on=Flaky, attempts=10, clock=clock)(failing(10_000, clock, starts))

    with retries_without_sleep(attempts=2), pytest.raises(Flaky):
        fn()
    assert len(starts) == 2
    assert clock.sleeps == [0.0]
    with pytest.raises(Flaky):
        fn()
    assert len(starts) == 12


@pytest.mark.anyio
async def test_async_functions_are_retried_the_same_way() -> None:
    """Coroutine functions keep their signature and retry with the async sleep."""
    clock = SleepLog()
    calls: list[int] = []

    @retry_with_backoff(on=(Flaky, ConnectionError), clock=clock)
    async def fetch(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0)
        if len(calls) < 3:
            raise ConnectionError("reset")
        return x * 2

    assert await fetch(21) == 42
    assert len(calls) == 3
    assert len(clock.sleeps) == 2


def test_bare_decorator_and_signature() -> None:
    """@retry_with_backoff without parentheses works and keeps the name and doc."""

    @retry_with_backoff
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    assert add(2, 3) == 5
    assert (add.__name__, add.__doc__) == ("add", "Add.")


@pytest.mark.parametrize(
    "kwargs", [{"attempts": 0}, {"timeout": 0}, {"timeout": -1}, {"wait_initial": -0.1}]
)
def test_bad_options_are_refused(kwargs: dict[str, Any]) -> None:
    """Nonsense options fail when decorating, not on the first failure."""
    with pytest.raises(ValueError):
        retry_with_backoff(**kwargs)


def test_redis_budget_is_shared_between_processes(redis_url: str, redis_prefix: str) -> None:
    """Failures counted by one process's budget deny retries in another's."""
    import redis  # noqa: PLC0415

    from perfkit.resilience import RedisRetryBudget  # noqa: PLC0415

    client = redis.Redis.from_url(redis_url)
    name = f"{redis_prefix}-budget"
    first = RedisRetryBudget(client, name=name, max_tokens=4, token_ratio=1)
    second = RedisRetryBudget(client, name=name, max_tokens=4, token_ratio=1)
    try:
        first.record_failure()
        first.record_failure()
        assert not first.allow_retry()  # 4 - 2 = 2, not above half
        assert not second.allow_retry()  # the other process sees the same bucket
        second.record_success()
        assert second.allow_retry()  # 2 + 1 = 3
    finally:
        client.delete(f"perfkit:budget:{name}")
        client.close()
