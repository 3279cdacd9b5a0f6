"""
Cache hit cost against peers, in one process.

* memory: perfkit ``Cache(MemoryBackend)`` hit vs ``cachetools.cached`` on a
  ``TTLCache`` with a lock (the same thread-safety perfkit gives), with a
  dict value (perfkit copies it on every hit, so no caller shares it) and a
  frozen record (shared as it is), with the default key and a key template,
  and on a method;
* tiered: perfkit ``TieredBackend`` L1 hit vs the memory hit, same run;
* redis: perfkit ``RedisBackend`` hit vs a hand-written ``GET`` + ``json.loads``;
* async: perfkit memory hit of a coroutine function vs aiocache's
  ``@cached`` on its ``SimpleMemoryCache``.

Each figure is ns per call: the minimum and the median of several repeats, the
variants of a row interleaved round by round; ratios are of the minima (the least
disturbed runs), medians beside them.
``--instructions`` counts instructions per hit with callgrind instead (the
in-process rows), for when this machine's timings move more than the gap.
Usage: ``python benchmarks/cache_hit.py [--redis URL] [--number N] [--instructions]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
import timeit
import uuid
import warnings
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import cachetools

from perfkit.cache import Cache, MemoryBackend, RedisBackend, TieredBackend

REPEATS = 9
TARGETS = {
    "memory": 0.5,  # x cachetools+lock
    "async": 0.05,  # x aiocache memory
    "tiered": 1.5,  # x perfkit memory hit
    "redis": 1.15,  # x GET + json.loads
}


@dataclass(frozen=True, slots=True)
class Record:
    id: int
    name: str


Timing = tuple[float, float]


def interleaved(runs: dict[str, Callable[[], float]]) -> dict[str, Timing]:
    """
    (min, median) ns per call of each variant over REPEATS rounds.

    Each round runs every variant once, in a rotating order, so a slow stretch of
    the machine hits all of them rather than whichever happened to run then.
    """
    samples: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for round_ in range(REPEATS):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            samples[name].append(runs[name]())
    return {name: (min(v), statistics.median(v)) for name, v in samples.items()}


def calls(fn: Callable[[], object], number: int) -> Callable[[], float]:
    """One run of *number* calls of *fn*: ns per call."""
    timer = timeit.Timer(fn)
    return lambda: timer.timeit(number) / number * 1e9


def awaits(
    loop: asyncio.AbstractEventLoop, make: Callable[[], Coroutine[Any, Any, object]], number: int
) -> Callable[[], float]:
    """One run of *number* ``await make()`` in *loop*: ns per await."""

    async def run() -> float:
        start = time.perf_counter()
        for _ in range(number):
            await make()
        return (time.perf_counter() - start) / number * 1e9

    return lambda: loop.run_until_complete(run())


def _peer() -> Callable[[int], dict[str, int]]:
    @cachetools.cached(cachetools.TTLCache(maxsize=10_000, ttl=3600), lock=threading.Lock())
    def cachetools_get(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    return cachetools_get


def _memory_functions() -> dict[str, Callable[[int], object]]:
    """The cached functions the memory rows (and their callgrind children) call."""
    cache = Cache(MemoryBackend(maxsize=10_000), namespace="bench", ttl=3600)

    @cache.cached()
    def dict_get(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @cache.cached()
    def record_get(user_id: int) -> Record:
        return Record(user_id, "ada")

    @cache.cached(key="user:{user_id}")
    def template_get(user_id: int) -> Record:
        return Record(user_id, "ada")

    @cache.cached()
    async def async_get(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    class Store:
        @cache.cached(key="m:{user_id}")
        def get(self, user_id: int) -> Record:
            return Record(user_id, "ada")

    return {
        "dict": dict_get,
        "record": record_get,
        "template": template_get,
        "method": Store().get,
        "async": async_get,
        "cachetools": _peer(),
    }


def memory_rows(number: int) -> list[tuple[str, Timing, Timing, str]]:
    f = _memory_functions()
    dict_get, record_get, template_get = f["dict"], f["record"], f["template"]
    store_get, peer = f["method"], f["cachetools"]
    for fn in (dict_get, record_get, template_get, store_get, peer):
        fn(7)
    t = interleaved(
        {
            "dict": calls(lambda: dict_get(7), number),
            "record": calls(lambda: record_get(7), number),
            "template": calls(lambda: template_get(7), number),
            "method": calls(lambda: store_get(7), number),
            "peer": calls(lambda: peer(7), number),
        }
    )
    return [
        ("dict, default key", t["dict"], t["peer"], "memory"),
        ("frozen record, default key", t["record"], t["peer"], ""),
        ("frozen record, key template", t["template"], t["peer"], ""),
        ("method, key template", t["method"], t["peer"], ""),
    ]


def tiered_row(url: str, number: int) -> tuple[Timing, Timing]:
    backend = TieredBackend(RedisBackend(url, prefix=f"bench-{uuid.uuid4().hex[:8]}"))
    assert backend.wait_subscribed(5)
    tiered = Cache(backend, namespace="bench", ttl=3600)
    memory = Cache(MemoryBackend(maxsize=10_000), namespace="bench", ttl=3600)

    @tiered.cached()
    def tiered_get(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @memory.cached()
    def memory_get(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    tiered_get(7), memory_get(7)
    try:
        t = interleaved(
            {
                "tiered": calls(lambda: tiered_get(7), number),
                "memory": calls(lambda: memory_get(7), number),
            }
        )
        return t["tiered"], t["memory"]
    finally:
        backend.clear()
        backend.close()


def redis_row(url: str, number: int) -> tuple[Timing, Timing]:
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
        t = interleaved(
            {"perfkit": calls(lambda: perfkit_get(7), number), "raw": calls(raw_get, number)}
        )
        return t["perfkit"], t["raw"]
    finally:
        backend.clear()
        client.delete("bench-raw:user:7")
        client.close()
        backend.close()


def async_row(number: int) -> tuple[Timing, Timing]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # aiocache's own deprecation warnings
        import aiocache  # noqa: PLC0415

    cache = Cache(MemoryBackend(maxsize=10_000), namespace="bench", ttl=3600)

    @cache.cached()
    async def perfkit_get(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @aiocache.cached(ttl=3600, cache=aiocache.SimpleMemoryCache)
    async def aiocache_get(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    async def warm() -> None:
        await perfkit_get(7)
        await aiocache_get(7)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(warm())
        t = interleaved(
            {
                "perfkit": awaits(loop, lambda: perfkit_get(7), number),
                "aiocache": awaits(loop, lambda: aiocache_get(7), max(1, number // 10)),
            }
        )
    finally:
        loop.close()
    return t["perfkit"], t["aiocache"]


def _child(variant: str, count: int) -> None:
    """Set up *variant*, then run *count* hits (the body of one callgrind run)."""
    functions = _memory_functions()
    if variant in ("async", "aiocache"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import aiocache  # noqa: PLC0415

        @aiocache.cached(ttl=3600, cache=aiocache.SimpleMemoryCache)
        async def aiocache_get(user_id: int) -> dict[str, int]:
            return {"id": user_id}

        fn: Any = functions["async"] if variant == "async" else aiocache_get

        async def loop() -> None:
            for _ in range(count + 1):
                await fn(7)

        asyncio.run(loop())
        return
    sync = functions[variant]
    for _ in range(count + 1):
        sync(7)


INSTRUCTION_ROWS = [
    ("memory, dict, default key / cachetools+lock", "dict", "cachetools", "memory"),
    ("memory, frozen record, default key / cachetools+lock", "record", "cachetools", ""),
    ("async memory / aiocache SimpleMemoryCache", "async", "aiocache", "async"),
]


def instructions(number: int) -> None:
    import callgrind  # noqa: PLC0415 - the benchmarks directory is on sys.path

    counts = callgrind.per_iteration(
        __file__, ["dict", "record", "cachetools", "async", "aiocache"], number
    )
    print(f"instructions per hit (callgrind, ({3 * number:,} - {number:,}) / {2 * number:,})\n")
    print("| hit | perfkit | peer | perfkit / peer | target |")
    print("|---|--:|--:|--:|---|")
    for label, ours, peer, target in INSTRUCTION_ROWS:
        ratio = counts[ours] / counts[peer]
        goal = TARGETS.get(target)
        verdict = "" if goal is None else f"≤ {goal} {'met' if ratio <= goal else 'NOT met'}"
        print(f"| {label} | {counts[ours]:,.0f} | {counts[peer]:,.0f} | {ratio:.2f} | {verdict} |")


def row(label: str, ours: Timing, peer: Timing, target: str) -> str:
    ratio = ours[0] / peer[0]
    goal = TARGETS.get(target)
    verdict = "" if goal is None else (f"≤ {goal} {'met' if ratio <= goal else 'NOT met'}")
    return (
        f"| {label} | {ours[0]:,.0f} ({ours[1]:,.0f}) ns | {peer[0]:,.0f} ({peer[1]:,.0f}) ns "
        f"| {ratio:.2f} ({ours[1] / peer[1]:.2f}) | {verdict} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="")
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return
    if args.instructions:
        instructions(min(args.number, 2_000))
        return
    print(f"min (median) of {REPEATS} repeats; ratio of minima (of medians)\n")
    print("| hit | perfkit | peer | perfkit / peer | target |")
    print("|---|--:|--:|--:|---|")
    for label, ours, peer, target in memory_rows(args.number):
        print(row(f"memory, {label} / cachetools+lock", ours, peer, target))
    ours, peer = async_row(args.number)
    print(row("async memory / aiocache SimpleMemoryCache", ours, peer, "async"))
    if args.redis:
        ours, peer = tiered_row(args.redis, args.number)
        print(row("tiered (L1) / perfkit memory", ours, peer, "tiered"))
        ours, peer = redis_row(args.redis, max(1, args.number // 10))
        print(row("Redis / GET + json.loads", ours, peer, "redis"))


if __name__ == "__main__":
    main()
