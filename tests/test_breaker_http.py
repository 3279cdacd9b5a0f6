"""
A circuit breaker in front of a real HTTP service on loopback that fails and slows down on command.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from perfkit import CircuitBreaker, CircuitOpenError
from perfkit.testing import FakeClock


class Service:
    """What the test service does: 'ok', 'fail' (HTTP 503) or 'slow' (2 fake seconds)."""

    def __init__(self, clock: FakeClock) -> None:
        self.mode = "ok"
        self.hits = 0
        self.clock = clock


@pytest.fixture
def service() -> Iterator[tuple[str, Service]]:
    state = Service(FakeClock())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits += 1
            if state.mode == "fail":
                self.send_response(503)
                self.end_headers()
                return
            if state.mode == "slow":
                state.clock.advance(2.0)
            body = b'{"text": "Be it enacted..."}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


def test_breaker_opens_rejects_half_opens_and_closes(service: tuple[str, Service]) -> None:
    """Failing service: opens after 3; refused calls never reach it; a trial closes it again."""
    url, state = service
    breaker = CircuitBreaker(name="bill-text", fail_max=3, reset_timeout=30, clock=state.clock)
    with httpx.Client(base_url=url, timeout=2) as client:

        @breaker
        def fetch() -> dict[str, Any]:
            response = client.get("/bills/1/text")
            response.raise_for_status()
            return dict(response.json())

        assert fetch() == {"text": "Be it enacted..."}
        state.mode = "fail"
        for _ in range(3):
            with pytest.raises(httpx.HTTPStatusError):
                fetch()
        hits = state.hits
        for _ in range(10):
            with pytest.raises(CircuitOpenError):
                fetch()
        assert state.hits == hits  # rejected without a request
        assert breaker.state == "open"

        state.mode = "ok"
        state.clock.advance(30)
        assert fetch() == {"text": "Be it enacted..."}  # the trial call
        assert breaker.state == "closed"


def test_slow_service_trips_the_slow_call_rate(service: tuple[str, Service]) -> None:
    """Answers that arrive too late count against the service even though they succeed."""
    url, state = service
    breaker = CircuitBreaker(
        name="bill-text-slow", fail_max=None, slow_call_duration=1.0, slow_call_rate=0.5,
        window=4, min_calls=4, clock=state.clock,
    )  # fmt: skip
    with httpx.Client(base_url=url, timeout=2) as client:
        for mode in ("ok", "ok", "slow", "slow"):
            state.mode = mode
            breaker.call(client.get, "/bills/1/text")

    assert breaker.state == "open"
