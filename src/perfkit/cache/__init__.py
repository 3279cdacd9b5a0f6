"""
Caching of store reads with invalidation that never lets a stale value back in.

See :class:`Cache` for the decorator and :mod:`perfkit.cache._backend` for the
freshness protocol every backend follows.
"""

from __future__ import annotations

from ._backend import MISSING, Backend
from ._codec import Codec, JSONCodec
from ._core import AsyncCachedFunction, Cache, CachedFunction, CacheStats
from ._memory import MemoryBackend
from ._redis import RedisBackend
from ._tiered import TieredBackend

__all__ = [
    "MISSING",
    "AsyncCachedFunction",
    "Backend",
    "Cache",
    "CacheStats",
    "CachedFunction",
    "Codec",
    "JSONCodec",
    "MemoryBackend",
    "RedisBackend",
    "TieredBackend",
]
