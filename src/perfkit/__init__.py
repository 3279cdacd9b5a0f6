"""
perfkit: fast, resilient data-backed Python APIs.

The public API is what this module exports; everything in a module whose name
starts with an underscore is private. Optional integrations (Redis, FastAPI,
the OpenTelemetry SDK) are never imported by ``import perfkit``.
"""

from __future__ import annotations

from . import db
from .cache import Cache, CacheStats, JSONCodec, MemoryBackend, RedisBackend, TieredBackend
from .errors import Conflict, InvalidCursor, InvalidInput, InvalidPage, NotFound, PerfkitError
from .pagination import (
    CursorPage,
    Page,
    apaginate,
    apaginate_keyset,
    paginate,
    paginate_keyset,
)

__version__ = "0.1.0"

__all__ = [
    "Cache",
    "CacheStats",
    "Conflict",
    "CursorPage",
    "InvalidCursor",
    "InvalidInput",
    "InvalidPage",
    "JSONCodec",
    "MemoryBackend",
    "NotFound",
    "Page",
    "PerfkitError",
    "RedisBackend",
    "TieredBackend",
    "__version__",
    "apaginate",
    "apaginate_keyset",
    "db",
    "paginate",
    "paginate_keyset",
]
