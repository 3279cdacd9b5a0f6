"""
The tiered backend (L1 in process, L2 in Redis) and Redis failures, on real Redis.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from helpers import free_port, wait_until
from perfkit import CircuitBreaker, db
from perfkit.cache import MISSING, Cache, MemoryBackend, RedisBackend, TieredBackend
from perfkit.reference import codec, open_stores
from perfkit.testing import BackendContract, FakeClock
from tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[1]


def _tiered(url: str, prefix: str, **kwargs: object) -> TieredBackend:
    backend = TieredBackend(RedisBackend(url, prefix=prefix, codec=codec()), **kwargs)  # type: ignore[arg-type]
    assert backend.wait_subscribed(5), "listener did not subscribe"
    return backend


class TestTieredBackend(BackendContract):
    """The backend contract holds for the two levels together."""

    @pytest.fixture
    def backend(self, redis_url: str, redis_prefix: str) -> Iterator[TieredBackend]:
        backend = _tiered(redis_url, redis_prefix)
        yield backend
        backend.close()


def test_hits_come_from_l1_after_the_first_read(redis_url: str, redis_prefix: str) -> None:
    """An L2 hit is copied into L1, with its tags, so a tag invalidation reaches it."""
    backend = _tiered(redis_url, redis_prefix)
    try:
        backend.set("ns:a", 1, ttl=30, tags=["ns#t"], token=backend.fill_token())
        backend.l1.clear()

        assert backend.get("ns:a") == 1  # from L2, copied to L1
        assert backend.l1.get("ns:a") == 1
        backend.invalidate(tags=["ns#t"])
        assert backend.l1.get("ns:a") is MISSING
        assert backend.get("ns:a") is MISSING
    finally:
        backend.close()


def test_invalidation_reaches_another_l1(redis_url: str, redis_prefix: str) -> None:
    """An invalidation in one backend drops the entry from another's L1 once delivered."""
    delivered = threading.Event()
    other = _tiered(redis_url, redis_prefix, on_message=lambda keys, tags: delivered.set())
    writer = _tiered(redis_url, redis_prefix)
    try:
        other.set("ns:k", "old", ttl=30, tags=["ns#t"], token=other.fill_token())
        assert other.l1.get("ns:k") == "old"

        writer.invalidate(tags=["ns#t"])

        assert delivered.wait(5)
        assert other.l1.get("ns:k") is MISSING
        assert other.get("ns:k") is MISSING
    finally:
        other.close()
        writer.close()


def test_lost_subscription_flushes_and_bypasses_l1(redis_url: str, redis_prefix: str) -> None:
    """Killing the listener's connection empties L1 and keeps it unused until resubscribed."""
    backend = _tiered(redis_url, redis_prefix, reconnect_delay=0.3)
    admin = redis.Redis.from_url(redis_url)
    try:
        backend.l1.set("ns:only-in-l1", "x", ttl=30, tags=(), token=backend.l1.fill_token())
        admin.client_kill_filter(_type="pubsub")

        deadline = time.monotonic() + 5
        while backend.subscribed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not backend.subscribed
        assert backend.l1.get("ns:only-in-l1") is MISSING
        assert backend.get("ns:only-in-l1") is MISSING  # L2 never had it
        assert backend.wait_subscribed(5)  # and it comes back by itself
    finally:
        admin.close()
        backend.close()


# -- two processes -----------------------------------------------------------------------

READER = textwrap.dedent(
    """
    import json, sys, time
    from perfkit.cache import Cache, RedisBackend, TieredBackend
    from perfkit.reference import codec, open_stores

    database, redis_url, prefix, bill_id = sys.argv[1:5]
    backend = TieredBackend(RedisBackend(redis_url, prefix=prefix, codec=codec()))
    backend.wait_subscribed(5)
    stores = open_stores(database, cache=Cache(backend, namespace="two"), schema="none")
    print(json.dumps({"ready": stores.bills.get_by_id(int(bill_id)).title}), flush=True)
    titles = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        titles.append(stores.bills.get_by_id(int(bill_id)).title)
        if titles[-1] == "New" and titles.count("New") >= 200:
            break
    print(json.dumps({"titles": titles, "hits": stores.cache.stats.hits}), flush=True)
    backend.close()
    """
)


