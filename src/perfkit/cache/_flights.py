"""
Single-flight: concurrent misses of one key share one load.

A flight belongs to the fill token it was started with. A miss that read a
newer token (an invalidation happened since) never joins an older flight, so
a read that began after an invalidation cannot be handed a value loaded
before it. Threads wait on an :class:`threading.Event`; asyncio tasks on a
future of their own event loop.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

# asyncio is imported where it is used: a task waiting means it is loaded already, and
# `import perfkit.cache` for threads alone does not pay for it.

__all__ = ["Abandoned", "Flight", "TaskFlights", "ThreadFlights"]


class Abandoned(Exception):
    """The leading task of a single-flight load was cancelled: lead instead."""


class Flight:
    """One in-progress load; waiters get its value or its error."""

    __slots__ = ("done", "error", "future", "token", "value")

    def __init__(self, token: int, future: asyncio.Future[Any] | None = None) -> None:
        self.token = token
        self.done = threading.Event()
        self.future = future
        self.value: Any = None
        self.error: BaseException | None = None

    def wait(self) -> Any:
        """Block until the leader is done (threads)."""
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value

    async def await_(self) -> Any:
        """Wait until the leader is done (tasks); :class:`Abandoned` if it was cancelled."""
        import asyncio  # noqa: PLC0415

        assert self.future is not None
        return await asyncio.shield(self.future)


class ThreadFlights:
    """The flights of one cached function, for threads."""

    __slots__ = ("_flights", "_lock")

    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}
        self._lock = threading.Lock()

    def claim(self, key: str, token: int) -> tuple[Flight, bool]:
        """The flight to wait for, or a new one to lead (``True``)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None and flight.token == token:
                return flight, False
            flight = self._flights[key] = Flight(token)
            return flight, True

    def finish(self, key: str, flight: Flight, value: Any, error: BaseException | None) -> None:
        """Hand the leader's outcome to the waiters and retire the flight."""
        flight.value, flight.error = value, error
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.done.set()


class TaskFlights:
    """The flights of one cached coroutine function, per event loop."""

    __slots__ = ("_flights",)

    def __init__(self) -> None:
        self._flights: dict[tuple[int, str], Flight] = {}

    def claim(self, key: str, token: int) -> tuple[Flight, bool]:
        """The flight to wait for, or a new one to lead (``True``)."""
        import asyncio  # noqa: PLC0415

        loop = asyncio.get_running_loop()
        slot = (id(loop), key)
        flight = self._flights.get(slot)
        if flight is not None and flight.token == token:
            return flight, False
        flight = self._flights[slot] = Flight(token, loop.create_future())
        return flight, True

    def finish(self, key: str, flight: Flight, value: Any, error: BaseException | None) -> None:
        """Resolve the leader's future and retire the flight."""
        import asyncio  # noqa: PLC0415

        future = flight.future
        assert future is not None
        if error is None:
            future.set_result(value)
        elif isinstance(error, asyncio.CancelledError):
            future.set_exception(Abandoned())
        else:
            future.set_exception(error)
        slot = (id(future.get_loop()), key)
        if self._flights.get(slot) is flight:
            del self._flights[slot]
        future.exception()  # retrieved, so nobody waiting is not an "unretrieved" error
