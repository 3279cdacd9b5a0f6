"""
perfkit.cache: the decorator, keys and tags, freshness, single-flight, fail-open.

These run on the in-process backend; tests/test_cache_backends.py runs the
shared backend contract on memory, Redis and tiered backends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Collection
from typing import Any

import pytest

from perfkit.cache import Cache, MemoryBackend
from perfkit.testing import FakeClock

# -- keys, hits and invalidation ------------------------------------------------------


def test_second_call_is_a_hit(cache: Cache) -> None:
    """The loader runs once per key; later calls are hits."""
    calls: list[int] = []

    @cache.cached()
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    assert [square(3), square(3), square(n=3), square(4)] == [9, 9, 9, 16]
    assert calls == [3, 4]
    assert (cache.stats.hits, cache.stats.misses, cache.stats.loads) == (2, 2, 2)


def test_default_key_names_function_and_arguments(cache: Cache) -> None:
    """Default keys hold the qualified name and the arguments, kwargs or not."""

    @cache.cached()
    def find(name: str, limit: int = 5) -> str:
        return name

    key = find.key_for("ada")
    assert key == find.key_for(name="ada", limit=5)
    assert key.startswith("t:test_cache.")
    assert key.endswith("find('ada',5)")
    assert find.key_for("5") != find.key_for(5)  # type: ignore[arg-type]


def test_template_keys_and_invalidate(cache: Cache) -> None:
    """invalidate(args) drops exactly that entry."""
    db = {1: "one", 2: "two"}

    @cache.cached(key="num:{n}")
    def get(n: int) -> str:
        return db[n]

    get(1), get(2)
    db[1], db[2] = "uno", "dos"
    get.invalidate(1)

    assert (get(1), get(2)) == ("uno", "two")
    assert get.key_for(1) == "t:num:1"


def test_tags_from_arguments_and_results(cache: Cache) -> None:
    """Entries carry argument and result tags; invalidating a tag drops them all."""
    db = {"a": {"owner": 7}, "b": {"owner": 8}}

    @cache.cached(tags=["doc:{name}"], result_tags=lambda d: [f"owner:{d['owner']}"])
    def doc(name: str) -> dict[str, int]:
        return dict(db[name])

    doc("a"), doc("b")
    db["a"] = {"owner": 9}
    db["b"] = {"owner": 10}
    cache.invalidate_tags("owner:7")

    assert doc("a") == {"owner": 9}
    assert doc("b") == {"owner": 8}
    cache.invalidate_tags("doc:b")
    assert doc("b") == {"owner": 10}


def test_methods_do_not_key_on_self(cache: Cache) -> None:
    """Two instances share entries: self is not part of the key."""
    loads: list[int] = []

    class Store:
        @cache.cached()
        def get(self, n: int) -> int:
            loads.append(n)
            return n

    assert (Store().get(1), Store().get(1)) == (1, 1)
    assert loads == [1]
    Store().get.invalidate(1)
    assert Store().get(1) == 1
    assert loads == [1, 1]


def test_unkeyable_arguments_need_an_explicit_key(cache: Cache) -> None:
    """A default key refuses arguments it cannot name, and variadic functions."""

    @cache.cached()
    def first(items: list[int]) -> int:
        return items[0]

    with pytest.raises(TypeError, match="pass key="):
        first([1])
    with pytest.raises(TypeError, match=r"\*args"):

        @cache.cached()
        def total(*items: int) -> int:
            return sum(items)


def test_none_is_cached_with_its_own_ttl(cache: Cache, clock: FakeClock) -> None:
    """None results live none_ttl seconds; cache_none=False never stores them."""
    loads: list[str] = []

    @cache.cached(none_ttl=2)
    def lookup(name: str) -> str | None:
        loads.append(name)
        return None

    @cache.cached(cache_none=False)
    def lookup_uncached(name: str) -> str | None:
        loads.append("u" + name)
        return None

    lookup("x"), lookup("x"), lookup_uncached("x"), lookup_uncached("x")
    clock.advance(3)
    lookup("x")

    assert loads == ["x", "ux", "ux", "x"]


def test_ttl_expiry_and_jitter(clock: FakeClock) -> None:
    """Entries expire after ttl; jitter only ever shortens it."""
    cache = Cache(MemoryBackend(clock=clock), namespace="j", ttl=10, jitter=0.5, clock=clock)
    loads: list[int] = []

    @cache.cached()
    def get(n: int) -> int:
        loads.append(n)
        return n

    for n in range(50):
        get(n)
    clock.advance(4.9)
    for n in range(50):
        get(n)
    assert len(loads) == 50  # nothing expires before ttl * (1 - jitter)
    clock.advance(5.2)
    for n in range(50):
        get(n)
    assert len(loads) == 100  # everything expires by ttl


@pytest.mark.parametrize(
    "kwargs",
    [{"ttl": 0}, {"jitter": 1.0}, {"jitter": -0.1}, {"namespace": ""}, {"namespace": "a:b"}],
)
def test_bad_cache_options(kwargs: dict[str, Any]) -> None:
    """Nonsense options fail at construction with a clear ValueError."""
    with pytest.raises(ValueError):
        Cache(MemoryBackend(), **kwargs)


# -- freshness: no stale value after a committed write ---------------------------------


def test_fill_race_cannot_store_the_old_value(cache: Cache) -> None:
    """A slow read that loaded the old row before a write does not store it after."""
    db = {"v": "old"}
    loaded = threading.Event()
    resume = threading.Event()

    @cache.cached(key="v")
    def read() -> str:
        value = db["v"]
        loaded.set()
        resume.wait(5)
        return value

    results: list[str] = []
    reader = threading.Thread(target=lambda: results.append(read()))
    reader.start()
    assert loaded.wait(5)
    db["v"] = "new"  # the write commits...
    cache.invalidate_keys("v")  # ...then invalidates
    resume.set()
    reader.join()

    assert results == ["old"]  # the racing read itself saw the old row
    assert read() == "new"  # but it did not put it back in the cache
    assert cache.stats.stale == 1


def test_fill_race_through_a_result_tag(cache: Cache) -> None:
    """The fence covers tags known only from the loaded value."""
    db = {"owner": "ann"}
    loaded, resume = threading.Event(), threading.Event()

    @cache.cached(key="doc", result_tags=lambda v: [f"user:{v}"])
    def doc() -> str:
        value = db["owner"]
        loaded.set()
        resume.wait(5)
        return value

    reader = threading.Thread(target=doc)
    reader.start()
    assert loaded.wait(5)
    db["owner"] = "bob"
    cache.invalidate_tags("user:ann")
    resume.set()
    reader.join()

    assert doc() == "bob"


def test_fill_slower_than_max_load_is_not_stored(clock: FakeClock) -> None:
    """A load that took longer than the backend's max_load is served but not cached."""
    backend = MemoryBackend(clock=clock, max_load=1.0)
    cache = Cache(backend, namespace="slow", clock=clock)
    loads: list[int] = []

    @cache.cached()
    def slow(n: int) -> int:
        loads.append(n)
        clock.advance(2)
        return n

    slow(1), slow(1)
    assert loads == [1, 1]
    assert len(backend) == 0


