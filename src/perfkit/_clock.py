"""
Time as perfkit sees it: injectable so tests can move it by hand.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


class Clock(Protocol):
    """
    A monotonic clock that can also sleep.
    """

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block for *seconds*."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the current task for *seconds*."""
        ...


class SystemClock:
    """
    The real clock: :func:`time.monotonic` and real sleeps.
    """

    __slots__ = ()

    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    async def asleep(self, seconds: float) -> None:
        import asyncio  # noqa: PLC0415 - loaded already when a coroutine runs; not at import

        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()
