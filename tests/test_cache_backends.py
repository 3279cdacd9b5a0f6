"""
The backend contract on the memory backend and on real Redis.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from perfkit.cache import MISSING, MemoryBackend, RedisBackend
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