# -- single-flight -------------------------------------------------------------------


def test_concurrent_misses_in_threads_load_once(cache: Cache) -> None:
    """100 threads missing one key at once run the loader exactly once."""
    gate = threading.Event()
    loads: list[int] = []

    @cache.cached()
    def get(n: int) -> int:
        loads.append(n)
        gate.wait(5)
        return n * 2

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(get(21))) for _ in range(100)]
    for thread in threads:
        thread.start()
    while cache.stats.misses < 100:
        threading.Event().wait(0.001)
    gate.set()
    for thread in threads:
        thread.join()

    assert loads == [21]
    assert results == [42] * 100


@pytest.mark.anyio
async def test_concurrent_misses_in_tasks_load_once(cache: Cache) -> None:
    """100 tasks missing one key at once run the coroutine exactly once."""
    gate = asyncio.Event()
    loads: list[int] = []

    @cache.cached()
    async def get(n: int) -> int:
        loads.append(n)
        await gate.wait()
        return n * 2

    tasks = [asyncio.create_task(get(21)) for _ in range(100)]
    while cache.stats.misses < 100:
        await asyncio.sleep(0)
    gate.set()

    assert await asyncio.gather(*tasks) == [42] * 100
    assert loads == [21]
    assert await get(21) == 42
    assert cache.stats.hits == 1


def test_followers_after_an_invalidation_do_not_join_an_old_load(cache: Cache) -> None:
    """A miss that starts after a write does not wait for a load that began before it."""
    db = {"v": "old"}
    loaded, resume = threading.Event(), threading.Event()

    @cache.cached(key="v")
    def read() -> str:
        value = db["v"]
        if value == "old":
            loaded.set()
            resume.wait(5)
        return value

    first = threading.Thread(target=read)
    first.start()
    assert loaded.wait(5)
    db["v"] = "new"
    cache.invalidate_keys("v")

    assert read() == "new"  # did not join the in-flight load of "old"
    resume.set()
    first.join()


