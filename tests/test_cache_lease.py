"""
Cross-process single-flight: a lease in Redis makes misses in different processes load once.

Two ``Cache`` objects with their own Redis clients stand for two processes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from perfkit.cache import Cache, RedisBackend


@pytest.fixture
def backends(redis_url: str, redis_prefix: str) -> Iterator[list[RedisBackend]]:
    made = [RedisBackend(redis_url, prefix=redis_prefix) for _ in range(2)]
    yield made
    for backend in made:
        backend.close()


def test_misses_in_two_processes_load_once(backends: list[RedisBackend]) -> None:
    """Sixteen threads over two caches miss one key at once: one load in all."""
    caches = [Cache(backend, namespace="lease", lease=5) for backend in backends]
    loads: list[int] = []
    barrier = threading.Barrier(16)

    def slow_load(n: int) -> int:
        loads.append(n)
        time.sleep(0.1)  # a real query's duration, so the others arrive meanwhile
        return n * 10

    functions = [cache.cached(key="item:{n}")(slow_load) for cache in caches]
    results: list[int] = []

    def call(index: int) -> None:
        barrier.wait()
        results.append(functions[index % 2](4))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert loads == [4]
    assert results == [40] * 16


def test_a_dead_holder_blocks_nobody_past_its_lease(backends: list[RedisBackend]) -> None:
    """A lease whose holder died (never released) expires; the next miss loads."""
    cache = Cache(backends[0], namespace="lease", lease=5)

    @cache.cached(key="item:{n}")
    def load(n: int) -> int:
        return n

    key = load.key_for(9)
    assert backends[1].leases.acquire(key, 0.3) is not None  # taken, never given back

    assert load(9) == 9  # waited for the dead holder's lease to expire, then loaded
    assert cache.stats.loads == 1
    assert not backends[0].leases.held(key)


def test_a_released_lease_without_a_value_lets_the_waiter_load(
    backends: list[RedisBackend],
) -> None:
    """When the holder gives up without storing, a waiter takes over at once."""
    cache = Cache(backends[0], namespace="lease", lease=30)

    @cache.cached(key="item:{n}")
    def load(n: int) -> int:
        return n + 1

    key = load.key_for(1)
    holder = backends[1].leases.acquire(key, 30)
    assert holder is not None
    threading.Timer(0.1, backends[1].leases.release, args=(key, holder)).start()

    assert load(1) == 2  # loaded by the waiter once the lease was given back
    assert cache.stats.loads == 1


@pytest.mark.anyio
async def test_async_misses_in_two_processes_load_once(backends: list[RedisBackend]) -> None:
    """Tasks over two caches miss one key at once: one load in all."""
    caches = [Cache(backend, namespace="alease", lease=5) for backend in backends]
    loads: list[int] = []

    async def slow_load(n: int) -> int:
        loads.append(n)
        await asyncio.sleep(0.1)
        return n * 10

    functions = [cache.cached(key="item:{n}")(slow_load) for cache in caches]
    try:
        results = await asyncio.gather(*(functions[i % 2](3) for i in range(10)))
    finally:
        for backend in backends:
            await backend.aclose()

    assert loads == [3]
    assert results == [30] * 10


def test_lease_must_be_positive(backends: list[RedisBackend]) -> None:
    """A zero or negative lease is refused."""
    with pytest.raises(ValueError, match="lease"):
        Cache(backends[0], namespace="x", lease=0)
