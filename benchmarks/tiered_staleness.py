"""
How long a tiered cache serves stale values after a write, across processes, under load.

Two processes, spawned, each with its own ``TieredBackend(RedisBackend(...))`` on one
key prefix (their own L1s and listener threads, as two workers would have) and a
``Cache`` with a cached ``read(item)`` whose loader reads the source of truth: a
plain Redis key ``<prefix>:src:<item>`` holding an integer version, read with a
separate client. The writer process writes N times over a few items (``INCR`` the
version, then ``cache.invalidate(keys=...)``) while two reader threads of its own
read the same items; the other process runs K reader threads. Every read records
when it began and the version it saw; every write records when its invalidation
returned. ``time.monotonic()`` is CLOCK_MONOTONIC, one clock for both processes.

A read is stale if it began after the invalidation of a version newer than the one
it saw had returned. Per write, the staleness window in a process is the latest
beginning of a read there that saw an older version, minus the time the write's
invalidation returned (0 if there is none). Delivery is from the invalidation's
return to the process's listener having dropped the key from L1 (``on_message``).
Readers stop once they have seen every item's final version. Without delivery L1's
TTL is the bound: the "delivery lost" run points the other process's listener at a
channel nobody publishes on, with ``l1_ttl`` of a second.

Usage: ``python benchmarks/tiered_staleness.py [--redis URL] [--writes N] [--readers K]``
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing
import pickle
import random
import statistics
import sys
import tempfile
import threading
import time
import traceback
import uuid
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import redis

from perfkit.cache import Cache, RedisBackend, TieredBackend

DEFAULT_REDIS: Final = "redis://127.0.0.1:6379/0"
NAMESPACE: Final = "staleness"
CHECK_EVERY: Final = 256  # reads between two looks at the "writes done" event


@dataclass(frozen=True, slots=True)
class Config:
    """What one run does; both processes get a copy."""

    redis_url: str
    prefix: str
    items: int
    writes: int
    readers: int
    writer_readers: int
    l1_ttl: float
    lose_delivery: bool
    deadline: float  # seconds after the last write by which readers must have converged
    switch_interval: float = 0.005  # sys.setswitchinterval in both processes (CPython's default)


@dataclass(slots=True)
class Side:
    """What one process recorded."""

    role: str
    writes: list[tuple[int, int, float]] = field(default_factory=list)  # item, version, returned
    starts: list[bytes] = field(default_factory=list)  # per reader thread: array("d")
    seen: list[bytes] = field(default_factory=list)  # per reader thread: array("q"), item<<32|ver
    converged: list[bool] = field(default_factory=list)
    final_seen: list[int] = field(default_factory=list)
    deliveries: list[tuple[int, float]] = field(default_factory=list)  # item, applied at
    error: str | None = None


def source_key(prefix: str, item: int) -> str:
    """The Redis key holding the version of *item* (the source of truth)."""
    return f"{prefix}:src:{item}"


def _reader(
    read: Callable[[int], int],
    config: Config,
    seed: int,
    done: Any,
    finals: Any,
    starts: array[float],
    seen: array[int],
) -> bool:
    """Read random items until every final version has been seen; False on the deadline."""
    rng = random.Random(seed)
    items = config.items
    clock = time.monotonic
    pending: set[int] | None = None
    final: tuple[int, ...] = ()
    deadline = 0.0
    n = 0
    while True:
        item = rng.randrange(items)
        start = clock()
        version = read(item)
        starts.append(start)
        seen.append(item << 32 | version)
        n += 1
        if pending is None:
            if n % CHECK_EVERY == 0 and done.is_set():
                final = tuple(finals)
                pending = set(range(items))
                deadline = clock() + config.deadline
        else:
            if version >= final[item]:
                pending.discard(item)
                if not pending:
                    return True
            if clock() > deadline:
                return False


def _process(role: str, config: Config, barrier: Any, done: Any, finals: Any, out: str) -> None:
    """One worker: the writer (and its own readers) or the other process's readers."""
    sys.setswitchinterval(config.switch_interval)
    side = Side(role)
    try:
        _work(side, config, barrier, done, finals)
    except BaseException:
        side.error = traceback.format_exc()
        barrier.abort()
        done.set()  # the other side's readers stop at once (finals stay 0)
        raise
    finally:
        # Plain builtins: this module is __mp_main__ here when run as a script.
        Path(out).write_bytes(pickle.dumps(dataclasses.asdict(side)))


