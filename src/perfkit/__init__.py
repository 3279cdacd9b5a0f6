"""
perfkit: fast, resilient data-backed Python APIs.

The public API is what this module exports; everything in a module whose name
starts with an underscore is private. Optional integrations (Redis, FastAPI,
the OpenTelemetry SDK) are never imported by ``import perfkit``.
"""

from __future__ import annotations

from . import db
from .cache import Cache, CacheStats, JSONCodec, MemoryBackend, RedisBackend, TieredBackend
from .errors import (
    CircuitOpenError,
    CommitOutcomeUnknown,
    Conflict,
    InvalidCursor,
    InvalidInput,
    InvalidPage,
    NotFound,
    PerfkitError,
)
from .observability import (
    RequestTiming,
    TimingMiddleware,
    WSGITimingMiddleware,
    instrument_engine,
)
from .pagination import (
    CursorPage,
    Page,
    apaginate,
    apaginate_keyset,
    paginate,
    paginate_keyset,
)
from .resilience import (
    CircuitBreaker,
    RetryBudget,
    arun_in_transaction,
    is_transient,
    retry_with_backoff,
    run_in_transaction,
)

__version__ = "0.1.0"

__all__ = [
    "Cache",
    "CacheStats",
    "CircuitBreaker",
    "CircuitOpenError",
    "CommitOutcomeUnknown",
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
    "RequestTiming",
    "RetryBudget",
    "TieredBackend",
    "TimingMiddleware",
    "WSGITimingMiddleware",
    "__version__",
    "apaginate",
    "apaginate_keyset",
    "arun_in_transaction",
    "db",
    "instrument_engine",
    "is_transient",
    "paginate",
    "paginate_keyset",
    "retry_with_backoff",
    "run_in_transaction",
]
