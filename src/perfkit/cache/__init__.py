"""
Caching of store reads with invalidation that never lets a stale value back in.

See :class:`Cache` for the decorator and :mod:`perfkit.cache._backend` for the
freshness protocol every backend follows.
"""

from __future__ import annotations

from ._backend import MISSING, Backend, Leases
from ._cache import Cache, CacheStats
from ._codec import Codec, JSONCodec
from ._decorator import (
    AsyncCachedFunction,
    AsyncCachedMethod,
    CachedFunction,
    CachedMethod,
    cached_method,
)
from ._memory import MemoryBackend
from ._redis import RedisBackend
from ._tiered import TieredBackend

__all__ = [
    "MISSING",
    "AsyncCachedFunction",
    "AsyncCachedMethod",
    "Backend",
    "Cache",
    "CacheStats",
    "CachedFunction",
    "CachedMethod",
    "Codec",
    "JSONCodec",
    "Leases",
    "MemoryBackend",
    "RedisBackend",
    "TieredBackend",
    "cached_method",
]
