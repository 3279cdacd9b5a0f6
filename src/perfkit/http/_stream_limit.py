"""
A bound on streamed responses per worker: how many at once, and how long one send may wait.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Final

from perfkit.errors import Overloaded

__all__ = ["DEFAULT_STREAM_LIMIT", "StreamLimit"]

log = logging.getLogger("perfkit.http")


class StreamLimit:
    """
    How many streamed responses (exports) one worker sends at once, and how long a client may
    leave a chunk unread.

    A streamed export serializes rows until the socket's buffers are full, then waits for the
    client to read. Without a bound, 200 clients that open an export and never read make the
    worker serialize 200 exports at once, and every other request waits for the CPU (3.4 to
    4.0 s for 16 s and more, measured on the example API). With one, a request beyond
    *concurrent* is refused at once with 503 ``overloaded`` and ``Retry-After``
    (:class:`~perfkit.errors.Overloaded`), and a send that waits more than *send_timeout* for
    the client ends the response (the connection is closed) and frees its slot.

    One object per worker, shared by the routes it bounds (the count is per process).

    Args:
        concurrent: Streams at once in this worker.
        send_timeout: Seconds one chunk may wait for the client to read.
        retry_after: The ``Retry-After`` of a refusal, in seconds.

    Example::

        EXPORTS = StreamLimit(4, send_timeout=30)

        @app.get("/orders/export")
        def export_orders() -> ExportResponse:
            return ExportResponse(keyset_batches(engine, ORDERS), limit=EXPORTS)

    .. versionadded:: 0.2.0
    """

    __slots__ = ("_active", "_lock", "concurrent", "retry_after", "send_timeout")

    def __init__(
        self, concurrent: int = 4, *, send_timeout: float = 30.0, retry_after: float = 1.0
    ) -> None:
        if isinstance(concurrent, bool) or not isinstance(concurrent, int) or concurrent < 1:
            msg = f"concurrent must be a whole number of at least 1, not {concurrent!r}"
            raise ValueError(msg)
        if not send_timeout > 0:
            msg = f"send_timeout must be more than 0 s, not {send_timeout!r}"
            raise ValueError(msg)
        if retry_after < 0:
            msg = f"retry_after must not be negative, not {retry_after!r}"
            raise ValueError(msg)
        self.concurrent = concurrent
        self.send_timeout = float(send_timeout)
        self.retry_after = retry_after
        self._active = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> int:
        """Streams in progress now."""
        return self._active

    def acquire(self, what: str = "exports") -> None:
        """
        Take a slot, or raise :class:`~perfkit.errors.Overloaded` when none is free.
        """
        with self._lock:
            if self._active >= self.concurrent:
                raise Overloaded(what, self.retry_after)
            self._active += 1

    def release(self) -> None:
        """Give a slot back."""
        with self._lock:
            self._active -= 1

    def bounded(self, send: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        """*send*, each call given at most *send_timeout* seconds (then :class:`SendTimeout`)."""
        import anyio  # noqa: PLC0415 - the frameworks that stream bring it

        timeout = self.send_timeout

        async def send_within(message: Any) -> None:
            try:
                with anyio.fail_after(timeout):
                    await send(message)
            except TimeoutError:
                raise SendTimeout(timeout) from None

        return send_within


class SendTimeout(Exception):
    """A client left a chunk unread for longer than the limit's *send_timeout*."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"the client read nothing for {timeout:g} s")


DEFAULT_STREAM_LIMIT: Final = StreamLimit()
"""The limit :class:`perfkit.fastapi.ExportResponse` applies unless given another (or ``None``)."""