def test_loader_errors_reach_every_waiter_and_are_not_cached(cache: Cache) -> None:
    """A failing load raises in the leader and the followers; the next call retries."""
    gate = threading.Event()
    attempts: list[int] = []

    @cache.cached()
    def flaky(n: int) -> int:
        attempts.append(n)
        if len(attempts) == 1:
            gate.wait(5)
            raise LookupError("db down")
        return n

    errors: list[BaseException] = []

    def call() -> None:
        try:
            flaky(1)
        except LookupError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
    while cache.stats.misses < 5:
        threading.Event().wait(0.001)
    gate.set()
    for thread in threads:
        thread.join()

    assert len(errors) == 5
    assert flaky(1) == 1
    assert attempts == [1, 1]


@pytest.mark.anyio
async def test_cancelled_leader_hands_over_to_a_follower(cache: Cache) -> None:
    """When the leading task is cancelled, a waiting task loads instead."""
    started = asyncio.Event()
    calls: list[int] = []

    @cache.cached()
    async def get(n: int) -> int:
        calls.append(n)
        started.set()
        if len(calls) == 1:
            await asyncio.sleep(10)
        return n

    leader = asyncio.create_task(get(5))
    await started.wait()
    follower = asyncio.create_task(get(5))
    await asyncio.sleep(0)
    leader.cancel()

    assert await follower == 5
    assert calls == [5, 5]
    with pytest.raises(asyncio.CancelledError):
        await leader


@pytest.mark.anyio
async def test_async_invalidate_and_tags(cache: Cache) -> None:
    """Async functions get an awaitable invalidate; tags work the same."""
    db = {1: "a"}

    @cache.cached(tags=["n:{n}"])
    async def get(n: int) -> str:
        return db[n]

    assert await get(1) == "a"
    db[1] = "b"
    await get.invalidate(1)
    assert await get(1) == "b"
    db[1] = "c"
    await cache.ainvalidate_tags("n:1")
    assert await get(1) == "c"


# -- failing backends ----------------------------------------------------------------


class FlakyBackend(MemoryBackend):
    """A memory backend whose every operation can be made to fail."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("backend unreachable")

    def get(self, key: str) -> Any:
        self._check()
        return super().get(key)

    def fill_token(self) -> int:
        self._check()
        return super().fill_token()

    def set(self, key: str, value: Any, *, ttl: float, tags: Collection[str], token: int) -> bool:
        self._check()
        return super().set(key, value, ttl=ttl, tags=tags, token=token)

    def invalidate(self, *, keys: Collection[str] = (), tags: Collection[str] = ()) -> None:
        self._check()
        super().invalidate(keys=keys, tags=tags)


def test_backend_down_serves_from_the_loader_and_logs_once(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With the backend failing, calls still answer; errors are counted, logged once."""
    backend = FlakyBackend(clock)
    cache = Cache(backend, namespace="f", clock=clock, log_interval=60)

    @cache.cached()
    def get(n: int) -> int:
        return n + 1

    backend.down = True
    with caplog.at_level(logging.WARNING, logger="perfkit.cache"):
        results = [get(1) for _ in range(10)]

    assert results == [2] * 10
    assert cache.stats.errors == 10
    assert len(caplog.records) == 1
    assert "unreachable" in caplog.records[0].getMessage()


def test_invalidation_lost_while_down_is_replayed_before_serving(clock: FakeClock) -> None:
    """An invalidation the backend missed is kept; reads bypass the cache until it lands."""
    backend = FlakyBackend(clock)
    cache = Cache(backend, namespace="p", clock=clock)
    db = {"v": "old"}

    @cache.cached(key="v")
    def read() -> str:
        return db["v"]

    assert read() == "old"  # cached
    backend.down = True
    db["v"] = "new"
    cache.invalidate_keys("v")  # fails: the backend still holds "old"
    assert read() == "new"  # replay fails too: bypass the cache
    backend.down = False

    assert read() == "new"  # replays are rate-limited: still bypassing
    assert cache.stats.bypassed == 2
    clock.advance(1.1)
    assert read() == "new"  # replayed; served through the cache again
    assert read() == "new"
    assert cache.pending_invalidations == 0
    assert (cache.stats.bypassed, cache.stats.hits) == (2, 1)
