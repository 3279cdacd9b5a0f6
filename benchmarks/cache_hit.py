"""
Cache hit cost against peers, in one process.

* memory: perfkit ``Cache(MemoryBackend)`` hit vs ``cachetools.cached`` on a
  ``TTLCache`` with a lock (the same thread-safety perfkit gives);
* redis: perfkit ``RedisBackend`` hit vs a hand-written ``GET`` + ``json.loads``;
* tiered: perfkit ``TieredBackend`` L1 hit vs the same cachetools peer.

Prints the median of several repeats (ns per call) and the ratio perfkit/peer.
Usage: ``python benchmarks/cache_hit.py [--redis URL]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import timeit
import uuid
from collections.abc import Callable

import cachetools

from perfkit.cache import Cache, MemoryBackend, RedisBackend, TieredBackend

REPEATS = 7


def per_call_ns(fn: Callable[[], object], number: int) -> float:
    timer = timeit.Timer(fn)
    return statistics.median(t / number * 1e9 for t in timer.repeat(REPEATS, number))


def memory(number: int) -> tuple[float, float]:
    cache = Cache(MemoryBackend(maxsize=10_000), namespace="bench", ttl=3600)

    @cache.cached()
    def perfkit_get(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @cachetools.cached(cachetools.TTLCache(maxsize=10_000, ttl=3600), lock=threading.Lock())
    def cachetools_get(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    perfkit_get(7), cachetools_get(7)
    ours = per_call_ns(lambda: perfkit_get(7), number)
    peer = per_call_ns(lambda: cachetools_get(7), number)
    return ours, peer


def redis_hit(url: str, number: int) -> tuple[float, float]:
    import redis  # noqa: PLC0415 - only this benchmark needs it

    backend = RedisBackend(url, prefix=f"bench-{uuid.uuid4().hex[:8]}")
    cache = Cache(backend, namespace="bench", ttl=3600)
    client = redis.Redis.from_url(url)
    client.set("bench-raw:user:7", json.dumps({"id": 7}))

    @cache.cached()
    def perfkit_get(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    def raw_get() -> object:
        raw = client.get("bench-raw:user:7")
        return json.loads(raw) if raw is not None else None

    perfkit_get(7)
    try:
        ours = per_call_ns(lambda: perfkit_get(7), number)
        peer = per_call_ns(raw_get, number)
    finally:
        backend.clear()
        client.delete("bench-raw:user:7")
        client.close()
        backend.close()
    return ours, peer


def tiered_hit(url: str, number: int) -> tuple[float, float]:
    backend = TieredBackend(RedisBackend(url, prefix=f"bench-{uuid.uuid4().hex[:8]}"))
    assert backend.wait_subscribed(5)
    cache = Cache(backend, namespace="bench", ttl=3600)

    @cache.cached()
    def perfkit_get(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @cachetools.cached(cachetools.TTLCache(maxsize=10_000, ttl=3600), lock=threading.Lock())
    def cachetools_get(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    perfkit_get(7), cachetools_get(7)
    try:
        ours = per_call_ns(lambda: perfkit_get(7), number)
        peer = per_call_ns(lambda: cachetools_get(7), number)
    finally:
        backend.clear()
        backend.close()
    return ours, peer


def row(label: str, ours: float, peer: float) -> str:
    return f"| {label} | {ours:,.0f} ns | {peer:,.0f} ns | {ours / peer:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="")
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    print("| hit | perfkit | peer | perfkit / peer |")
    print("|---|--:|--:|--:|")
    print(row("memory vs cachetools+lock", *memory(args.number)))
    if args.redis:
        print(row("Redis vs GET+json.loads", *redis_hit(args.redis, max(1, args.number // 10))))
        print(row("tiered (L1) vs cachetools+lock", *tiered_hit(args.redis, args.number)))


if __name__ == "__main__":
    main()
