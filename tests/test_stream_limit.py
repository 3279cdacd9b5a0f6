"""
StreamLimit: exports beyond the per-worker bound are refused 503 with Retry-After; a client
that stops reading is cut off after the send timeout, which frees its slot.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fault_load import serve
from helpers import wait_until
from perfkit.fastapi import ExportResponse, install
from perfkit.http import DEFAULT_STREAM_LIMIT, StreamLimit

CHUNK = [{"line": "x" * 1_000}] * 1_000  # ~1 MB of NDJSON per batch


def _endless() -> Iterator[list[dict[str, str]]]:
    while True:
        yield CHUNK


def _short() -> Iterator[list[dict[str, int]]]:
    yield [{"n": 1}, {"n": 2}]


def _app(limit: StreamLimit) -> FastAPI:
    """A shop's API of its own: an endless export and a short one, under one limit."""
    shop = FastAPI()
    install(shop)

    @shop.get("/orders/export")
    def export_orders() -> ExportResponse:
        return ExportResponse(_endless(), limit=limit)

    @shop.get("/orders/recent/export")
    def export_recent() -> ExportResponse:
        return ExportResponse(_short(), limit=limit)

    return shop


def _open_and_never_read(base: str, path: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n".encode())
    return client


def test_an_export_beyond_the_limit_is_refused_503_with_retry_after() -> None:
    """Two clients hold both slots without reading: a third is refused at once, 503
    `overloaded` with Retry-After; the OpenAPI documents it."""
    limit = StreamLimit(2, send_timeout=60, retry_after=3)
    with serve(_app(limit)) as base:
        holders = [_open_and_never_read(base, "/orders/export") for _ in range(2)]
        try:
            wait_until(lambda: limit.active == 2)
            answer = httpx.get(f"{base}/orders/recent/export", timeout=10)
            spec = httpx.get(f"{base}/openapi.json", timeout=10).json()
        finally:
            for holder in holders:
                holder.close()
        wait_until(lambda: limit.active == 0, timeout=70)
    assert (answer.status_code, answer.headers["retry-after"]) == (503, "3")
    assert answer.json()["error"]["code"] == "overloaded"
    assert "overloaded" in spec["paths"]["/orders/export"]["get"]["responses"]["503"]["description"]


def test_a_client_that_stops_reading_is_cut_off_and_frees_its_slot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One slot, held by a client that reads nothing: after the send timeout the server closes
    its connection (logged), and the next export is served whole."""
    limit = StreamLimit(1, send_timeout=0.5)
    with serve(_app(limit)) as base:
        holder = _open_and_never_read(base, "/orders/export")
        try:
            wait_until(lambda: limit.active == 1)
            wait_until(lambda: limit.active == 0, timeout=30)
            answer = httpx.get(f"{base}/orders/recent/export", timeout=10)
        finally:
            holder.close()
    assert (answer.status_code, answer.text) == (200, '{"n":1}\n{"n":2}\n')
    assert any("cut off" in r.getMessage() for r in caplog.records)


def test_exports_that_finish_give_their_slots_back() -> None:
    """Twenty short exports one after another through a limit of one: all 200."""
    limit = StreamLimit(1)
    with serve(_app(limit)) as base, httpx.Client(base_url=base, timeout=10) as client:
        statuses = [client.get("/orders/recent/export").status_code for _ in range(20)]
    assert statuses == [200] * 20
    assert limit.active == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"concurrent": 0}, "concurrent"),
        ({"concurrent": True}, "concurrent"),
        ({"send_timeout": 0}, "send_timeout"),
        ({"retry_after": -1}, "retry_after"),
    ],
)
def test_bad_limits_are_clear_errors(arguments: dict[str, Any], message: str) -> None:
    """Out-of-range settings raise ValueError naming the setting."""
    with pytest.raises(ValueError, match=message):
        StreamLimit(**arguments)


def test_the_default_limit_is_shared_and_none_is_a_choice() -> None:
    """Unless given one, every ExportResponse counts against DEFAULT_STREAM_LIMIT (4 at once,
    30 s per send); limit=None is unbounded."""
    assert ExportResponse(_short()).limit is DEFAULT_STREAM_LIMIT
    assert (DEFAULT_STREAM_LIMIT.concurrent, DEFAULT_STREAM_LIMIT.send_timeout) == (4, 30.0)
    assert ExportResponse(_short(), limit=None).limit is None
