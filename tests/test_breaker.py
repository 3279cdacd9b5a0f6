"""
perfkit.CircuitBreaker: trips, trials, windows, fallbacks, listeners, parallel calls, shared state.

The clock is fake everywhere but in the parallelism test.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import redis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from perfkit import CircuitBreaker, CircuitOpenError
from perfkit.resilience import RedisBreakerStorage
from perfkit.testing import FakeClock


class Down(Exception):
    """The dependency failed."""


def ok() -> str:
    return "ok"


def down() -> str:
    raise Down("no")


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(Down):
            breaker.call(down)


def test_opens_after_fail_max_consecutive_failures_and_rejects_fast() -> None:
    """fail_max failures in a row open it; then calls are refused with retry_after."""
    clock = FakeClock()
    breaker = CircuitBreaker(name="svc", fail_max=3, reset_timeout=10, clock=clock)
    fail(breaker, 2)
    assert breaker.call(ok) == "ok"  # a success resets the streak
    fail(breaker, 3)
    clock.advance(4)

    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert breaker.state == "open"
    assert info.value.retry_after == pytest.approx(6)
    assert (breaker.stats.failures, breaker.stats.rejections, breaker.stats.opened) == (5, 1, 1)


def test_half_open_trial_success_closes_and_failure_reopens() -> None:
    """After reset_timeout one trial goes through: success closes, failure re-opens."""
    clock = FakeClock()
    breaker = CircuitBreaker(name="svc", fail_max=1, reset_timeout=5, clock=clock)
    fail(breaker, 1)
    clock.advance(5)
    fail(breaker, 1)  # the trial fails
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.advance(5)

    assert breaker.call(ok) == "ok"
    assert breaker.state == "closed"


def test_half_open_admits_only_the_allowed_number_of_trials() -> None:
    """While trials are in flight, further calls are refused."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        name="svc", fail_max=1, reset_timeout=1, half_open_max_calls=2, clock=clock
    )
    fail(breaker, 1)
    clock.advance(1)
    results: list[Any] = []

    def trial() -> str:
        if len(results) < 2:
            results.append("inside")
            try:
                breaker.call(trial)
            except CircuitOpenError as exc:
                results.append(exc)
        return "done"

    assert breaker.call(trial) == "done"
    assert results[:2] == ["inside", "inside"]
    assert isinstance(results[2], CircuitOpenError)


def test_success_threshold_needs_several_trial_successes() -> None:
    """With success_threshold=2 one good trial is not enough to close."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        name="svc", fail_max=1, reset_timeout=1, success_threshold=2, clock=clock
    )
    fail(breaker, 1)
    clock.advance(1)
    breaker.call(ok)
    assert breaker.state == "half-open"
    breaker.call(ok)
    assert breaker.state == "closed"


def test_failure_rate_over_a_count_window() -> None:
    """Half the last 10 calls failing (min 10 calls) opens it, even without a streak."""
    breaker = CircuitBreaker(
        name="svc", fail_max=None, failure_rate=0.5, window=10, min_calls=10, clock=FakeClock()
    )
    for _ in range(4):
        breaker.call(ok)
        fail(breaker, 1)
    assert breaker.state == "closed"  # 8 calls: below min_calls
    breaker.call(ok)
    fail(breaker, 1)
    assert breaker.state == "open"  # 5 of 10 failed


def test_failure_rate_over_a_time_window_forgets_old_calls() -> None:
    """Failures older than window_seconds no longer count."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        name="svc", fail_max=None, failure_rate=0.5, window_seconds=10, min_calls=4, clock=clock
    )
    fail(breaker, 3)
    clock.advance(11)
    for _ in range(3):
        breaker.call(ok)
    fail(breaker, 1)
    assert breaker.state == "closed"  # 1 of 4 in the window


