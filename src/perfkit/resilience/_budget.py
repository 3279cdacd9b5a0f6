"""
Retry budgets: a token bucket that stops retry storms (gRPC retry-throttling semantics).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import redis

__all__ = ["RedisRetryBudget", "RetryBudget"]


class RetryBudget:
    """
    A per-process token bucket deciding whether a retry may happen at all.

    The bucket starts full with *max_tokens*; each failed attempt takes one
    token, each success gives back *token_ratio*; a retry is allowed only
    while more than half the tokens are left. So when a dependency fails for
    everyone, retries stop after a few and resume as calls succeed again —
    the semantics of gRPC's retry throttling.

    Success accounting is a lock-free float update (it sits on every
    successful call); under heavy thread contention a few updates may be
    lost, which a throttle tolerates.

    Args:
        max_tokens: Size of the bucket (gRPC: 1 to 1000).
        token_ratio: Tokens a success gives back (gRPC: e.g. 0.1).

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_lock", "denied", "max_tokens", "token_ratio", "tokens")

    def __init__(self, *, max_tokens: float = 10.0, token_ratio: float = 0.1) -> None:
        if max_tokens <= 0 or token_ratio <= 0:
            msg = "max_tokens and token_ratio must be positive"
            raise ValueError(msg)
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self.tokens = max_tokens
        self.denied = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RetryBudget(tokens={self.tokens:.1f}/{self.max_tokens})"

    def record_success(self) -> None:
        """A call succeeded: give back *token_ratio*."""
        tokens = self.tokens + self.token_ratio
        self.tokens = tokens if tokens < self.max_tokens else self.max_tokens

    def record_failure(self) -> None:
        """An attempt failed with a retryable error: take a token."""
        with self._lock:
            self.tokens = max(0.0, self.tokens - 1)

    def allow_retry(self) -> bool:
        """Whether a retry may go ahead now (counts a refusal in ``denied``)."""
        allowed = self.tokens > self.max_tokens / 2
        if not allowed:
            self.denied += 1
        return allowed


# KEYS: bucket   ARGV: max_tokens, token_ratio, successes, failures
_SETTLE: Final = """
local tokens = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
local max = tonumber(ARGV[1])
tokens = math.min(max, tokens + tonumber(ARGV[2]) * tonumber(ARGV[3]))
tokens = math.max(0, tokens - tonumber(ARGV[4]))
redis.call('SET', KEYS[1], tostring(tokens), 'EX', 3600)
if tokens > max / 2 then return 1 end
return 0
"""


class RedisRetryBudget(RetryBudget):
    """
    A :class:`RetryBudget` shared by every process through one Redis key.

    Successes are counted locally and settled with the failures in one
    atomic script call when a retry is considered, so successful calls never
    touch Redis. If Redis cannot be reached, the local bucket decides.

    Args:
        client: A ``redis.Redis`` client.
        name: The budget's name; the key is ``perfkit:budget:<name>``.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_failures", "_key", "_script", "_successes", "client")

    def __init__(
        self,
        client: redis.Redis,
        *,
        name: str,
        max_tokens: float = 10.0,
        token_ratio: float = 0.1,
    ) -> None:
        super().__init__(max_tokens=max_tokens, token_ratio=token_ratio)
        self.client = client
        self._key = f"perfkit:budget:{name}"
        self._script: Any = client.register_script(_SETTLE)
        self._successes = 0
        self._failures = 0

    def record_success(self) -> None:
        super().record_success()
        self._successes += 1

    def record_failure(self) -> None:
        super().record_failure()
        with self._lock:
            self._failures += 1

    def allow_retry(self) -> bool:
        with self._lock:
            successes, failures = self._successes, self._failures
            self._successes = self._failures = 0
        try:
            allowed = bool(
                self._script(
                    keys=[self._key],
                    args=[self.max_tokens, self.token_ratio, successes, failures],
                )
            )
        except Exception:  # Redis down: fall back to this process's bucket
            return super().allow_retry()
        if not allowed:
            self.denied += 1
        return allowed
