"""
A loopback TCP proxy in front of PostgreSQL that can lose the reply to a COMMIT.

The server really receives and applies the COMMIT; only its answer never
reaches the client, whose connection is cut instead: what a network failure
at the worst moment does. It also cuts every connection on demand (a
failover seen from the client).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from types import TracebackType

__all__ = ["TcpProxy"]

_CHUNK = 65536
# A simple-protocol query message of exactly COMMIT: "Q", its int32 length, "COMMIT\0".
# A COMMIT as a simple query (psycopg 3.2 on) or as an unnamed extended-protocol Parse
# (psycopg 3.1).
_COMMIT = re.compile(rb"(?:Q\x00\x00\x00\x0b|P.{4}\x00)COMMIT\x00", re.IGNORECASE | re.DOTALL)


class TcpProxy:
    """
    Forward 127.0.0.1:<port> to *upstream*; ``lose_commit_reply()`` arms the next COMMIT.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._armed = 0
        self._delays: list[float] = []
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self.commits_lost = 0
        self._closed = False
        self._paused = False
        threading.Thread(target=self._accept, daemon=True).start()

    def lose_commit_reply(self, times: int = 1) -> None:
        """Apply the next *times* COMMITs on the server but cut the client before it hears."""
        with self._lock:
            self._armed += times

    def cut_client_then_commit(self, delay: float) -> None:
        """
        On the next COMMIT, cut the client at once and hand the COMMIT to the server only
        *delay* seconds later: the client gives up while its COMMIT is still to run.
        """
        with self._lock:
            self._delays.append(delay)

    def cut_all(self) -> int:
        """Close every proxied connection at once; return how many were cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, server in pairs:
            _close(client)
            _close(server)
        return len(pairs)

    def pause(self) -> None:
        """The database goes away: every connection is cut, new ones are refused until resume()."""
        self._paused = True
        self.cut_all()

    def resume(self) -> None:
        """The database is back."""
        self._paused = False

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        self.cut_all()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._paused:
                _close(client)
                continue
            try:
                server = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            if self._paused:
                _close(client)
                _close(server)
                continue
            server.settimeout(None)
            with self._lock:
                self._pairs.append((client, server))
            cut = threading.Event()  # set once a COMMIT went up whose reply must be lost
            answered = threading.Event()  # the server answered that COMMIT: it ran
            args = (client, server, cut, answered)
            threading.Thread(target=self._up, args=args, daemon=True).start()
            threading.Thread(target=self._down, args=args, daemon=True).start()

    def _up(
        self,
        client: socket.socket,
        server: socket.socket,
        cut: threading.Event,
        answered: threading.Event,
    ) -> None:
        while True:
            data = _recv(client)
            if not data:
                break
            lose = False
            delay: float | None = None
            if _COMMIT.search(data):
                with self._lock:
                    if self._delays:
                        delay = self._delays.pop(0)
                    elif self._armed:
                        self._armed -= 1
                        lose = True
            if delay is not None:
                cut.set()
                _close(client)  # the client sees its connection die before the COMMIT runs
                time.sleep(delay)
            if lose:
                cut.set()  # before sending: the reply must not slip through
            try:
                server.sendall(data)
            except OSError:
                break
            if delay is not None:
                answered.wait(10)  # let the COMMIT run before the server loses its peer
                break
        _close(server)

    def _down(
        self,
        client: socket.socket,
        server: socket.socket,
        cut: threading.Event,
        answered: threading.Event,
    ) -> None:
        while True:
            data = _recv(server)
            if not data:
                break
            if cut.is_set():
                # The server answered the COMMIT: it is applied. The client never hears.
                with self._lock:
                    self.commits_lost += 1
                answered.set()
                break
            try:
                client.sendall(data)
            except OSError:
                break
        _close(client)
        _close(server)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(_CHUNK)
    except OSError:
        return b""


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
