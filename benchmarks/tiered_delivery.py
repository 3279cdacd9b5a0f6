"""
How long an invalidation takes to reach another process's L1 (TieredBackend).

Two TieredBackends on one Redis (their own L1s and listener threads, as two
workers would have); one invalidates a key, the other's listener reports when
it has dropped it. Latency = from the start of ``invalidate()`` to that report,
so it includes the writer's script round trip. Prints median, p90, p99, max.

Usage: ``python benchmarks/tiered_delivery.py [--redis URL] [--count N]``
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid

from perfkit.cache import RedisBackend, TieredBackend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    prefix = f"bench-tiered-{uuid.uuid4().hex[:8]}"
    arrived = threading.Event()
    stamp: list[float] = [0.0]

    def on_message(_keys: list[str], _tags: list[str]) -> None:
        stamp[0] = time.perf_counter()
        arrived.set()

    reader = TieredBackend(RedisBackend(args.redis, prefix=prefix), on_message=on_message)
    writer = TieredBackend(RedisBackend(args.redis, prefix=prefix))
    assert reader.wait_subscribed(5)
    assert writer.wait_subscribed(5)
    samples = []
    try:
        for i in range(args.count):
            arrived.clear()
            started = time.perf_counter()
            writer.invalidate(keys=[f"k{i}"])
            if not arrived.wait(5):
                raise SystemExit(f"invalidation {i} not delivered within 5 s")
            samples.append((stamp[0] - started) * 1e6)
    finally:
        writer.clear()
        writer.close()
        reader.close()
    samples.sort()
    q = statistics.quantiles(samples, n=100)
    print("| invalidations | median | p90 | p99 | max |")
    print("|--:|--:|--:|--:|--:|")
    print(
        f"| {len(samples):,} | {statistics.median(samples):.0f} µs | {q[89]:.0f} µs "
        f"| {q[98]:.0f} µs | {samples[-1]:.0f} µs |"
    )


if __name__ == "__main__":
    main()
