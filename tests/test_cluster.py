"""
The local production cluster (deploy/cluster.py): two instances of the example API under
uvicorn, behind a real haproxy on PostgreSQL and Redis; a rolling restart under
open-model load loses no request.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from perfkit import db, migrations
from perfkit.reference import seed

ROOT = Path(__file__).resolve().parents[1]
RATE = 80  # requests per second, on schedule whatever the answers take (open model)
PATHS = ("/bills?limit=5", "/bills/{n}", "/users/{n}", "/bills/{n}/votes/counts")


def _cluster_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("perfkit_cluster", ROOT / "deploy" / "cluster.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def haproxy() -> str:
    """The haproxy binary (Debian's package)."""
    found = shutil.which("haproxy")
    if found is None:
        message = "haproxy is not installed (Debian: apt-get install haproxy)"
        if os.environ.get("PERFKIT_REQUIRE_SERVICES"):
            pytest.fail(f"{message}; PERFKIT_REQUIRE_SERVICES is set", pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture
def cluster(fresh_pg_url: str, redis_url: str, haproxy: str) -> Iterator[object]:
    """Two instances behind haproxy (one worker each: the suite's share of 2 cores; the drain
    is per worker, so more workers change nothing here), on this test's schema and Redis DB."""
    import redis  # noqa: PLC0415

    cache_url = redis_url.rsplit("/", 1)[0] + "/7"  # a database of its own: keys of its own
    redis.Redis.from_url(cache_url).flushdb()
    engine = db.create_engine(fresh_pg_url)  # a small database: the demo's takes 10 s to seed
    migrations.upgrade(engine, "perfkit", "perfkit_reference")
    seed(engine, users=400, bills=400, votes=2_000, random_seed=11)
    engine.dispose()
    module = _cluster_module()
    made = module.Cluster(fresh_pg_url, cache_url, None, instances=2, workers=1)
    with module.running(made, prepare=False) as running:  # migrated and seeded above
        yield running
    redis.Redis.from_url(cache_url).flushdb()


class OpenLoad:
    """Requests sent on schedule (RATE per second) from a pool; what each one got."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.outcomes: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.local = threading.local()
        self.clients: list[httpx.Client] = []

    def one(self, n: int) -> None:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = httpx.Client(base_url=self.base, timeout=30)
            with self.lock:
                self.clients.append(client)
        path = PATHS[n % len(PATHS)].format(n=1 + n % 400)
        try:
            if n % 8 == 7:  # a write: not idempotent, so the balancer never sends it twice
                body = {"username": f"rolling{n}", "email": f"rolling{n}@example.org"}
                outcome = str(client.post("/users", json=body).status_code)
            else:
                outcome = str(client.get(path).status_code)
        except httpx.TransportError as exc:
            outcome = type(exc).__name__
        with self.lock:
            self.outcomes[outcome] += 1

    def run(self) -> None:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=48) as pool:
            n = 0
            while not self.stopping.is_set():
                due = started + n / RATE
                time.sleep(max(0.0, due - time.monotonic()))
                pool.submit(self.one, n)
                n += 1
        for client in self.clients:
            client.close()


@pytest.mark.slow
def test_a_rolling_restart_under_load_loses_no_request(cluster: object) -> None:
    """80 requests/s through haproxy (one in eight a POST, which haproxy never retries) while
    instance 0, then instance 1, is stopped (SIGTERM: drained) and started again: every answer
    is a 200 or a 201, no 5xx, no reset."""
    load = OpenLoad(f"http://127.0.0.1:{cluster.port}")  # type: ignore[attr-defined]
    runner = threading.Thread(target=load.run)
    runner.start()
    try:
        time.sleep(1)
        for instance in (0, 1):
            cluster.restart(instance)  # type: ignore[attr-defined]
        time.sleep(1)
    finally:
        load.stopping.set()
        runner.join(timeout=120)
    sent = sum(load.outcomes.values())
    bad = {k: v for k, v in load.outcomes.items() if k not in ("200", "201")}
    assert sent > RATE * 6, load.outcomes  # the load ran through both restarts
    assert bad == {}, load.outcomes


@pytest.mark.slow
def test_gunicorn_preload_workers_each_receive_invalidations(
    tmp_path: Path, redis_url: str
) -> None:
    """`gunicorn --preload -w 2 -k uvicorn_worker.UvicornWorker`: the app (and its tiered
    cache, with a listener thread) is made in the arbiter, then forked. Each worker must listen
    for invalidations itself: after a write through any worker, every worker answers the new
    title within a second (before the fork reset, the other worker served the old one from
    its L1 for up to l1_ttl, 30 s: 19 of 20 reads stale)."""
    import redis  # noqa: PLC0415

    from helpers import free_port, wait_until  # noqa: PLC0415

    cache_url = redis_url.rsplit("/", 1)[0] + "/7"
    redis.Redis.from_url(cache_url).flushdb()
    url = f"sqlite:///{tmp_path / 'api.sqlite3'}"
    engine = db.create_engine(url)
    migrations.upgrade(engine, "perfkit", "perfkit_reference")
    seed(engine, users=20, bills=5, votes=0, random_seed=3)
    engine.dispose()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "examples"), "PERFKIT_DATABASE_URL": url,
           "PERFKIT_REDIS_URL": cache_url}  # fmt: skip
    command = [str(Path(sys.executable).with_name("gunicorn")), "--preload", "-w", "2",
               "-k", "uvicorn_worker.UvicornWorker", "-b", f"127.0.0.1:{port}",
               "--log-level", "warning", "bill_api.app:create_app()"]  # fmt: skip
    server = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}"

    def title() -> str:
        with httpx.Client(base_url=base, timeout=10) as client:  # a new connection: any worker
            return str(client.get("/bills/1").json()["title"])

    try:
        wait_until(lambda: _serves(base), timeout=60)
        before = {title() for _ in range(20)}  # both workers' L1s now hold bill 1
        with httpx.Client(base_url=base, timeout=10) as client:
            changed = client.patch("/bills/1", json={"title": "Renamed after the fork"})
        assert changed.status_code == 200, changed.text
        fresh = ["Renamed after the fork"] * 20
        # Delivery takes milliseconds; 10 s is well under the 30 s a stale L1 would last.
        wait_until(lambda: [title() for _ in range(20)] == fresh, timeout=10)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        redis.Redis.from_url(cache_url).flushdb()
    assert len(before) == 1


def _serves(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
