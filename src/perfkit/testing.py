"""
Helpers for testing code that uses perfkit: a clock you move by hand.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import threading

__all__ = ["FakeClock"]


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
