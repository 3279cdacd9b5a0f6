"""
A logging handler that writes lines in batches: the request log at a few hundred bytes
per request costs a ``write()`` and a flush per line with :class:`logging.StreamHandler`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from typing import IO, Final

__all__ = ["BufferedStreamHandler"]

DEFAULT_FLUSH_INTERVAL: Final = 0.2
DEFAULT_MAX_BYTES: Final = 64 * 1024
_HANDLERS: Final[weakref.WeakSet[BufferedStreamHandler]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The flusher thread did not survive the fork, and the waiting lines are the parent's
    # to write: a forked worker (gunicorn --preload) starts with an empty buffer and a new thread.
    for handler in list(_HANDLERS):
        handler._lines.clear()
        handler._size = 0
        handler._flusher = None
        handler._writing = threading.Lock()
        handler._flusher_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class BufferedStreamHandler(logging.Handler):
    """
    Write log lines to *stream* in batches: when *max_bytes* are waiting, every
    *flush_interval* seconds (a daemon thread), on :meth:`flush` and on close.

    Made for a per-request log: :class:`logging.StreamHandler` writes and
    flushes once per line, which costs a request about 8 µs here; this handler
    appends to a list and costs ~1 µs (docs/benchmarks.md). Records at WARNING
    and above are written at once, with what waits before them, so an error
    is never stuck in the buffer. ``logging.shutdown()`` (run at interpreter
    exit) flushes what is left; lines of the last interval are lost only if
    the process is killed outright (SIGKILL, a segfault).

    Without a formatter the line is the record's message, unformatted (as the
    timing middleware's JSON lines need); with one, ``format(record)``. When
    it is the only handler of ``perfkit.request`` (no formatter, no filters,
    ``propagate`` off), :class:`~perfkit.TimingMiddleware` hands it each line
    without making a log record at all: ~0.6 µs a request instead of ~4.

    Args:
        stream: Where lines go (default: ``sys.stderr`` at each write, so a
            test's capture works).
        flush_interval: Seconds a line may wait at most.
        max_bytes: Characters that trigger a write before the interval ends.

    Example::

        request_log = logging.getLogger("perfkit.request")
        request_log.addHandler(BufferedStreamHandler())
        request_log.setLevel(logging.INFO)

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if not flush_interval > 0:
            msg = f"flush_interval must be positive, not {flush_interval!r}"
            raise ValueError(msg)
        if max_bytes < 1:
            msg = f"max_bytes must be at least 1, not {max_bytes!r}"
            raise ValueError(msg)
        super().__init__()
        self.stream = stream
        self.flush_interval = flush_interval
        self.max_bytes = max_bytes
        self._lines: list[str] = []
        self._size = 0
        self._writing = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._flusher_lock = threading.Lock()
        _HANDLERS.add(self)

    def write_line(self, line: str) -> None:
        """
        Queue one INFO line, no :class:`~logging.LogRecord` needed (the timing middleware's
        fast path: making the record is most of what logging a line costs).
        """
        self._lines.append(line + "\n")
        self._size += len(line) + 1  # approximate under threads: it only triggers a write
        if self._flusher is None:
            self._start()
        if self._size >= self.max_bytes:
            self.flush()

    def takes_lines_from(self, logger: logging.Logger) -> bool:
        """Whether INFO lines of *logger* may skip the record and go to :meth:`write_line`."""
        return (
            self.level <= logging.INFO
            and self.formatter is None
            and not self.filters
            and not logger.filters
            and not logger.propagate
            and len(logger.handlers) == 1
            and logger.handlers[0] is self
        )

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock per record: list.append is atomic, and flush() takes what is
        # there with a copy and a slice delete, both atomic too, so no line is lost.
        if not self.filter(record):
            return False
        try:
            line = record.getMessage() if self.formatter is None else self.format(record)
        except Exception:
            self.handleError(record)
            return False
        self._lines.append(line + "\n")
        self._size += len(line) + 1  # approximate under threads: it only triggers a write
        if self._flusher is None:
            self._start()
        if record.levelno >= logging.WARNING or self._size >= self.max_bytes:
            self.flush()
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def flush(self) -> None:
        """Write every waiting line now, in one ``write()``."""
        with self._writing:
            taken = self._lines[:]
            del self._lines[: len(taken)]
            self._size = 0
            if not taken:
                return
            stream = self.stream if self.stream is not None else sys.stderr
            try:
                stream.write("".join(taken))
                stream.flush()
            except Exception:
                # A broken stream must not break the app; report it as logging does.
                self.handleError(logging.makeLogRecord({"msg": "buffered log write failed"}))

    def close(self) -> None:
        """Stop the flusher thread and write what is left."""
        self._stop.set()
        flusher = self._flusher
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(timeout=max(1.0, 2 * self.flush_interval))
        self.flush()
        super().close()

    def _start(self) -> None:
        with self._flusher_lock:
            if self._flusher is None and not self._stop.is_set():
                self._flusher = threading.Thread(
                    target=self._run, name="perfkit-log-flusher", daemon=True
                )
                self._flusher.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush()
