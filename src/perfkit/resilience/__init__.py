"""
Resilience: retries with backoff, retried transactions and reads, retry budgets,
circuit breakers.
"""

from __future__ import annotations

from ._breaker import BreakerStats, CircuitBreaker
from ._breaker_storage import (
    BreakerStorage,
    MemoryBreakerStorage,
    RedisBreakerStorage,
    StateView,
)
from ._budget import RedisRetryBudget, RetryBudget
from ._retry import (
    RetryDetails,
    RetryHook,
    RetryStats,
    backoff_delay,
    retry_stats,
    retry_with_backoff,
)
from ._transaction import arun_in_transaction, arun_read, run_in_transaction, run_read
from ._transient import is_transient

__all__ = [
    "BreakerStats",
    "BreakerStorage",
    "CircuitBreaker",
    "MemoryBreakerStorage",
    "RedisBreakerStorage",
    "RedisRetryBudget",
    "RetryBudget",
    "RetryDetails",
    "RetryHook",
    "RetryStats",
    "StateView",
    "arun_in_transaction",
    "arun_read",
    "backoff_delay",
    "is_transient",
    "retry_stats",
    "retry_with_backoff",
    "run_in_transaction",
    "run_read",
]
