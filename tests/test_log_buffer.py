"""
BufferedStreamHandler: request log lines written in batches, none lost or doubled.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from perfkit import TimingMiddleware
from perfkit.observability import BufferedStreamHandler


class Recording(io.StringIO):
    """A stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger(f"perfkit.test.buffer.{time.monotonic_ns()}")
    log.setLevel(logging.INFO)
    log.propagate = False
    yield log
    for handler in log.handlers[:]:
        log.removeHandler(handler)
        handler.close()


def _wait_for(predicate: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_lines_wait_and_are_written_together(logger: logging.Logger) -> None:
    """Lines are held until flush(), then written in order in one write."""
    stream = Recording()
    handler = BufferedStreamHandler(stream, flush_interval=60)
    logger.addHandler(handler)
    for i in range(5):
        logger.info("line %d", i)
    assert (stream.getvalue(), stream.writes) == ("", 0)
    handler.flush()
    assert stream.getvalue() == "".join(f"line {i}\n" for i in range(5))
    assert stream.writes == 1


def test_a_warning_is_written_at_once_with_what_waited(logger: logging.Logger) -> None:
    """An error never waits in the buffer, and the lines before it come first."""
    stream = Recording()
    logger.addHandler(BufferedStreamHandler(stream, flush_interval=60))
    logger.info("before")
    logger.warning("careful")
    assert stream.getvalue() == "before\ncareful\n"


def test_max_bytes_and_the_interval_trigger_writes(logger: logging.Logger) -> None:
    """A full buffer is written at once; a quiet one within the interval."""
    stream = Recording()
    logger.addHandler(BufferedStreamHandler(stream, flush_interval=0.05, max_bytes=20))
    logger.info("x" * 25)  # over max_bytes
    assert stream.getvalue() == "x" * 25 + "\n"
    logger.info("later")
    _wait_for(lambda: stream.getvalue().endswith("later\n"))


def test_close_writes_the_rest_and_stops_the_flusher(logger: logging.Logger) -> None:
    """close() (logging.shutdown at exit) leaves nothing behind."""
    stream = Recording()
    handler = BufferedStreamHandler(stream, flush_interval=60)
    logger.addHandler(handler)
    logger.info("last words")
    flusher = handler._flusher
    handler.close()
    assert stream.getvalue() == "last words\n"
    assert flusher is not None
    assert not flusher.is_alive()


def test_a_formatter_is_applied(logger: logging.Logger) -> None:
    """With a formatter, lines are formatted as StreamHandler would."""
    stream = Recording()
    handler = BufferedStreamHandler(stream, flush_interval=60)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.info("hello")
    handler.flush()
    assert stream.getvalue() == "INFO hello\n"


def test_many_threads_lose_and_double_nothing(logger: logging.Logger) -> None:
    """8 threads x 2,000 lines, flushed by size, by the interval and at the end: 16,000 once."""
    stream = Recording()
    handler = BufferedStreamHandler(stream, flush_interval=0.01, max_bytes=4096)
    logger.addHandler(handler)

    def write(worker: int) -> None:
        for i in range(2_000):
            if i % 2:
                logger.info("%d-%d", worker, i)
            else:
                handler.write_line(f"{worker}-{i}")

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert sorted(lines) == sorted(f"{w}-{i}" for w in range(8) for i in range(2_000))
    assert stream.writes > 1


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="flush_interval"):
        BufferedStreamHandler(flush_interval=0)
    with pytest.raises(ValueError, match="max_bytes"):
        BufferedStreamHandler(max_bytes=0)


def _child(handler: BufferedStreamHandler, queue: multiprocessing.Queue[list[str]]) -> None:
    queue.put(list(handler._lines))


def test_a_forked_child_does_not_write_its_parents_lines(logger: logging.Logger) -> None:
    """A worker forked with lines waiting starts empty: the parent writes them, once."""
    stream = Recording()
    handler = BufferedStreamHandler(stream, flush_interval=60)
    logger.addHandler(handler)
    logger.info("before the fork")
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[list[str]] = context.Queue()
    child = context.Process(target=_child, args=(handler, queue))
    child.start()
    seen_in_child = queue.get(timeout=10)
    child.join(timeout=10)
    handler.flush()
    assert seen_in_child == []
    assert stream.getvalue() == "before the fork\n"


@pytest.mark.anyio
async def test_the_timing_middleware_hands_lines_to_the_buffer() -> None:
    """As perfkit.request's only handler, the buffer gets each JSON line (no LogRecord)."""
    stream = Recording()
    handler = BufferedStreamHandler(stream, flush_interval=60)
    log = logging.getLogger("perfkit.test.request-log")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)
    made: list[int] = []

    class CountRecords(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            made.append(1)
            return True

    def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = TimingMiddleware(Starlette(routes=[Route("/hello", hello)]), logger=log, metrics=False)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/hello")
            handler.flush()
            (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
            assert (line["route"], line["status"]) == ("/hello", 200)
            handler.addFilter(CountRecords())  # a filter: the middleware must make records
            await client.get("/hello")
        handler.flush()
        assert len(stream.getvalue().splitlines()) == 2
        assert made == [1]
    finally:
        log.removeHandler(handler)
        handler.close()
