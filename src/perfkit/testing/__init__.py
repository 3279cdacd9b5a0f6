"""
Helpers for testing code that uses perfkit: a clock you move by hand,
retries that do not sleep, a guard on how many queries a block runs (against
N+1 queries), and the cache backend contract as a pytest suite.

:class:`BackendContract` needs pytest and is imported on first use, so
``perfkit.testing`` itself does not.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from perfkit.resilience._retry import TESTING

from ._queries import QueryLog, assert_max_queries, count_queries

if TYPE_CHECKING:
    from ._backend_contract import BackendContract

__all__ = [
    "BackendContract",
    "FakeClock",
    "QueryLog",
    "assert_max_queries",
    "count_queries",
    "retries_without_sleep",
    "set_retry_testing",
]


def __getattr__(name: str) -> Any:
    if name == "BackendContract":
        from ._backend_contract import BackendContract  # noqa: PLC0415 - needs pytest

        globals()[name] = BackendContract
        return BackendContract
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def set_retry_testing(enabled: bool, *, attempts: int | None = None) -> None:
    """
    Make every perfkit retry skip its sleeps and stop after *attempts* (process-wide).

    Prefer :func:`retries_without_sleep`, which restores the previous setting.
    """
    if attempts is not None and attempts < 1:
        msg = f"attempts must be at least 1, not {attempts}"
        raise ValueError(msg)
    TESTING.enabled = enabled
    TESTING.attempts = attempts if enabled else None


@contextmanager
def retries_without_sleep(*, attempts: int | None = 2) -> Iterator[None]:
    """
    Within the block, retries do not sleep and stop after *attempts* attempts.

    Example::

        with retries_without_sleep(attempts=2):
            assert flaky_call() == ...

    .. versionadded:: 0.1.0
    """
    previous = (TESTING.enabled, TESTING.attempts)
    set_retry_testing(True, attempts=attempts)
    try:
        yield
    finally:
        TESTING.enabled, TESTING.attempts = previous


class FakeClock:
    """
    A monotonic clock that only moves when told to; sleeping moves it.

    Pass it as ``clock=`` to perfkit objects to test TTLs and timeouts without
    waiting.

    Example::

        clock = FakeClock()
        cache = Cache(MemoryBackend(clock=clock), clock=clock, ttl=10)
        clock.advance(11)  # every entry has expired

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_lock", "_now")

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        """The current fake time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by *seconds* (never back)."""
        if seconds < 0:
            msg = f"a monotonic clock cannot go back ({seconds} s)"
            raise ValueError(msg)
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        """Advance instead of blocking."""
        self.advance(max(0.0, seconds))

    async def asleep(self, seconds: float) -> None:
        """Advance instead of suspending."""
        self.advance(max(0.0, seconds))
