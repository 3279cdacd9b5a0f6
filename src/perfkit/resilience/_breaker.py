"""
:class:`CircuitBreaker`: pybreaker's model, without a lock around the protected call.

It keeps pybreaker's state names and listener interface (pybreaker listeners
work unchanged) but not its code: pybreaker holds one lock around every
protected call and has no asyncio support.
"""

from __future__ import annotations

import collections
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, cast, overload

from perfkit._clock import SYSTEM_CLOCK, Clock
from perfkit._context import CURRENT, REGISTRY
from perfkit.errors import CircuitOpenError

from ._breaker_storage import (
    STATE_CLOSED,
    STATE_HALF_OPEN,
    STATE_OPEN,
    BreakerStorage,
    MemoryBreakerStorage,
    StateView,
)

if TYPE_CHECKING:
    # Only for its listener interface: importing pybreaker loads redis-py and,
    # through it, the OpenTelemetry SDK (~110 ms), which `import perfkit` must not.
    from pybreaker import CircuitBreakerListener

__all__ = ["BreakerStats", "CircuitBreaker"]

log = logging.getLogger("perfkit.breaker")

P = ParamSpec("P")
R = TypeVar("R")

_OK: Final = 0
_FAILED: Final = 1
_SLOW: Final = 2  # added to the above


