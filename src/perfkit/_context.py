"""
The per-request context that the engine instrumentation, the cache and the breaker report into.
"""

from __future__ import annotations

import contextvars
import weakref
from typing import Any, Final

__all__ = ["CURRENT", "FILLING", "REGISTRY", "FillProbe", "RequestTiming", "current_timing"]


class RequestTiming:
    """
    What one request spent: database time and queries, cache hits and misses.

    The timing middleware creates one per request and puts it in a context
    variable; :func:`perfkit.instrument_engine`, :class:`perfkit.Cache` and
    :class:`perfkit.CircuitBreaker` add to the one of the request they run in
    (plain int/float updates; nothing happens outside a request).

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "breaker_rejections",
        "cache_hits",
        "cache_misses",
        "db_queries",
        "db_seconds",
        "request_id",
    )

    def __init__(self, request_id: str = "") -> None:
        self.request_id = request_id
        self.db_seconds = 0.0
        self.db_queries = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.breaker_rejections = 0

    def __repr__(self) -> str:
        return (
            f"RequestTiming(db={self.db_seconds * 1000:.2f} ms/{self.db_queries} queries, "
            f"cache={self.cache_hits}/{self.cache_misses})"
        )


CURRENT: Final[contextvars.ContextVar[RequestTiming | None]] = contextvars.ContextVar(
    "perfkit_request_timing", default=None
)


def current_timing() -> RequestTiming | None:
    """
    The :class:`RequestTiming` of the request being served, if any.

    .. versionadded:: 0.1.0
    """
    return CURRENT.get()


class FillProbe:
    """
    One cache fill in progress, for the database hooks that check its loader.

    It is in context while the loader runs, which is after the fill token
    was taken. A database hook that sees the loader read in a transaction
    that did not begin during this fill (so began before the token, on a
    database where a transaction reads one snapshot) sets ``old_snapshot``,
    and the fill is not stored.
    """

    __slots__ = ("old_snapshot", "parent")

    def __init__(self) -> None:
        self.old_snapshot = False
        self.parent: FillProbe | None = None
        """The fill whose loader this fill runs in (a nested cached call), if any."""

    def flag(self) -> None:
        """Mark this fill and every enclosing one: their values rest on an old snapshot."""
        probe: FillProbe | None = self
        while probe is not None:
            probe.old_snapshot = True
            probe = probe.parent

    def encloses(self, other: FillProbe | None) -> bool:
        """Whether *other* is this fill or one nested in it."""
        while other is not None:
            if other is self:
                return True
            other = other.parent
        return False


FILLING: Final[contextvars.ContextVar[FillProbe | None]] = contextvars.ContextVar(
    "perfkit_cache_fill", default=None
)


class _Registry:
    """Caches and breakers alive in this process, for observable metrics."""

    __slots__ = ("breakers", "caches")

    def __init__(self) -> None:
        self.caches: weakref.WeakSet[Any] = weakref.WeakSet()
        self.breakers: weakref.WeakSet[Any] = weakref.WeakSet()


REGISTRY: Final = _Registry()
