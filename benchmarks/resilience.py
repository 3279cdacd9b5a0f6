"""
Retry and circuit-breaker overhead against their peers, in one process.

* the success path of a retry decorator: perfkit vs tenacity, stamina, backoff;
* a closed breaker's call: perfkit vs pybreaker;
* 8 threads x 5 calls x 20 ms through one breaker vs unguarded;
* a cached read while Redis is hung (SIGSTOP): no breaker vs breaker open.

Medians (or minimum of repeats for the micro-benchmarks), ratios in the same run.
Usage: ``python benchmarks/resilience.py``
"""

from __future__ import annotations

import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from typing import Any

import backoff
import pybreaker
import redis
import stamina
import tenacity

from perfkit import Cache, CircuitBreaker, RedisBackend, retry_with_backoff

NUMBER = 100_000


def per_call_ns(fn: Callable[[], Any]) -> float:
    return min(timeit.repeat(fn, number=NUMBER, repeat=7)) / NUMBER * 1e9


def retry_success() -> None:
    def plain(x: int) -> int:
        return x

    ours = retry_with_backoff()(plain)
    peer_tenacity = tenacity.retry(
        stop=tenacity.stop_after_attempt(5),
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=1),
        retry=tenacity.retry_if_exception_type(ConnectionError),
    )(plain)
    peer_stamina = stamina.retry(on=ConnectionError, attempts=5)(plain)
    peer_backoff = backoff.on_exception(backoff.expo, ConnectionError, max_tries=5)(plain)
    times = {
        "unwrapped": per_call_ns(lambda: plain(1)),
        "perfkit": per_call_ns(lambda: ours(1)),
        "tenacity": per_call_ns(lambda: peer_tenacity(1)),
        "stamina": per_call_ns(lambda: peer_stamina(1)),
        "backoff": per_call_ns(lambda: peer_backoff(1)),
    }
    print("\n### Retry decorator, successful call\n")
    print("| decorator | ns per call | perfkit / this |")
    print("|---|--:|--:|")
    for name, ns in times.items():
        print(f"| {name} | {ns:,.0f} | {times['perfkit'] / ns:.3f} |")


def breaker_closed() -> None:
    def plain(x: int) -> int:
        return x

    ours = CircuitBreaker(name="bench")
    peer = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    times = {
        "unwrapped": per_call_ns(lambda: plain(1)),
        "perfkit": per_call_ns(lambda: ours.call(plain, 1)),
        "pybreaker": per_call_ns(lambda: peer.call(plain, 1)),
    }
    print("\n### Circuit breaker, closed, successful call\n")
    print("| breaker | ns per call | perfkit / this |")
    print("|---|--:|--:|")
    for name, ns in times.items():
        print(f"| {name} | {ns:,.0f} | {times['perfkit'] / ns:.3f} |")


def breaker_parallel() -> None:
    def slow() -> None:
        time.sleep(0.02)

    ours = CircuitBreaker(name="parallel")
    peer = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    runners: dict[str, Callable[[], None]] = {
        "unguarded": slow,
        "perfkit": lambda: ours.call(slow),
        "pybreaker": lambda: peer.call(slow),
    }
    print("\n### 8 threads x 5 calls x 20 ms through one breaker (median of 5 runs)\n")
    print("| guard | wall time | / unguarded |")
    print("|---|--:|--:|")
    results = {}
    for name, run in runners.items():
        samples = []
        for _ in range(5):
            threads = [
                threading.Thread(target=lambda r=run: [r() for _ in range(5)]) for _ in range(8)
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            samples.append(time.perf_counter() - started)
        results[name] = statistics.median(samples)
    for name, seconds in results.items():
        print(f"| {name} | {seconds * 1000:,.0f} ms | {seconds / results['unguarded']:.2f} |")


def hung_redis() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        try:
            plain_cache = Cache(RedisBackend(url, prefix="a"), namespace="a", log_interval=3600)
            breaker = CircuitBreaker(name="redis", fail_max=3, reset_timeout=3600)
            guarded_cache = Cache(
                RedisBackend(url, prefix="b", breaker=breaker), namespace="b", log_interval=3600
            )
            loaders = {
                "no breaker": plain_cache.cached()(lambda n: n),
                "breaker": guarded_cache.cached()(lambda n: n),
            }
            alive = {name: _median_ms(lambda f=f: f(1), 200) for name, f in loaders.items()}
            server.send_signal(signal.SIGSTOP)
            for _ in range(3):
                loaders["breaker"](2)  # trips it
            hung = {name: _median_ms(lambda f=f: f(3), 9) for name, f in loaders.items()}
        finally:
            server.send_signal(signal.SIGCONT)
            server.kill()
            server.wait()
            client.close()
    print("\n### A cached read while Redis is hung (SIGSTOP), 250 ms socket timeouts\n")
    print("| cache | Redis alive (hit) | Redis hung |")
    print("|---|--:|--:|")
    for name in loaders:
        print(f"| {name} | {alive[name]:.3f} ms | {hung[name]:.3f} ms |")


def _median_ms(fn: Callable[[], Any], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


if __name__ == "__main__":
    retry_success()
    breaker_closed()
    breaker_parallel()
    hung_redis()