class _State:
    """What pybreaker hands its listeners as old/new state: something with a ``name``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """
    A snapshot of a breaker's counters.

    Attributes:
        state: ``"closed"``, ``"open"`` or ``"half-open"``.
        calls: Calls let through.
        failures: Calls that failed (excluded exceptions do not count).
        rejections: Calls refused while open (or with every trial slot taken).
        opened: Times the breaker opened.

    .. versionadded:: 0.1.0
    """

    state: str
    calls: int
    failures: int
    rejections: int
    opened: int


class CircuitBreaker:
    """
    Fail fast while a dependency is down, and let a few trial calls find out when it is back.

    Calls run **without a lock** around them: concurrent calls through one
    breaker run in parallel; only the bookkeeping after a failure and the
    state transitions synchronise. A closed breaker's successful call costs
    an attribute read and a counter update.

    The breaker opens when any configured condition holds:

    * *fail_max* consecutive failures (pybreaker's rule); ``None`` to disable;
    * a failure rate of at least *failure_rate* over the last *window* calls,
      or over the last *window_seconds* if given, once *min_calls* are in it;
    * a rate of calls slower than *slow_call_duration* of at least
      *slow_call_rate*, over the same window.

    While open it raises :class:`~perfkit.errors.CircuitOpenError` (with
    ``retry_after``) or returns *fallback*'s answer. After *reset_timeout* it
    half-opens and lets up to *half_open_max_calls* trial calls through;
    *success_threshold* successes close it, a failure opens it again.

    Args:
        name: Names the breaker in errors, logs, metrics and shared storage.
        exclude: Exception types, or predicates, that are not failures
            (they propagate and count as successes, like pybreaker's).
        fallback: ``fallback(exc, *args, **kwargs)`` answers instead of
            raising — on rejection (``exc`` is the CircuitOpenError) and on
            counted failures. Must be sync for sync calls, async for async ones.
        listeners: pybreaker-style listeners (``before_call``, ``success``,
            ``failure``, ``state_change``), e.g. for metrics and logs; a
            listener may also define ``rejected(breaker, error)``.
        storage: Where the state lives: :class:`MemoryBreakerStorage`
            (default) or :class:`RedisBreakerStorage` to share it.
        refresh: With shared storage, how often (seconds) a closed breaker
            re-reads the shared state.
        clock: Monotonic clock (a fake one in tests).

    Example::

        breaker = CircuitBreaker(name="bill-text", fail_max=5, reset_timeout=30)

        @breaker
        def fetch_text(bill_id: int) -> str: ...

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        *,
        name: str,
        fail_max: int | None = 5,
        reset_timeout: float = 30.0,
        failure_rate: float | None = None,
        window: int = 100,
        window_seconds: float | None = None,
        min_calls: int = 10,
        slow_call_duration: float | None = None,
        slow_call_rate: float = 1.0,
        half_open_max_calls: int = 1,
        success_threshold: int = 1,
        exclude: Iterable[type[BaseException] | Callable[[BaseException], bool]] = (),
        fallback: Callable[..., Any] | None = None,
        listeners: Sequence[CircuitBreakerListener] = (),
        storage: BreakerStorage | None = None,
        refresh: float = 0.05,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if fail_max is not None and fail_max < 1:
            msg = f"fail_max must be at least 1 or None, not {fail_max}"
            raise ValueError(msg)
        for label, rate in (("failure_rate", failure_rate), ("slow_call_rate", slow_call_rate)):
            if rate is not None and not 0 < rate <= 1:
                msg = f"{label} must be in (0, 1], not {rate}"
                raise ValueError(msg)
        if reset_timeout < 0 or window < 1 or min_calls < 1 or half_open_max_calls < 1:
            msg = "reset_timeout, window, min_calls and half_open_max_calls must be positive"
            raise ValueError(msg)
        self.name = name
        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        self.failure_rate = failure_rate
        self.window_seconds = window_seconds
        self.min_calls = min_calls
        self.slow_call_duration = slow_call_duration
        self.slow_call_rate = slow_call_rate
        self.half_open_max_calls = half_open_max_calls
        self.success_threshold = success_threshold
        self.fallback = fallback
        self.listeners = list(listeners)
        self.clock = clock
        self._storage = storage if storage is not None else MemoryBreakerStorage(clock=clock)
        self._refresh = refresh if self._storage.shared else None
        self._excluded_types = tuple(e for e in exclude if isinstance(e, type))
        self._excluded_checks = tuple(e for e in exclude if not isinstance(e, type))
        self._lock = threading.Lock()
        self._windowed = failure_rate is not None or slow_call_duration is not None
        # (when, outcome) of recent calls; deque.append is atomic, so successes need no lock.
        self._window: collections.deque[tuple[float, int]] = collections.deque(
            maxlen=window if window_seconds is None else max(window, 10_000)
        )
        self._consecutive = 0
        self._trial_successes = 0
        self.calls = self.failures = self.rejections = self.opened = 0
        view = self._storage.read(reset_timeout)
        self._view = view
        self._closed = view.state == STATE_CLOSED
        self._fresh_until = self._next_refresh()
        REGISTRY.breakers.add(self)

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self.state!r})"

    # -- state ---------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (pybreaker's names), as stored."""
        return self._sync(self._storage.read(self.reset_timeout)).state

    @property
    def stats(self) -> BreakerStats:
        """The counters as a :class:`BreakerStats` snapshot."""
        return BreakerStats(self.state, self.calls, self.failures, self.rejections, self.opened)

    def open(self) -> None:
        """Open the breaker now (manual override), for every process sharing it."""
        self._sync(self._storage.force(STATE_OPEN))

    def close(self) -> None:
        """Close the breaker now and forget recent failures."""
        with self._lock:
            self._window.clear()
            self._consecutive = 0
        self._sync(self._storage.force(STATE_CLOSED))

    def _next_refresh(self) -> float | None:
        return None if self._refresh is None else self.clock.monotonic() + self._refresh

    def _sync(self, view: StateView) -> StateView:
        old = self._view
        self._view = view
        self._closed = view.state == STATE_CLOSED
        self._fresh_until = self._next_refresh()
        if view.state != old.state:
            if view.state == STATE_OPEN:
                self.opened += 1
            if view.state == STATE_HALF_OPEN:
                self._trial_successes = 0
            if view.state == STATE_CLOSED:
                with self._lock:
                    self._window.clear()
                    self._consecutive = 0
            log.warning("circuit %r: %s -> %s", self.name, old.state, view.state)
            for listener in self.listeners:
                listener.state_change(self, _State(old.state), _State(view.state))  # type: ignore[arg-type]
        return view

    # -- admission -------------------------------------------------------------------

    def _admit(self) -> bool:
        """True for a trial call (half-open); raises CircuitOpenError when refused."""
        if self._closed:
            fresh = self._fresh_until
            if fresh is None or self.clock.monotonic() < fresh:
                return False
            if self._sync(self._storage.read(self.reset_timeout)).state == STATE_CLOSED:
                return False
        allowed, view = self._storage.acquire_trial(self.half_open_max_calls, self.reset_timeout)
        self._sync(view)
        if not allowed:
            self.rejections += 1
            timing = CURRENT.get()
            if timing is not None:
                timing.breaker_rejections += 1
            refused = CircuitOpenError(self.name, view.retry_after)
            for listener in self.listeners:
                rejected = getattr(listener, "rejected", None)  # perfkit's addition
                if rejected is not None:
                    rejected(self, refused)
            raise refused
        return view.state == STATE_HALF_OPEN

    # -- outcomes --------------------------------------------------------------------

    def _excluded(self, exc: BaseException) -> bool:
        return isinstance(exc, self._excluded_types) or any(
            check(exc) for check in self._excluded_checks
        )

    def _succeeded(self, trial: bool, started: float) -> None:
        slow = self._is_slow(started)
        if trial:
            self._trial_done(failed=slow)
            return
        if self._windowed:
            self._window.append((started, _SLOW if slow else _OK))
            if slow:
                self._evaluate()
        if self._consecutive:
            self._consecutive = 0

    def _failed(self, exc: BaseException, trial: bool, started: float) -> None:
        self.failures += 1
        for listener in self.listeners:
            listener.failure(self, exc)  # type: ignore[arg-type]
        if trial:
            self._trial_done(failed=True)
            return
        slow = self._is_slow(started)
        with self._lock:
            self._consecutive += 1
            if self._windowed:
                self._window.append((started, _FAILED + (_SLOW if slow else 0)))
        self._evaluate()

    def _is_slow(self, started: float) -> bool:
        limit = self.slow_call_duration
        return limit is not None and self.clock.monotonic() - started >= limit

    def _trial_done(self, *, failed: bool) -> None:
        try:
            generation = self._view.generation
            if failed:
                self._sync(self._storage.open(generation))
                return
            with self._lock:
                self._trial_successes += 1
                done = self._trial_successes >= self.success_threshold
            if done:
                self._sync(self._storage.close(generation))
        finally:
            self._storage.release_trial()

    def _evaluate(self) -> None:
        """Open the breaker if a trip condition holds."""
        with self._lock:
            trip = self.fail_max is not None and self._consecutive >= self.fail_max
            if not trip and self._windowed:
                trip = self._rates_exceeded()
        if trip and self._closed:
            self._sync(self._storage.open(self._view.generation))

    def _rates_exceeded(self) -> bool:
        window = self._window
        if self.window_seconds is not None:
            horizon = self.clock.monotonic() - self.window_seconds
            while window and window[0][0] < horizon:
                window.popleft()
        total = len(window)
        if total < self.min_calls:
            return False
        failed = sum(1 for _, outcome in window if outcome & _FAILED)
        slow = sum(1 for _, outcome in window if outcome & _SLOW)
        if self.failure_rate is not None and failed / total >= self.failure_rate:
            return True
        return self.slow_call_duration is not None and slow / total >= self.slow_call_rate

    # -- calling ---------------------------------------------------------------------

    def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """
        Call *fn* through the breaker.

        Raises:
            CircuitOpenError: the breaker is open (and there is no *fallback*).
        """
        try:
            trial = self._admit()
        except CircuitOpenError as refused:
            if self.fallback is None:
                raise
            return cast("R", self.fallback(refused, *args, **kwargs))
        self.calls += 1
        for listener in self.listeners:
            listener.before_call(self, fn, *args, **kwargs)  # type: ignore[arg-type]
        started = self.clock.monotonic()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            if self._excluded(exc):
                self._succeeded(trial, started)
                raise
            self._failed(exc, trial, started)
            if self.fallback is None or not isinstance(exc, Exception):
                raise
            return cast("R", self.fallback(exc, *args, **kwargs))
        self._succeeded(trial, started)
        if self.listeners:
            for listener in self.listeners:
                listener.success(self)  # type: ignore[arg-type]
        return result

    async def acall(
        self, fn: Callable[P, Coroutine[Any, Any, R]], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """
        Await *fn* through the breaker (the asyncio twin of :meth:`call`).
        """
        try:
            trial = self._admit()
        except CircuitOpenError as refused:
            if self.fallback is None:
                raise
            return cast("R", await self.fallback(refused, *args, **kwargs))
        self.calls += 1
        for listener in self.listeners:
            listener.before_call(self, fn, *args, **kwargs)  # type: ignore[arg-type]
        started = self.clock.monotonic()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            if self._excluded(exc):
                self._succeeded(trial, started)
                raise
            self._failed(exc, trial, started)
            if self.fallback is None or not isinstance(exc, Exception):
                raise
            return cast("R", await self.fallback(exc, *args, **kwargs))
        self._succeeded(trial, started)
        for listener in self.listeners:
            listener.success(self)  # type: ignore[arg-type]
        return result

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Use the breaker as a decorator on a sync or async function."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                return await self.acall(fn, *args, **kwargs)

            return guarded_async

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            return self.call(fn, *args, **kwargs)

        return guarded
