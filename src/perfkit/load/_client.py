"""
A small HTTP/1.1 client for the generator: keep-alive connections over asyncio streams.

httpx spends ~4 ms of CPU per request on this machine, so one generator process could not
keep 250 requests a second on schedule (benchmarks/load_ceiling.py); this client does the
little a load test needs (plain HTTP, a JSON body, Content-Length or chunked answers) for
a fraction of that. It reads every answer whole and returns its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as _json
import time
from collections import deque
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = ["HTTPClient"]

_MAX_HEADER_LINES: Final = 200


class HTTPClient:
    """
    Send requests to one ``http://host:port`` over a pool of keep-alive connections.

    Args:
        base_url: ``http://127.0.0.1:8000`` (no TLS: a load test of a service on its own
            network).
        timeout: Seconds a request may take, connecting included.
        idle_timeout: Seconds a connection may sit idle before it is closed instead of
            reused: below the server's keep-alive timeout (uvicorn's is 5 s), so the
            server does not close it just as a request goes out on it. A connection the
            server has closed is never reused, and a GET or HEAD that finds its reused
            connection closed before any answer is sent again on a new one; any other
            method fails instead, as the server may have acted on it.

    Use it as an async context manager, or call :meth:`aclose`.

    .. versionadded:: 0.2.0
    """

    def __init__(self, base_url: str, *, timeout: float = 30.0, idle_timeout: float = 4.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            msg = f"base_url must be http://host[:port], not {base_url!r}"
            raise ValueError(msg)
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self._host_header = f"Host: {parts.netloc}\r\n".encode("latin-1")
        # (reader, writer, when it went idle), most recent last
        self._idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = deque()

    async def __aenter__(self) -> HTTPClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every idle connection."""
        while self._idle:
            _, writer, _ = self._idle.popleft()
            await _close(writer)

    async def request(self, method: str, path: str, *, json: Any = None) -> int:
        """Send one request; return the answer's status once its body is read."""
        return await asyncio.wait_for(self._request(method, path, json), self.timeout)

    async def _request(self, method: str, path: str, body: Any) -> int:
        head = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1"), self._host_header]
        payload = b""
        if body is not None:
            payload = _json.dumps(body, separators=(",", ":")).encode()
            head.append(b"Content-Type: application/json\r\n")
        if payload or method in ("POST", "PUT", "PATCH"):
            head.append(b"Content-Length: %d\r\n" % len(payload))
        head.append(b"\r\n")
        message = b"".join(head) + payload
        connection = self._reusable()
        if connection is not None:
            try:
                return await self._exchange(*connection, message, method)
            except _ClosedIdle:
                if method not in ("GET", "HEAD"):
                    raise ConnectionError("the server closed a kept-alive connection") from None
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            return await self._exchange(reader, writer, message, method)
        except _ClosedIdle:
            raise ConnectionError("the server closed the connection") from None

    def _reusable(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        now = time.monotonic()
        while self._idle:
            reader, writer, since = self._idle.pop()
            if reader.at_eof() or writer.is_closing() or now - since > self.idle_timeout:
                writer.close()
                continue
            return reader, writer
        return None

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: bytes,
        method: str,
    ) -> int:  # fmt: skip
        try:
            writer.write(message)
            status, keep = await _read_response(reader, head_only=method == "HEAD")
        except BaseException:
            writer.close()  # at once, even when cancelled; the socket is freed by the loop
            raise
        if keep:
            self._idle.append((reader, writer, time.monotonic()))
        else:
            await _close(writer)
        return status


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class _ClosedIdle(ConnectionError):
    """The connection was closed before any byte of an answer came: nothing was answered."""


async def _read_response(reader: asyncio.StreamReader, *, head_only: bool) -> tuple[int, bool]:
    try:
        line = await reader.readline()
    except ConnectionResetError:
        raise _ClosedIdle from None
    if not line:
        raise _ClosedIdle
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ConnectionError(f"not an HTTP/1.x answer: {line[:80]!r}")
    status = int(parts[1])
    headers = await _read_headers(reader)
    connection = headers.get(b"connection", b"").lower()
    keep = connection == b"keep-alive" or (parts[0] == b"HTTP/1.1" and connection != b"close")
    if head_only or status in (204, 304) or 100 <= status < 200:
        return status, keep
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        await _skip_chunks(reader)
    elif b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
    else:
        await reader.read()  # until the server closes
        keep = False
    return status, keep


async def _read_headers(reader: asyncio.StreamReader) -> dict[bytes, bytes]:
    headers: dict[bytes, bytes] = {}
    for _ in range(_MAX_HEADER_LINES):
        line = await reader.readline()
        if not line.endswith(b"\n"):
            raise ConnectionError("the server closed the connection in the middle of the headers")
        if line in (b"\r\n", b"\n"):
            return headers
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    raise ConnectionError("too many header lines")


async def _skip_chunks(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        await reader.readexactly(size + 2)  # the chunk and its CRLF
        if size == 0:
            return
