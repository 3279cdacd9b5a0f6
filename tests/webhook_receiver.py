"""
A real webhook receiver for the tests: an HTTP server on loopback that verifies each
message's Standard Webhooks signature and answers as it is told (2xx, 5xx, 410, a stall
past the sender's timeout, 503 with Retry-After).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from perfkit.webhooks import InvalidSignature, verify_webhook


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it, and what it answered."""

    id: str | None
    verified: bool
    body: bytes
    headers: dict[str, str]
    answer: str


class Receiver:
    """
    Answers each request with the next command given to :meth:`then`, else *default*:

    ``"ok"`` (204), ``"500"`` (any status: ``"502"``, ``"410"``...), ``"stall:S"``
    (S seconds of silence, then 200: past a short timeout), ``"trickle:S"`` (S seconds
    of a header sent a byte at a time), ``"stall-body:410:S"`` (a status, then S
    seconds without the body), ``"retry-after:V"``
    (503 with ``Retry-After: V``). A message whose signature does not verify gets 401.
    """

    def __init__(self, secrets: Sequence[str], *, now: Callable[[], float] = time.time) -> None:
        self.secrets = list(secrets)
        self.now = now
        self.default = "ok"
        self._commands: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self.received: list[Received] = []
        self.url = ""

    def then(self, *commands: str) -> None:
        """Answer the next requests with *commands*, in order."""
        with self._lock:
            self._commands.extend(commands)

    def _next(self) -> str:
        with self._lock:
            return self._commands.popleft() if self._commands else self.default

    @property
    def delivered(self) -> list[str]:
        """The ids of verified messages answered with a 2xx, in arrival order."""
        return [r.id for r in self.received if r.verified and r.answer == "ok" and r.id]

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length)
        headers = {name.lower(): value for name, value in handler.headers.items()}
        try:
            msg_id: str | None = verify_webhook(headers, body, self.secrets, now=self.now())
            verified = True
        except InvalidSignature:
            msg_id, verified = headers.get("webhook-id"), False
        command = self._next() if verified else "401"
        with self._lock:
            self.received.append(Received(msg_id, verified, body, headers, command))
        if command.startswith("stall:"):
            time.sleep(float(command.partition(":")[2]))
            command = "200"
        if command.startswith("stall-body:"):  # "stall-body:410:S": the status, then no body
            _, status_text, seconds = command.split(":")
            try:
                handler.send_response(int(status_text))
                handler.send_header("Content-Length", "100")
                handler.end_headers()
                handler.wfile.flush()
                time.sleep(float(seconds))
            except OSError:
                pass
            return
        if command.startswith("trickle:"):  # headers a byte at a time: no read ever times out
            until = time.monotonic() + float(command.partition(":")[2])
            try:
                handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while time.monotonic() < until:
                    handler.wfile.write(b"z")
                    handler.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
            return
        extra: list[tuple[str, str]] = []
        if command.startswith("retry-after:"):
            extra.append(("Retry-After", command.partition(":")[2]))
            command = "503"
        status = 204 if command == "ok" else int(command)
        try:
            handler.send_response(status)
            for name, value in extra:
                handler.send_header(name, value)
            payload = b"" if status == 204 else f"answer {status}".encode()
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:
            pass  # the sender gave up (a stall past its timeout)


@contextmanager
def serve(receiver: Receiver) -> Iterator[Receiver]:
    """Run *receiver* on a free loopback port; ``receiver.url`` is its /hook URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver.handle(self)

        def log_message(self, *_args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
