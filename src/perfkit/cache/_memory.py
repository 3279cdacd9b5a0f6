"""
In-process cache backend on cachetools.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any, Final

from cachetools import TLRUCache

from perfkit._clock import SYSTEM_CLOCK, Clock

from ._backend import MISSING, Leases
from ._values import copier_for

__all__ = ["MemoryBackend"]

_SWEEP_EVERY: Final = 1024
_FENCE_MARGIN: Final = 5.0
"""Seconds fences outlive max_load, as Redis fence keys do."""

_Entry = tuple[float, Any, Any, tuple[str, ...]]
"""Expiry time, the value, how to copy it on read (``None``: shared), its tags."""


class MemoryBackend:
    """
    A bounded, per-entry-TTL cache in this process, built on cachetools.

    Values that cannot change (frozen dataclasses, tuples, strings, numbers,
    ...) are kept and handed out as they are; any other value is copied when
    stored and on every read (a flat dict or list: a shallow copy), so no two
    callers share a mutable value, as with Redis.

    A hit is one dict lookup and a clock read, without a lock. Writes and
    invalidations take one lock. The bound is kept by a cachetools
    ``TLRUCache`` beside the lookup dict; since hits do not touch it (that
    would need the lock), the entries stored longest ago go first when full.

    Args:
        maxsize: The most entries kept; the least recently used go first.
        max_load: Fills that took longer than this many seconds are not stored.
        clock: Source of monotonic time (a fake one in tests).

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "_clock",
        "_data",
        "_fences",
        "_live",
        "_lock",
        "_now",
        "_seq",
        "_sets",
        "_tags",
        "max_load",
    )

    def __init__(
        self, *, maxsize: int = 10_000, max_load: float = 60.0, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        if maxsize < 1:
            msg = f"maxsize must be at least 1, not {maxsize}"
            raise ValueError(msg)
        self._clock = clock
        self._now = clock.monotonic
        # key -> (expires at, value, copier, tags): what hits read, lock-free.
        self._live: dict[str, _Entry] = {}
        self._data = _Bounded(maxsize, ttu=_expiry, timer=clock.monotonic, live=self._live)
        self._tags: dict[str, set[str]] = {}
        # key or tag -> (sequence, monotonic time) of its last invalidation
        self._fences: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._seq = 0
        self._sets = 0
        self.max_load = max_load

    leases: Leases | None = None
    """An in-process backend has no cross-process leases."""

    def __repr__(self) -> str:
        return f"MemoryBackend(maxsize={self._data.maxsize}, entries={len(self._data)})"

    def get(self, key: str) -> Any:
        entry = self._live.get(key)
        if entry is not None and entry[0] > self._now():
            copier = entry[2]
            return entry[1] if copier is None else copier(entry[1])
        return MISSING

    peek = get

    def get_entry(self, key: str) -> tuple[Any, tuple[str, ...]]:
        entry = self._live.get(key)
        if entry is not None and entry[0] > self._now():
            copier = entry[2]
            return (entry[1] if copier is None else copier(entry[1])), entry[3]
        return MISSING, ()

    def fill_token(self) -> int:
        return self._seq

    def set(self, key: str, value: Any, *, ttl: float, tags: Collection[str], token: int) -> bool:
        now = self._clock.monotonic()
        with self._lock:
            if self._fenced(key, tags, token):
                return False
            copier = copier_for(value)
            stored = value if copier is None else copier(value)
            entry = (now + ttl, stored, copier, tuple(tags))
            self._data[key] = entry
            self._live[key] = entry
            for tag in tags:
                self._tags.setdefault(tag, set()).add(key)
            self._sets += 1
            if self._sets % _SWEEP_EVERY == 0:
                self._sweep(now)
        return True

    def invalidate(self, *, keys: Collection[str] = (), tags: Collection[str] = ()) -> None:
        now = self._clock.monotonic()
        with self._lock:
            if self._seq % _SWEEP_EVERY == 0:  # fences pile up where invalidations outnumber sets
                self._forget_fences(now)
            self._seq += 1
            fence = (self._seq, now)
            for key in keys:
                self._drop(key)
                self._fences["k:" + key] = fence
            for tag in tags:
                for key in self._tags.pop(tag, ()):
                    self._drop(key)
                self._fences["t:" + tag] = fence

    def clear(self) -> None:
        with self._lock:
            self._seq += 1
            self._data.clear()
            self._live.clear()
            self._tags.clear()
            # Any fill that began before now is fenced by the "*" fence.
            self._fences = {"*": (self._seq, self._clock.monotonic())}

    def _after_fork_in_child(self) -> None:
        """Start empty with a fresh lock (a parent's thread may have held it at the fork)."""
        self._lock = threading.Lock()
        self.clear()

    def close(self) -> None:
        """Nothing to release."""

    async def aget(self, key: str) -> Any:
        return self.get(key)

    async def aget_entry(self, key: str) -> tuple[Any, tuple[str, ...]]:
        return self.get_entry(key)

    async def afill_token(self) -> int:
        return self._seq

    async def aset(
        self, key: str, value: Any, *, ttl: float, tags: Collection[str], token: int
    ) -> bool:
        return self.set(key, value, ttl=ttl, tags=tags, token=token)

    async def ainvalidate(self, *, keys: Collection[str] = (), tags: Collection[str] = ()) -> None:
        self.invalidate(keys=keys, tags=tags)

    async def aclear(self) -> None:
        self.clear()

    async def aclose(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        return len(self._data)

    def _drop(self, key: str) -> None:
        self._live.pop(key, None)
        self._data.pop(key, None)

    def _fenced(self, key: str, tags: Collection[str], token: int) -> bool:
        if token < self._seq:
            fences = self._fences
            for name in ("*", "k:" + key, *("t:" + tag for tag in tags)):
                fence = fences.get(name)
                if fence is not None and fence[0] > token:
                    return True
        return False

    def _forget_fences(self, now: float) -> None:
        """Forget fences no running fill can be older than (fills past max_load are not stored)."""
        horizon = now - self.max_load - _FENCE_MARGIN
        self._fences = {n: f for n, f in self._fences.items() if f[1] >= horizon}

    def _sweep(self, now: float) -> None:
        # Forget fences no live fill can be older than, and tag members that expired.
        self._forget_fences(now)
        self._data.expire()  # also leaves _live
        for tag in list(self._tags):
            live = {key for key in self._tags[tag] if key in self._data}
            if live:
                self._tags[tag] = live
            else:
                del self._tags[tag]


def _expiry(_key: str, value: _Entry, _now: float) -> float:
    return value[0]


class _Bounded(TLRUCache[str, _Entry]):
    """The size bound: evictions also leave the lock-free lookup dict."""

    def __init__(
        self,
        maxsize: int,
        *,
        ttu: Any,
        timer: Any,
        live: dict[str, _Entry],
    ) -> None:
        super().__init__(maxsize, ttu=ttu, timer=timer)
        self._live_ref = live

    def popitem(self) -> tuple[str, _Entry]:
        key, value = super().popitem()
        self._forget(key, value)
        return key, value

    def expire(self, time: float | None = None) -> list[tuple[str, _Entry]]:
        # TLRUCache expires entries on every write too, and drops what it expired:
        # they must leave the lookup dict as well, or it grows past maxsize.
        expired = super().expire(time)
        for key, value in expired:
            self._forget(key, value)
        return expired

    def _forget(self, key: str, value: _Entry) -> None:
        if self._live_ref.get(key) is value:
            del self._live_ref[key]