def test_a_write_in_one_process_is_never_read_stale_in_another_once_delivered(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """Process B reads in a loop; after A's write, B switches to the new title and never back."""
    database = f"sqlite:///{tmp_path / 'two.sqlite3'}"
    writer_backend = _tiered(redis_url, redis_prefix)
    stores = open_stores(database, cache=Cache(writer_backend, namespace="two"))
    sponsor = stores.users.create(username="sponsor", email="s@example.org")
    bill = stores.bills.create(title="Old", sponsor_id=sponsor.id)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, database, redis_url, redis_prefix, str(bill.id)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert reader.stdout is not None
        assert json.loads(reader.stdout.readline()) == {"ready": "Old"}
        time.sleep(0.05)  # let B serve a few reads from its L1
        stores.bills.update(bill.id, title="New")
        result = json.loads(reader.stdout.readline())
    finally:
        reader.wait(timeout=20)
        if reader.stdout is not None:
            reader.stdout.close()
        writer_backend.close()
        stores.close()

    titles: list[str] = result["titles"]
    first_new = titles.index("New")
    assert set(titles[first_new:]) == {"New"}  # never stale once the invalidation arrived
    assert set(titles[:first_new]) <= {"Old"}
    assert result["hits"] > 100  # B really read through its cache


# -- a Redis of our own, made slow and then brought back ---------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server this test starts (and may freeze), on a free loopback port."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    client.close()
    try:
        yield url, process
    finally:
        process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait()


def test_frozen_redis_fails_open_and_replays_the_lost_invalidation(
    own_redis: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """Redis frozen: reads keep answering; a write's invalidation is replayed before any hit."""
    url, server = own_redis
    clock = FakeClock()
    engine = db.create_engine(f"sqlite:///{tmp_path / 'frozen.sqlite3'}")
    backend = RedisBackend(url, prefix="frozen", codec=codec())
    cache = Cache(backend, namespace="f", clock=clock)
    stores = open_stores(engine, cache=cache)
    sponsor = stores.users.create(username="sponsor", email="s@example.org")
    bill = stores.bills.create(title="Old", sponsor_id=sponsor.id)
    assert stores.bills.get_by_id(bill.id).title == "Old"  # type: ignore[union-attr]
    assert stores.bills.get_by_id(bill.id).title == "Old"  # type: ignore[union-attr]
    assert cache.stats.hits == 1

    server.send_signal(signal.SIGSTOP)  # Redis stops answering; it keeps its data
    try:
        stores.bills.update(bill.id, title="New")  # commits; the invalidation times out
        during = stores.bills.get_by_id(bill.id)
    finally:
        server.send_signal(signal.SIGCONT)

    assert during is not None
    assert during.title == "New"  # answered by the database
    assert cache.stats.errors >= 1
    clock.advance(1.1)  # let the replay run
    after = [stores.bills.get_by_id(bill.id).title for _ in range(3)]  # type: ignore[union-attr]
    assert after == ["New", "New", "New"]  # the old entry in Redis was never served
    assert cache.pending_invalidations == 0
    backend.close()
    engine.dispose()


_READER = textwrap.dedent(
    """
    import sys, time
    from perfkit import db
    from perfkit.cache import Cache, RedisBackend
    from perfkit.reference import codec, open_stores

    url, prefix, path, bill_id = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    backend = RedisBackend(url, prefix=prefix, codec=codec())
    stores = open_stores(db.create_engine(f"sqlite:///{path}"), cache=Cache(backend, namespace="i"))
    assert stores.bills.get_by_id(bill_id).title == "Old"  # from Redis: the writer's fill
    print("ready", flush=True)
    back = float(sys.stdin.readline())  # when the writer could reach Redis again (monotonic)
    while stores.bills.get_by_id(bill_id).title != "New":
        if time.monotonic() - back > 30:  # the TTL is 600 s: nobody replayed
            print("stale", flush=True)
            sys.exit()
        time.sleep(0.005)
    print(time.monotonic() - back, flush=True)
    """
)


def test_an_idle_writer_replays_its_invalidation_when_redis_returns(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """The writer is cut from Redis while a write invalidates, then makes no call through its
    cache: once Redis is reachable again, another process (which kept reaching Redis and its
    old entry) reads the new value within about a second, not after the entry's TTL."""
    path = tmp_path / "idle.sqlite3"
    engine = db.create_engine(f"sqlite:///{path}")
    upstream = urlsplit(redis_url)
    with TcpProxy(upstream.hostname or "127.0.0.1", upstream.port or 6379) as proxy:
        backend = RedisBackend(
            f"redis://127.0.0.1:{proxy.port}{upstream.path}",
            prefix=redis_prefix,
            codec=codec(),
        )
        cache = Cache(backend, namespace="i", ttl=600)
        stores = open_stores(engine, cache=cache)
        sponsor = stores.users.create(username="sponsor", email="s@example.org")
        bill = stores.bills.create(title="Old", sponsor_id=sponsor.id)
        assert stores.bills.get_by_id(bill.id).title == "Old"  # type: ignore[union-attr]
        reader = subprocess.Popen(
            [sys.executable, "-c", _READER, redis_url, redis_prefix, str(path), str(bill.id)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            assert reader.stdout is not None
            assert reader.stdin is not None
            assert reader.stdout.readline().strip() == "ready"
            proxy.pause()  # the writer loses Redis; the reader does not
            stores.bills.update(bill.id, title="New")  # commits; the invalidation is kept
            assert cache.pending_invalidations == 1
            failed = cache.stats.errors
            wait_until(lambda: cache.stats.errors > failed)  # the thread's replay failed too
            assert cache.pending_invalidations == 1
            back = time.monotonic()
            proxy.resume()  # from here on, the writer makes no call through its cache
            reader.stdin.write(f"{back}\n")
            reader.stdin.flush()
            answer = reader.stdout.readline().strip()  # seconds until it read "New"
        finally:
            reader.kill()
            reader.communicate()  # reaps it and closes both pipes
        assert answer != "stale", "the other process read the old value for 30 s"
        print(
            f"replay window: {float(answer) * 1000:.0f} ms from Redis' return to the other's read"
        )
        wait_until(lambda: cache.pending_invalidations == 0)
        backend.close()
    engine.dispose()


def test_redis_killed_under_load_every_request_still_succeeds(
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """4 threads x 300 cached reads; Redis is killed a third of the way in: all 1,200 answer."""
    url, server = own_redis
    breaker = CircuitBreaker(name="redis", fail_max=3, reset_timeout=60)
    backend = RedisBackend(url, prefix="load", breaker=breaker)
    cache = Cache(backend, namespace="load")

    @cache.cached()
    def square(n: int) -> int:
        return n * n

    answers: list[bool] = []
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        for i in range(300):
            if index == 0 and i == 100:
                server.kill()
                server.wait()
            try:
                answers.append(square(i % 50) == (i % 50) ** 2)
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    backend.close()

    assert errors == []
    assert answers == [True] * 1_200
    assert breaker.state == "open"
    assert breaker.stats.rejections > 0  # later calls never tried the dead server
    assert cache.stats.errors >= breaker.stats.rejections


def test_an_l2_hit_lives_in_l1_no_longer_than_in_l2(redis_url: str, redis_prefix: str) -> None:
    """A copy into L1 takes the entry's remaining TTL when that is shorter than l1_ttl."""
    clock = FakeClock()
    backend = _tiered(redis_url, redis_prefix, l1=MemoryBackend(clock=clock), l1_ttl=30)
    writer = RedisBackend(redis_url, prefix=redis_prefix, codec=codec())
    try:
        writer.set("ns:short", "v", ttl=2, tags=(), token=writer.fill_token())

        assert backend.get("ns:short") == "v"  # from L2, copied into L1
        assert backend.l1.get("ns:short") == "v"
        clock.advance(2.5)  # past the L2 entry's TTL on L1's clock, well within l1_ttl
        assert backend.l1.get("ns:short") is MISSING
    finally:
        writer.close()
        backend.close()
