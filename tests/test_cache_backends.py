"""
The backend contract on the memory backend and on real Redis.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from perfkit.cache import MISSING, Cache, MemoryBackend, RedisBackend
from perfkit.testing import BackendContract, FakeClock


class TestMemoryBackend(BackendContract):
    """The contract in process."""

    @pytest.fixture
    def backend(self) -> MemoryBackend:
        return MemoryBackend(maxsize=100)


class TestRedisBackend(BackendContract):
    """The contract on the Redis service."""

    @pytest.fixture
    def backend(self, redis_url: str, redis_prefix: str) -> Iterator[RedisBackend]:
        backend = RedisBackend(redis_url, prefix=redis_prefix)
        yield backend
        backend.client.close()


def test_memory_backend_evicts_the_entry_stored_longest_ago() -> None:
    """A full memory backend drops the oldest stored entry (hits do not refresh it)."""
    backend = MemoryBackend(maxsize=2)
    token = backend.fill_token()
    backend.set("a", 1, ttl=30, tags=(), token=token)
    backend.set("b", 2, ttl=30, tags=(), token=token)
    backend.get("a")
    backend.set("c", 3, ttl=30, tags=(), token=token)

    assert (backend.get("a"), backend.get("b"), backend.get("c")) == (MISSING, 2, 3)
    assert len(backend) == 2


def test_memory_backend_expired_entries_are_misses() -> None:
    """An entry past its TTL is a miss even before any sweep removes it."""
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    backend.set("a", 1, ttl=5, tags=(), token=backend.fill_token())
    clock.advance(5)

    assert backend.get("a") is MISSING


def test_memory_backend_rejects_a_zero_size() -> None:
    """maxsize must be positive."""
    with pytest.raises(ValueError, match="maxsize"):
        MemoryBackend(maxsize=0)


_ASYNC_HITS_SCRIPT = """
import asyncio, sys
from perfkit.cache import Cache, RedisBackend

async def main() -> None:
    backend = RedisBackend(sys.argv[1], prefix=sys.argv[2])
    cache = Cache(backend, namespace="smoke", ttl=30)

    @cache.cached
    async def double(n: int) -> int:
        return 2 * n

    values = [await double(21), await double(21)]
    await backend.aclose()
    backend.close()
    stats = cache.stats
    print(values, stats.hits, stats.misses, stats.errors)

asyncio.run(main())
"""


def test_the_async_redis_path_hits_under_warnings_as_errors(
    redis_url: str, redis_prefix: str
) -> None:
    """A user's `python -W error` gets async hits, not a cache that fails open on a warning."""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", _ASYNC_HITS_SCRIPT, redis_url, redis_prefix],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.split() == ["[42,", "42]", "1", "1", "0"]  # hits, misses, errors


@pytest.mark.anyio
async def test_an_async_client_made_from_a_sync_one_keeps_its_retry_policy(
    redis_url: str, redis_prefix: str
) -> None:
    """The asyncio twin of a user's client retries alike, with redis-py's asyncio Retry."""
    import redis  # noqa: PLC0415
    import redis.asyncio.retry  # noqa: PLC0415
    from redis.backoff import ConstantBackoff  # noqa: PLC0415
    from redis.retry import Retry  # noqa: PLC0415

    client = redis.Redis.from_url(redis_url, retry=Retry(ConstantBackoff(0.01), 3))
    backend = RedisBackend(client, prefix=redis_prefix)
    cache = Cache(backend, namespace="twin", ttl=30)

    @cache.cached
    async def triple(n: int) -> int:
        return 3 * n

    try:
        assert [await triple(2), await triple(2)] == [6, 6]
        twin = backend.async_client.get_connection_kwargs()["retry"]
        assert type(twin) is redis.asyncio.retry.Retry
        assert (twin._retries, type(twin._backoff)) == (3, ConstantBackoff)
        assert twin._backoff.compute(1) == 0.01
        assert (cache.stats.hits, cache.stats.errors) == (1, 0)
    finally:
        await backend.aclose()
        client.close()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda redis: redis.Redis(ssl=True, host="h", port=6380, ssl_cert_reqs="none"),
            ("SSLConnection", {"host": "h", "port": 6380, "ssl_cert_reqs": "none"}),
        ),
        (
            lambda redis: redis.Redis.from_url("rediss://h:6381/2"),
            ("SSLConnection", {"host": "h", "port": 6381, "db": 2}),
        ),
        (
            lambda redis: redis.Redis(unix_socket_path="/run/r.sock", db=3),
            ("UnixDomainSocketConnection", {"path": "/run/r.sock", "db": 3}),
        ),
    ],
    ids=["ssl", "rediss-url", "unix-socket"],
)
def test_the_async_client_reaches_what_the_sync_client_reaches(
    make: Any, expected: tuple[str, dict[str, object]]
) -> None:
    """TLS, a Unix socket, the database and the pool's size carry over (no server needed)."""
    import redis  # noqa: PLC0415

    client = make(redis)
    client.connection_pool.max_connections = 7
    backend = RedisBackend(client, prefix="unused")
    pool = backend.async_client.connection_pool
    kwargs = pool.connection_kwargs
    connection, options = expected

    assert (connection, 7) == (pool.connection_class.__name__, pool.max_connections)
    assert options == {name: kwargs.get(name) for name in options}
    assert pool.connection_class.__module__.startswith("redis.asyncio")
