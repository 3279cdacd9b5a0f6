"""
The demo as a user runs it: ``python -m bill_api`` under a real uvicorn on loopback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The demo server on a fresh SQLite file; yields (base URL, its output so far)."""
    database = tmp_path_factory.mktemp("demo") / "demo.sqlite3"
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "examples"),
        "PERFKIT_DATABASE_URL": f"sqlite:///{database}",
        "PERFKIT_PORT": str(port),
    }
    log = tmp_path_factory.mktemp("demo-log") / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bill_api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"demo server did not come up:\n{log.read_text()}")
            time.sleep(0.2)
        yield base, log.read_text()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - stuck server
            process.kill()
            process.wait()


def test_demo_seeds_and_serves_bills(server: tuple[str, str]) -> None:
    """The first start seeds the full volume and serves GET /bills?limit=5."""
    base, output = server

    body = httpx.get(f"{base}/bills", params={"limit": 5}).json()

    assert "seeded 1,000 users, 10,000 bills and 100,000 votes" in output
    assert f"perfkit bill/vote API on {base}" in output
    assert "curl -s" in output
    assert len(body["items"]) == 5
    assert (body["total"], body["pages"]) == (10_000, 2_000)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/bills?page=0", {}, 422),
        ("GET", "/bills?limit=1000000", {}, 422),
        ("GET", "/users/abc", {}, 422),
        ("GET", "/bills/99999999", {}, 404),
        ("POST", "/users", {"content": b"{", "headers": {"content-type": "application/json"}}, 400),
        # Just over the 64 KiB limit: a body the socket buffers whole, so the early
        # 413 cannot race the client's upload (the 1 MB case runs through ASGI).
        ("POST", "/bills", {"json": {"title": "x" * 80_000, "sponsor_id": 1}}, 413),
        ("POST", "/bills/1/votes", {"json": {"user_id": 1, "choice": "maybe"}}, 422),
        ("PUT", "/bills/1", {"json": {}}, 405),
    ],
)
def test_bad_input_over_real_http(
    server: tuple[str, str], method: str, path: str, kwargs: dict[str, object], status: int
) -> None:
    """Bad requests over a real socket get their 4xx and the JSON error envelope."""
    base, _ = server

    response = httpx.request(method, f"{base}{path}", timeout=10, **kwargs)  # type: ignore[arg-type]

    assert response.status_code == status
    assert set(response.json()["error"]) >= {"code", "message"}


def test_duplicate_vote_over_real_http(server: tuple[str, str]) -> None:
    """A vote then the same vote again: 201, then 409, and the counts move by one."""
    base, _ = server
    user = httpx.post(
        f"{base}/users", json={"username": "http_voter", "email": "voter@example.org"}
    ).json()
    before = httpx.get(f"{base}/bills/7/votes/counts").json()["total"]

    first = httpx.post(f"{base}/bills/7/votes", json={"user_id": user["id"], "choice": "yes"})
    again = httpx.post(f"{base}/bills/7/votes", json={"user_id": user["id"], "choice": "yes"})

    assert (first.status_code, again.status_code) == (201, 409)
    assert httpx.get(f"{base}/bills/7/votes/counts").json()["total"] == before + 1
