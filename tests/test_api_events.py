"""
The example API's events, end to end: embedded (a relay thread in the API process) and on
RabbitMQ (``python -m bill_api.relay`` and ``dramatiq bill_api.worker``, real processes).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bill_api import create_app
from helpers import wait_until
from perfkit.outbox import Outbox
from perfkit.reference import open_stores, seed

ROOT = Path(__file__).resolve().parents[1]


def _seeded(path: Path) -> str:
    url = f"sqlite:///{path}"
    with open_stores(url) as stores:
        seed(stores.engine, users=5, bills=2, votes=0)
    return url


@pytest.mark.anyio
async def test_embedded_relay_consumes_the_apis_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without PERFKIT_AMQP_URL a vote cast through the API reaches the events log."""
    monkeypatch.delenv("PERFKIT_AMQP_URL", raising=False)
    app = create_app(database_url=_seeded(tmp_path / "api.sqlite3"))
    caplog.set_level(logging.INFO, logger="bill_api.events")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            reply = await client.post("/bills/2/votes", json={"user_id": 3, "choice": "no"})
            assert reply.status_code == 201, reply.text
            vote = reply.json()

            def logged() -> list[dict[str, object]]:
                return [
                    json.loads(r.getMessage())["event"]
                    for r in caplog.records
                    if r.name == "bill_api.events"
                ]

            wait_until(logged)
    (event,) = logged()
    assert ("vote.cast", "bill:2", vote) == (event["type"], event["key"], event["payload"])


def test_relay_and_worker_commands_move_events_through_rabbitmq(
    tmp_path: Path, rabbitmq_url: str
) -> None:
    """The two commands, as real processes: every committed event reaches the worker."""
    url = _seeded(tmp_path / "queue.sqlite3")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "examples"), *sys.path]),
        "PERFKIT_DATABASE_URL": url,
        "PERFKIT_AMQP_URL": rabbitmq_url,
    }
    worker_log = tmp_path / "worker.log"
    with worker_log.open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "bill_api.worker", "--processes", "1",
             "--threads", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
        relay = subprocess.Popen(
            [sys.executable, "-m", "bill_api.relay"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
        try:
            with open_stores(url, outbox=Outbox()) as stores:
                votes = [
                    stores.votes.cast(bill_id=1, user_id=user, choice="yes") for user in (1, 2, 3)
                ]
                bill = stores.bills.get_by_id(1)
                assert bill is not None
                stores.bills.update(1, status="failed" if bill.status == "passed" else "passed")
            wanted = [f'"id":{vote.id},"bill_id":1' for vote in votes] + ['"bill.status_changed"']
            wait_until(lambda: all(w in worker_log.read_text() for w in wanted), timeout=60)
        finally:
            for process in (relay, worker):
                process.terminate()
            for process in (relay, worker):
                process.wait(timeout=30)
    assert relay.returncode == 0, worker_log.read_text()[-3000:]