def test_slow_call_rate_opens_it() -> None:
    """Calls slower than slow_call_duration count against it even when they succeed."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        name="svc", fail_max=None, slow_call_duration=1.0, slow_call_rate=0.5,
        window=4, min_calls=4, clock=clock,
    )  # fmt: skip

    def slow() -> str:
        clock.advance(2)
        return "late"

    breaker.call(ok)
    breaker.call(ok)
    breaker.call(slow)
    assert breaker.state == "closed"
    breaker.call(slow)
    assert breaker.state == "open"


def test_excluded_exceptions_are_not_failures() -> None:
    """Excluded errors propagate but never open the breaker."""
    breaker = CircuitBreaker(
        name="svc", fail_max=1, exclude=[KeyError, lambda e: "ignore" in str(e)], clock=FakeClock()
    )
    with pytest.raises(KeyError):
        breaker.call(lambda: {}["x"])
    with pytest.raises(ValueError, match="ignore"):
        breaker.call(lambda: (_ for _ in ()).throw(ValueError("ignore me")))

    assert breaker.state == "closed"


def test_fallback_answers_failures_and_rejections() -> None:
    """With a fallback, a failure and a refusal both return its answer."""
    seen: list[type[BaseException]] = []

    def fallback(exc: BaseException, bill_id: int) -> str:
        seen.append(type(exc))
        return f"cached text of {bill_id}"

    breaker = CircuitBreaker(name="svc", fail_max=1, fallback=fallback, clock=FakeClock())

    def fetch(bill_id: int) -> str:
        raise Down(bill_id)

    assert breaker.call(fetch, 7) == "cached text of 7"
    assert breaker.call(fetch, 8) == "cached text of 8"
    assert seen == [Down, CircuitOpenError]


def test_manual_open_and_close() -> None:
    """open() and close() override the state at once."""
    breaker = CircuitBreaker(name="svc", clock=FakeClock())
    breaker.open()
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    breaker.close()
    assert breaker.call(ok) == "ok"


def test_listeners_hear_calls_failures_rejections_and_transitions() -> None:
    """pybreaker-style listeners (plus rejected) see everything."""
    events: list[str] = []

    class Recorder:
        def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
            events.append("call")

        def success(self, cb: Any) -> None:
            events.append("success")

        def failure(self, cb: Any, exc: BaseException) -> None:
            events.append("failure")

        def state_change(self, cb: Any, old: Any, new: Any) -> None:
            events.append(f"{old.name}->{new.name}")

        def rejected(self, cb: Any, exc: CircuitOpenError) -> None:
            events.append("rejected")

    breaker = CircuitBreaker(name="svc", fail_max=1, listeners=[Recorder()], clock=FakeClock())
    breaker.call(ok)
    fail(breaker, 1)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)

    assert events == ["call", "success", "call", "failure", "closed->open", "rejected"]


def test_calls_run_in_parallel() -> None:
    """Eight threads are inside the protected call at the same time (no lock around it)."""
    breaker = CircuitBreaker(name="parallel")
    inside = threading.Barrier(8, timeout=5)

    def meet() -> bool:
        inside.wait()  # would time out if calls were serialised
        return True

    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(breaker.call(meet))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == [True] * 8


@pytest.mark.anyio
async def test_async_decorator() -> None:
    """The decorator guards coroutine functions too, with an async fallback."""
    clock = FakeClock()

    async def fallback(exc: BaseException, x: int) -> int:
        return -x

    breaker = CircuitBreaker(name="async", fail_max=2, fallback=fallback, clock=clock)

    @breaker
    async def flaky(x: int) -> int:
        await asyncio.sleep(0)
        if x < 0:
            raise Down(x)
        return x

    assert await flaky(3) == 3
    assert await flaky(-1) == 1  # failure -> fallback
    assert await flaky(-2) == 2  # trips
    assert await flaky(5) == -5  # refused -> fallback
    assert breaker.state == "open"


@pytest.mark.parametrize(
    "kwargs",
    [{"fail_max": 0}, {"failure_rate": 0}, {"failure_rate": 1.5}, {"window": 0},
     {"half_open_max_calls": 0}, {"reset_timeout": -1}],
)  # fmt: skip
def test_bad_options(kwargs: dict[str, Any]) -> None:
    """Nonsense options are refused at construction."""
    with pytest.raises(ValueError):
        CircuitBreaker(name="x", **kwargs)


# -- a state machine against a model -------------------------------------------------------


class BreakerMachine(RuleBasedStateMachine):
    """Random successes, failures and time; the breaker must match a small model."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.breaker = CircuitBreaker(name="sm", fail_max=3, reset_timeout=10, clock=self.clock)
        self.state = "closed"
        self.streak = 0
        self.opened_at = 0.0

    def _model_admits(self) -> bool:
        if self.state == "open" and self.clock.monotonic() >= self.opened_at + 10:
            self.state = "half-open"
        return self.state != "open"

    def _model_open(self) -> None:
        self.state, self.streak, self.opened_at = "open", 0, self.clock.monotonic()

    @rule()
    def success(self) -> None:
        if self._model_admits():
            assert self.breaker.call(ok) == "ok"
            self.state, self.streak = "closed", 0
        else:
            with pytest.raises(CircuitOpenError):
                self.breaker.call(ok)

    @rule()
    def failure(self) -> None:
        if self._model_admits():
            with pytest.raises(Down):
                self.breaker.call(down)
            if self.state == "half-open":
                self._model_open()
            else:
                self.streak += 1
                if self.streak >= 3:
                    self._model_open()
        else:
            with pytest.raises(CircuitOpenError):
                self.breaker.call(down)

    @rule(seconds=st.floats(0, 15))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: self.state != "open")
    @rule()
    def force_open(self) -> None:
        self.breaker.open()
        self._model_open()

    @rule()
    def force_close(self) -> None:
        self.breaker.close()
        self.state, self.streak = "closed", 0

    @invariant()
    def same_state(self) -> None:
        expected = self.state
        if expected == "open" and self.clock.monotonic() >= self.opened_at + 10:
            expected = "open"  # it half-opens on the next call, not by itself
        assert self.breaker.state == expected


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