def _work(side: Side, config: Config, barrier: Any, done: Any, finals: Any) -> None:
    items: dict[str, int] = {}  # backend key -> item, filled once the cache exists

    def on_message(keys: list[str], _tags: list[str]) -> None:
        now = time.monotonic()
        side.deliveries.extend((items[key], now) for key in keys if key in items)

    writer = side.role == "writer"
    extra = {} if writer or not config.lose_delivery else {"channel": f"{config.prefix}:nowhere"}
    backend = TieredBackend(
        RedisBackend(config.redis_url, prefix=config.prefix),
        l1_ttl=config.l1_ttl,
        on_message=on_message,
        **extra,
    )
    source = redis.Redis.from_url(config.redis_url)
    cache = Cache(backend, namespace=NAMESPACE, ttl=3600)
    items.update((cache.key(f"item:{i}"), i) for i in range(config.items))

    @cache.cached(key="item:{item}")
    def read(item: int) -> int:
        return int(source.get(source_key(config.prefix, item)) or 0)

    try:
        if not backend.wait_subscribed(10):
            raise RuntimeError(f"{side.role}: not subscribed within 10 s")
        for item in range(config.items):
            read(item)
        barrier.wait(30)

        threads = config.writer_readers if writer else config.readers
        columns = [(array("d"), array("q")) for _ in range(threads)]
        converged = [False] * threads

        def reader(index: int) -> None:
            starts, seen = columns[index]
            seed = index + (0 if writer else 1_000)
            converged[index] = _reader(read, config, seed, done, finals, starts, seen)

        pool = [threading.Thread(target=reader, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        if writer:
            rng = random.Random(12)
            last = [0] * config.items
            for _ in range(config.writes):
                item = rng.randrange(config.items)
                version = int(source.incr(source_key(config.prefix, item)))
                cache.invalidate(keys=[f"item:{item}"])
                side.writes.append((item, version, time.monotonic()))
                last[item] = version
            finals[:] = last
            done.set()
        for thread in pool:
            thread.join()
        side.converged = converged
        side.starts = [starts.tobytes() for starts, _ in columns]
        side.seen = [seen.tobytes() for _, seen in columns]
        side.final_seen = [read(item) for item in range(config.items)]
    finally:
        backend.close()
        source.close()


def run_processes(config: Config) -> tuple[Side, Side]:
    """Run the writer and the reader process once; return what each recorded."""
    source = redis.Redis.from_url(config.redis_url)
    try:
        source.delete(*(source_key(config.prefix, i) for i in range(config.items)))
    finally:
        source.close()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    done = context.Event()
    finals = context.Array("q", config.items)
    with tempfile.TemporaryDirectory(prefix="perfkit-staleness-") as tmp:
        outs = {role: str(Path(tmp, f"{role}.pickle")) for role in ("writer", "reader")}
        procs = [
            context.Process(
                target=_process,
                args=(role, config, barrier, done, finals, out),
                name=f"staleness-{role}",
            )
            for role, out in outs.items()
        ]
        for proc in procs:
            proc.start()
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(60)  # broken: a process failed, its error is in its output
        budget = time.monotonic() + 120 + config.deadline
        for proc in procs:
            proc.join(max(0.0, budget - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        sides = []
        for role, out in outs.items():
            path = Path(out)
            if not path.exists():
                raise RuntimeError(f"the {role} process died without output")
            side = Side(**pickle.loads(path.read_bytes()))
            if side.error is not None:
                raise RuntimeError(f"the {role} process failed:\n{side.error}")
            sides.append(side)
    writer, reader = sides
    return writer, reader


@dataclass(frozen=True, slots=True)
class Staleness:
    """One process's figures against the writer's writes."""

    threads: int
    reads: int
    stale_reads: int
    stale_writes: int  # writes with at least one stale read after them
    windows: list[float]  # per write, seconds (0 when none)
    deliveries: list[float]  # per write, seconds from return to this process's L1 drop
    undelivered: int
    converged: bool
    final_ok: bool


def analyse(writer: Side, side: Side, finals: Sequence[int]) -> Staleness:
    """Stale reads and per-write windows of *side* against *writer*'s writes."""
    returned: dict[int, list[float]] = {}  # item -> return time of version v+1 at index v
    for item, version, at in writer.writes:
        times = returned.setdefault(item, [])
        if version != len(times) + 1:
            raise RuntimeError(f"item {item}: version {version} after {len(times)}")
        times.append(at)
    latest: dict[int, dict[int, float]] = {}  # item -> version -> latest start of a read of it
    reads = stale = 0
    for raw_starts, raw_seen in zip(side.starts, side.seen, strict=True):
        starts, seen = array("d"), array("q")
        starts.frombytes(raw_starts)
        seen.frombytes(raw_seen)
        reads += len(starts)
        for start, code in zip(starts, seen, strict=True):
            item, version = code >> 32, code & 0xFFFFFFFF
            times = returned.get(item, ())
            if version < len(times) and start > times[version]:
                stale += 1
            by_version = latest.setdefault(item, {})
            if start > by_version.get(version, -1.0):
                by_version[version] = start
    windows = []
    stale_writes = 0
    for item, version, at in writer.writes:
        seen_before = latest.get(item, {})
        newest = max((s for v, s in seen_before.items() if v < version), default=-1.0)
        window = max(0.0, newest - at)
        stale_writes += window > 0
        windows.append(window)
    deliveries, undelivered = _deliveries(writer.writes, side.deliveries)
    return Staleness(
        threads=len(side.starts),
        reads=reads,
        stale_reads=stale,
        stale_writes=stale_writes,
        windows=windows,
        deliveries=deliveries,
        undelivered=undelivered,
        converged=all(side.converged),
        final_ok=list(finals) == side.final_seen,
    )


def _deliveries(
    writes: list[tuple[int, int, float]], messages: list[tuple[int, float]]
) -> tuple[list[float], int]:
    """Match the k-th message about an item with the k-th write of it (one publisher)."""
    arrived: dict[int, list[float]] = {}
    for item, at in messages:
        arrived.setdefault(item, []).append(at)
    latencies, missing = [], 0
    count: dict[int, int] = {}
    for item, _version, at in writes:
        k = count[item] = count.get(item, 0) + 1
        times = arrived.get(item, [])
        if k <= len(times):
            latencies.append(max(0.0, times[k - 1] - at))
        else:
            missing += 1
    return latencies, missing


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _quantiles(samples: list[float]) -> tuple[str, str, str, str]:
    if not samples:
        return ("-", "-", "-", "-")
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=100) if len(ordered) > 1 else [ordered[0]] * 99
    return (_ms(statistics.median(ordered)), _ms(q[89]), _ms(q[98]), _ms(ordered[-1]))


def scenario(config: Config) -> tuple[Staleness, Staleness, float]:
    """Run once; return the other process's figures, the writer's own, and the write time."""
    writer, reader = run_processes(config)
    last: dict[int, int] = {}
    for item, version, _at in writer.writes:
        last[item] = version
    finals = [last.get(item, 0) for item in range(config.items)]
    spent = writer.writes[-1][2] - writer.writes[0][2] if writer.writes else 0.0
    return analyse(writer, reader, finals), analyse(writer, writer, finals), spent


def run(
    *,
    redis_url: str = DEFAULT_REDIS,
    writes: int = 2_000,
    readers: int = 4,
    writer_readers: int = 2,
    items: int = 8,
    l1_ttl: float = 30.0,
    lost_writes: int = 300,
    lost_l1_ttl: float = 1.0,
    switch_interval: float = 0.005,
) -> str:
    """
    Run the delivered scenario (and the delivery-lost one unless *lost_writes* is 0).

    Returns the Markdown tables.
    """
    prefix = f"bench-staleness-{uuid.uuid4().hex[:8]}"
    runs = [("delivered", l1_ttl, writes, False)]
    if lost_writes:
        runs.append(("delivery lost", lost_l1_ttl, lost_writes, True))
    stale_rows, delivery_rows, notes = [], [], []
    try:
        for name, ttl, count, lose in runs:
            config = Config(
                redis_url=redis_url,
                prefix=f"{prefix}-{'lost' if lose else 'ok'}",
                items=items,
                writes=count,
                readers=readers,
                writer_readers=writer_readers,
                l1_ttl=ttl,
                lose_delivery=lose,
                deadline=ttl + 10,
                switch_interval=switch_interval,
            )
            other, own, spent = scenario(config)
            notes.append(
                f"{name}: {count:,} writes over {items} items in {spent:.2f} s "
                f"({count / spent if spent else 0:,.0f}/s), l1_ttl={ttl:g} s"
            )
            for label, figures in (("other", other), ("own (writer's)", own)):
                stale_rows.append(
                    f"| {name} | {label} | {figures.threads} | {figures.reads:,} "
                    f"| {figures.stale_reads:,} | {figures.stale_writes:,} / {count:,} | "
                    + " | ".join(_quantiles(figures.windows))
                    + f" | {'yes' if figures.converged and figures.final_ok else 'NO'} |"
                )
                delivery_rows.append(
                    f"| {name} | {label} | {len(figures.deliveries):,} "
                    f"| {figures.undelivered:,} | "
                    + " | ".join(_quantiles(figures.deliveries))
                    + " |"
                )
    finally:
        _cleanup(redis_url, prefix)
    return "\n".join(
        [
            *(f"- {note}" for note in notes),
            "",
            "Staleness window per write (latest start of a read that saw an older version,"
            " minus the invalidation's return; 0 if none):",
            "",
            "| run | process | reader threads | reads | stale reads | writes with a stale read"
            " | median | p90 | p99 | max | converged |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
            *stale_rows,
            "",
            "Delivery per write (invalidation returned → that process's listener dropped the key):",
            "",
            "| run | process | delivered | not delivered | median | p90 | p99 | max |",
            "|---|---|--:|--:|--:|--:|--:|--:|",
            *delivery_rows,
        ]
    )


def _cleanup(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        names = list(client.scan_iter(match=f"{prefix}-*", count=1000))
        if names:
            client.delete(*names)
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default=DEFAULT_REDIS, metavar="URL")
    parser.add_argument("--writes", type=int, default=2_000, metavar="N")
    parser.add_argument("--readers", type=int, default=4, metavar="K", help="in the other process")
    parser.add_argument("--writer-readers", type=int, default=2, metavar="K")
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--l1-ttl", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument(
        "--lost-writes", type=int, default=300, metavar="N", help="0: no delivery-lost run"
    )
    parser.add_argument(
        "--switch-interval", type=float, default=0.005, metavar="SECONDS",
        help="sys.setswitchinterval in both processes (CPython's default: 0.005)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    print(
        run(
            redis_url=args.redis,
            writes=args.writes,
            readers=args.readers,
            writer_readers=args.writer_readers,
            items=args.items,
            l1_ttl=args.l1_ttl,
            lost_writes=args.lost_writes,
            switch_interval=args.switch_interval,
        )
    )


if __name__ == "__main__":
    main()
