"""
The example API's events, end to end: embedded (a relay thread in the API process) and on
RabbitMQ (``python -m bill_api.relay`` and ``dramatiq bill_api.worker``, real processes).
"""

from __future__ import annotations

import base64
import contextlib
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
from perfkit.webhooks import Webhooks
from webhook_receiver import Receiver, serve

ROOT = Path(__file__).resolve().parents[1]
SECRET = "whsec_" + base64.b64encode(b"api-webhook-test-secret!").decode()


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


@pytest.mark.anyio
async def test_embedded_webhooks_deliver_the_apis_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST /webhooks, then a vote and a status change arrive signed; a 410 shows as dead."""
    monkeypatch.delenv("PERFKIT_AMQP_URL", raising=False)
    monkeypatch.setenv("PERFKIT_WEBHOOKS_ALLOW_PRIVATE", "1")
    app = create_app(database_url=_seeded(tmp_path / "hooks.sqlite3"))
    with serve(Receiver([SECRET])) as receiver:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                made = await client.post("/webhooks", json={"url": receiver.url, "secret": SECRET})
                assert made.status_code == 201, made.text
                endpoint = made.json()
                assert (endpoint["secret"], endpoint["status"]) == (SECRET, "active")
                hook = f"/webhooks/{endpoint['id']}"
                vote = await client.post("/bills/2/votes", json={"user_id": 3, "choice": "no"})
                bill = await client.patch("/bills/1", json={"status": "passed"})
                assert bill.status_code == 200
                wait_until(lambda: len(receiver.delivered) == 2)
                # The worker attempts on a pool of threads, and the two events have different
                # keys: they may arrive in either order (docs/webhooks.md, "Limits").
                received = [json.loads(r.body) for r in receiver.received]
                assert sorted(b["type"] for b in received) == ["bill.status_changed", "vote.cast"]
                bodies = {b["type"]: b for b in received}
                assert bodies["vote.cast"]["data"] == vote.json()
                assert bodies["bill.status_changed"]["data"]["bill"]["status"] == "passed"

                receiver.then("410")
                await client.post("/bills/2/votes", json={"user_id": 4, "choice": "yes"})

                def disabled() -> bool:
                    return bool(_get(app, hook)["status"] == "disabled")

                wait_until(disabled)
                shown = (await client.get(hook)).json()
                assert shown["deliveries"] == {"pending": 0, "delivered": 2, "dead": 1}
                dead = (await client.get(f"{hook}/deliveries?status=dead")).json()["items"]
                assert [(d["event_type"], d["last_status"]) for d in dead] == [("vote.cast", 410)]
                retry = f"{hook}/deliveries/{dead[0]['id']}/retry"
                refused = await client.post(retry)
                assert (refused.status_code, refused.json()["error"]["code"]) == (409, "conflict")
                enabled = await client.patch(hook, json={"status": "active"})
                assert enabled.json()["status"] == "active"
                assert (await client.post(retry)).status_code == 202
                wait_until(lambda: len(receiver.delivered) == 3)
    assert all(r.verified for r in receiver.received)


def _get(app: object, path: str) -> dict[str, object]:
    """An endpoint's state read straight from the app's Webhooks (no event loop needed)."""
    hooks: Webhooks = app.state.webhooks  # type: ignore[attr-defined]
    endpoint_id = int(path.rsplit("/", 1)[1])
    return hooks.endpoint(endpoint_id).to_dict()


def test_relay_and_worker_commands_move_events_through_rabbitmq(
    tmp_path: Path, rabbitmq_url: str
) -> None:
    """
    The two commands, as real processes: every committed event reaches the worker, and
    through it (a delayed dramatiq message per attempt) the subscribed webhook receiver.
    """
    url = _seeded(tmp_path / "queue.sqlite3")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "examples"), *sys.path]),
        "PERFKIT_DATABASE_URL": url,
        "PERFKIT_AMQP_URL": rabbitmq_url,
        "PERFKIT_WEBHOOKS_ALLOW_PRIVATE": "1",
    }
    stack = contextlib.ExitStack()
    receiver = stack.enter_context(serve(Receiver([SECRET])))
    receiver.then("503")  # the first attempt fails: the next is a delayed message
    with open_stores(url) as stores:
        hooks = Webhooks(stores.engine, allow_private=True)
        hooks.create()
        hooks.subscribe(receiver.url, secret=SECRET)
        hooks.close()
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
            wait_until(lambda: len(receiver.delivered) == 4, timeout=60)
        finally:
            for process in (relay, worker):
                process.terminate()
            for process in (relay, worker):
                process.wait(timeout=30)
            stack.close()
    kinds = sorted(json.loads(r.body)["type"] for r in receiver.received if r.answer == "ok")
    assert kinds == ["bill.status_changed", "vote.cast", "vote.cast", "vote.cast"]
    assert len(set(receiver.delivered)) == 4
    assert relay.returncode == 0, worker_log.read_text()[-3000:]