# -- shared state in Redis -----------------------------------------------------------------


@pytest.fixture
def redis_client(redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url, socket_timeout=1)
    yield client
    client.close()


def test_shared_state_opens_every_process(redis_client: Any, redis_prefix: str) -> None:
    """A breaker tripped in one process refuses calls in another with the same name."""

    def make() -> CircuitBreaker:
        storage = RedisBreakerStorage(redis_client, name="payments", prefix=redis_prefix)
        return CircuitBreaker(name="payments", fail_max=2, storage=storage, refresh=0)

    first, second = make(), make()
    fail(first, 2)

    with pytest.raises(CircuitOpenError):
        second.call(ok)
    third = make()  # creating a breaker does not reset the shared state (pybreaker #24)
    assert third.state == "open"


def test_shared_breakers_with_other_names_do_not_collide(
    redis_client: Any, redis_prefix: str
) -> None:
    """Two names, two independent states (pybreaker #88)."""
    a = CircuitBreaker(
        name="a",
        fail_max=1,
        storage=RedisBreakerStorage(redis_client, name="a", prefix=redis_prefix),
    )
    b = CircuitBreaker(
        name="b",
        fail_max=1,
        storage=RedisBreakerStorage(redis_client, name="b", prefix=redis_prefix),
    )
    fail(a, 1)

    assert (a.state, b.state) == ("open", "closed")
    assert b.call(ok) == "ok"


def test_shared_half_open_hands_out_one_trial_across_processes(
    redis_client: Any, redis_prefix: str
) -> None:
    """After the reset timeout one process gets the trial slot; its success closes it for all."""

    def make() -> CircuitBreaker:
        storage = RedisBreakerStorage(redis_client, name="trial", prefix=redis_prefix)
        return CircuitBreaker(
            name="trial", fail_max=1, reset_timeout=0.05, storage=storage, refresh=0
        )

    first, second = make(), make()
    fail(first, 1)
    threading.Event().wait(0.08)  # the Redis server's clock decides; wait it out
    outcomes: list[Any] = []

    def trial() -> str:
        try:
            second.call(ok)
        except CircuitOpenError as exc:
            outcomes.append(exc)
        return "trial"

    assert first.call(trial) == "trial"
    assert len(outcomes) == 1
    assert second.state == "closed"


def test_pybreaker_listeners_and_state_names_work_unchanged() -> None:
    """A pybreaker.CircuitBreakerListener subclass plugs in; state names are pybreaker's."""
    import pybreaker  # noqa: PLC0415

    changes: list[tuple[str, str]] = []

    class Listener(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            changes.append((old_state.name, new_state.name))

    breaker = CircuitBreaker(name="compat", fail_max=1, listeners=[Listener()], clock=FakeClock())
    fail(breaker, 1)

    assert changes == [(pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN)]
    assert {pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN} == {
        "closed",
        "open",
        "half-open",
    }
