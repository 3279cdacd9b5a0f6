"""
Two processes on one tiered cache under load: invalidations arrive, staleness stays within L1's TTL.

The writer process bumps a version in Redis (the source of truth) and invalidates
the item, while reader threads in it and in a second process read the items
through their own ``TieredBackend``. How long the other process stays stale is
measured by ``benchmarks/tiered_staleness.py``; here only what cannot flake is
asserted: the other process ends on the final versions, its stale reads begin
within ``l1_ttl`` of the write they missed (the hard bound), and the writer's own
process never serves a version older than one whose invalidation has returned.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest
import redis

from perfkit.cache import Cache, RedisBackend, TieredBackend

WRITES: Final = 200
ITEMS: Final = 4
L1_TTL: Final = 30.0
DEADLINE: Final = L1_TTL + 10  # seconds after the last write for readers to see it
WRITER_READERS: Final = 2
OTHER_READERS: Final = 3

Write = tuple[int, int, float]  # item, version, when its invalidation returned
Read = tuple[int, float, int]  # item, when the read began, version seen


def _hammer(
    read: Callable[[int], int],
    done: Any,
    finals: Any,
    seed: int,
    reads: list[Read],
    converged: list[bool],
) -> None:
    """Read items in turn until every item's final version has been seen (or the deadline)."""
    pending: set[int] | None = None
    final: list[int] = []
    deadline = 0.0
    n = seed
    while True:
        item = n % ITEMS
        n += 1
        start = time.monotonic()
        version = read(item)
        reads.append((item, start, version))
        if pending is None:
            if done.is_set():
                final, pending, deadline = list(finals), set(range(ITEMS)), start + DEADLINE
        elif version >= final[item]:
            pending.discard(item)
            if not pending:
                converged.append(True)
                return
        elif start > deadline:
            converged.append(False)
            return


def _side(role: str, url: str, prefix: str, barrier: Any, done: Any, finals: Any, out: str) -> None:
    """A spawned process: the writer with its own readers, or the other process's readers."""
    record: dict[str, Any] = {
        "writes": [],
        "reads": [],
        "converged": [],
        "final": [],
        "error": None,
    }
    source = redis.Redis.from_url(url)
    backend = TieredBackend(RedisBackend(url, prefix=prefix), l1_ttl=L1_TTL)
    cache = Cache(backend, namespace="xproc", ttl=3600)

    @cache.cached(key="item:{item}")
    def read(item: int) -> int:
        return int(source.get(f"{prefix}:src:{item}") or 0)

    try:
        if not backend.wait_subscribed(10):
            raise RuntimeError(f"{role}: not subscribed within 10 s")
        for item in range(ITEMS):
            read(item)
        barrier.wait(30)
        count = WRITER_READERS if role == "writer" else OTHER_READERS
        columns: list[list[Read]] = [[] for _ in range(count)]
        threads = [
            threading.Thread(
                target=_hammer, args=(read, done, finals, i, columns[i], record["converged"])
            )
            for i in range(count)
        ]
        for thread in threads:
            thread.start()
        if role == "writer":
            for n in range(WRITES):
                item = n % ITEMS
                version = int(source.incr(f"{prefix}:src:{item}"))
                cache.invalidate(keys=[f"item:{item}"])
                record["writes"].append((item, version, time.monotonic()))
            finals[:] = [version for _item, version, _at in record["writes"][-ITEMS:]]
            done.set()
        for thread in threads:
            thread.join()
        record["reads"] = [r for column in columns for r in column]
        record["final"] = [read(item) for item in range(ITEMS)]
    except BaseException:
        record["error"] = traceback.format_exc()
        barrier.abort()
        done.set()
        raise
    finally:
        backend.close()
        source.close()
        Path(out).write_bytes(pickle.dumps(record))


def _run(url: str, prefix: str, tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the writer and the other process once; return what each recorded."""
    context = multiprocessing.get_context("spawn")
    barrier, done, finals = context.Barrier(3), context.Event(), context.Array("q", ITEMS)
    outs = {role: tmp / f"{role}.pickle" for role in ("writer", "other")}
    procs = [
        context.Process(target=_side, args=(role, url, prefix, barrier, done, finals, str(out)))
        for role, out in outs.items()
    ]
    for proc in procs:
        proc.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(60)  # broken: a process failed, its record says why
    for proc in procs:
        proc.join(60 + DEADLINE)
        if proc.is_alive():
            proc.kill()
            proc.join()
    records = []
    for role, out in outs.items():
        assert out.exists(), f"the {role} process died without a record"
        record = pickle.loads(out.read_bytes())
        assert record["error"] is None, f"the {role} process failed:\n{record['error']}"
        records.append(record)
    return records[0], records[1]


def _stale(writes: list[Write], reads: list[Read]) -> list[tuple[int, int, float]]:
    """
    The reads that began after the invalidation of a newer version than they saw.

    Each as (item, version seen, seconds since the first such invalidation returned).
    """
    returned: dict[int, list[float]] = {}  # item -> when version v + 1's invalidation returned
    for item, version, at in writes:
        returned.setdefault(item, []).append(at)
        assert version == len(returned[item])
    stale = []
    for item, start, version in reads:
        times = returned.get(item, [])
        if version < len(times) and start > times[version]:
            stale.append((item, version, start - times[version]))
    return stale


@pytest.mark.slow
def test_two_processes_under_load(redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    """The other process ends fresh and stale only within L1's TTL; the writer's never stale."""
    writer, other = _run(redis_url, redis_prefix, tmp_path)
    finals = [WRITES // ITEMS] * ITEMS

    assert finals == writer["final"]
    assert finals == other["final"]
    assert other["converged"] == [True] * OTHER_READERS
    assert other["reads"]
    beyond_ttl = [s for s in _stale(writer["writes"], other["reads"]) if s[2] >= L1_TTL]
    assert beyond_ttl == []
    assert _stale(writer["writes"], writer["reads"]) == []
