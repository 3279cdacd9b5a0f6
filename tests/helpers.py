"""
Small test helpers shared by several test modules.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """
    Collect the SQL statements *engine* sends, without transaction control.
    """
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def wait_until(condition: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll *condition* until it is true; fail after *timeout* seconds (a hang guard)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s")
        time.sleep(0.01)


def run_switching_often(threads: Iterable[threading.Thread]) -> None:
    """Start *threads* and join them, with the interpreter switching threads as often as it can."""
    started = list(threads)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in started:
            thread.start()
        for thread in started:
            thread.join()
    finally:
        sys.setswitchinterval(interval)


def delete_keys(client: Any, prefix: str) -> None:
    """Delete every Redis key under ``<prefix>:`` (a test's own keys)."""
    names = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if names:
        client.delete(*names)


class Reply:
    """
    What an ASGI app sent for one request: status, headers, body messages.
    """

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    @property
    def body(self) -> bytes:
        """The whole body."""
        return b"".join(self.chunks)

    def header(self, name: str) -> str | None:
        """The value of header *name*, or None."""
        wanted = name.lower().encode()
        values = [v.decode("latin-1") for n, v in self.headers if n.lower() == wanted]
        return ", ".join(values) if values else None

    def names(self) -> list[str]:
        """The header names, lower-cased, in order."""
        return [n.decode("latin-1").lower() for n, _ in self.headers]


async def asgi_request(
    app: Any,
    method: str,
    path: str,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
) -> Reply:
    """
    Send one HTTP request straight to an ASGI app (no client in between: every
    body message it sends is kept as it was sent, so streaming can be checked).
    """
    reply = Reply()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # a client that stays connected
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            reply.status = message["status"]
            reply.headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
        elif message["type"] == "http.response.body":
            reply.chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return reply


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
