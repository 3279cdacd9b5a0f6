"""
The example API's OTLP path, end to end: ``python -m bill_api`` with
``OTEL_EXPORTER_OTLP_ENDPOINT`` set exports its metrics over OTLP/HTTP (protobuf) to a
receiver this test runs, which decodes every request with the OTLP protocol's own
message types and answers as a collector does, including with a refusal the exporter
must survive.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from helpers import free_port
from perfkit.reference import open_stores, seed

ROOT = Path(__file__).resolve().parents[1]


class Receiver:
    """An OTLP/HTTP metrics receiver: decodes, keeps, and can refuse the next exports."""

    def __init__(self) -> None:
        self.exports: list[ExportMetricsServiceRequest] = []
        self.content_types: list[str] = []
        self.refuse = 0  # answer this many exports with 503
        self.refused = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/metrics":
                    self._answer(404, b"")
                    return
                with receiver.lock:
                    if receiver.refuse:
                        receiver.refuse -= 1
                        receiver.refused += 1
                        self._answer(503, b"")
                        return
                    message = ExportMetricsServiceRequest()
                    message.ParseFromString(body)  # raises on anything but OTLP protobuf
                    receiver.exports.append(message)
                    receiver.content_types.append(self.headers.get("content-type", ""))
                self._answer(200, ExportMetricsServiceResponse().SerializeToString())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """Every data point of metric *name* received so far, with its attributes."""
        found = []
        with self.lock:
            exports = list(self.exports)
        for export in exports:
            for resource in export.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        if metric.name != name:
                            continue
                        kind = metric.WhichOneof("data")
                        for point in getattr(metric, kind).data_points:
                            attributes = {a.key: _value(a.value) for a in point.attributes}
                            found.append((attributes, point))
        return found


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value"))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    thread = threading.Thread(target=made.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield made
    finally:
        made.server.shutdown()
        made.server.server_close()
        thread.join(timeout=10)


def test_the_example_exports_request_durations_over_otlp(
    receiver: Receiver, tmp_path: Path
) -> None:
    """
    Requests to the running example reach the receiver as ``http.server.request.duration``
    histograms with the route template, method and status, plus perfkit's cache counters;
    an export the receiver refuses with 503 loses nothing (the points are cumulative, and
    the next export carries them).
    """
    database = tmp_path / "api.sqlite3"
    with open_stores(f"sqlite:///{database}") as stores:
        seed(stores.engine, users=10, bills=10, votes=20)
    port = free_port()
    receiver.refuse = 1
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "examples"),
        "PERFKIT_DATABASE_URL": f"sqlite:///{database}",
        "PERFKIT_PORT": str(port),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_METRIC_EXPORT_INTERVAL": "300",  # ms
    }
    with (tmp_path / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "bill_api"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_ready(base, server, tmp_path / "server.log")
            with httpx.Client(base_url=base) as client:
                for _ in range(5):
                    assert client.get("/bills/3").status_code == 200
                assert client.get("/users/2").status_code == 200
                assert client.get("/bills/999999").status_code == 404
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                routes = {
                    (attributes.get("http.route"), attributes["http.response.status_code"]): point
                    for attributes, point in receiver.points("http.server.request.duration")
                }
                if ("/bills/{bill_id}", 404) in routes and ("/users/{user_id}", 200) in routes:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"received only {sorted(routes, key=str)}")
        finally:
            server.terminate()
            server.wait(timeout=30)

    assert receiver.refused == 1
    assert set(receiver.content_types) == {"application/x-protobuf"}
    bill = routes[("/bills/{bill_id}", 200)]
    assert bill.count == 5  # every request, the refused export notwithstanding
    assert list(bill.explicit_bounds)[:3] == [0.005, 0.01, 0.025]
    assert bill.sum > 0
    attributes = next(
        a for a, _ in receiver.points("http.server.request.duration")
        if a.get("http.route") == "/bills/{bill_id}"
    )  # fmt: skip
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.scheme"] == "http"
    cache = {a["perfkit.cache.result"] for a, _ in receiver.points("perfkit.cache.operations")}
    assert {"hit", "miss"} <= cache


def _wait_ready(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the API exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the API did not get ready:\n{log.read_text(errors='replace')[-3000:]}")
