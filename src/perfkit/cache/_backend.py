"""
The contract between :class:`~perfkit.cache.Cache` and its storage backends.

Freshness protocol
------------------
Every backend keeps a monotonically increasing *invalidation sequence* and,
for each key and tag invalidated recently, the sequence number at which that
happened. A fill goes:

1. ``token = backend.fill_token()`` — read the sequence *before* loading;
2. load the value from the source;
3. ``backend.set(key, value, ttl=..., tags=..., token=token)`` — stored only
   if neither the key nor any of its tags was invalidated after ``token``.

A load that raced with a committed write therefore cannot put the old value
back (the write's invalidation moved the key's or a tag's sequence past
``token``), including tags known only from the loaded value. A fill that
took longer than ``max_load`` seconds is not stored at all, which bounds how
long invalidation sequence numbers must be remembered.

Every operation the cache uses is declared here, sync and async. The one
optional capability, cross-process single-flight, is the ``leases``
attribute: a :class:`Leases` object, or ``None`` for a backend without it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final, Protocol, runtime_checkable

__all__ = ["MISSING", "Backend", "Leases"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final[Any] = _Missing()
"""Returned by ``get`` for an absent entry (``None`` is a cacheable value)."""


@runtime_checkable
class Leases(Protocol):
    """
    Cross-process single-flight: at most one process loads a key at a time.

    A lease expires by itself after the seconds it was taken for, so a
    killed holder blocks nobody for longer than that.

    .. versionadded:: 0.2.0
    """

    def acquire(self, key: str, seconds: float) -> str | None:
        """Take the lease on *key*: a holder token, or ``None`` if another holds it."""
        ...

    def held(self, key: str) -> bool:
        """Whether some process holds the lease on *key*."""
        ...

    def release(self, key: str, holder: str) -> None:
        """Give the lease back, if *holder* still has it."""
        ...

    async def aacquire(self, key: str, seconds: float) -> str | None:
        """Async :meth:`acquire`."""
        ...

    async def aheld(self, key: str) -> bool:
        """Async :meth:`held`."""
        ...

    async def arelease(self, key: str, holder: str) -> None:
        """Async :meth:`release`."""
        ...


@runtime_checkable
class Backend(Protocol):
    """
    Storage for a :class:`~perfkit.cache.Cache`, in sync and async flavours.

    Implementations must make ``set`` atomic with respect to ``invalidate``
    (the check of the token and the write happen as one step), and must hand
    out values no caller shares with another: a value read from the backend
    can be changed by its reader without changing what the next read returns
    (copies, or values that cannot be changed).

    Check an implementation with :class:`perfkit.testing.BackendContract`.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       ``peek``, ``get_entry``, ``close``, the async twins of ``clear`` and
       ``close``, and ``leases`` are part of the contract.
    """

    max_load: float
    """Seconds after which a fill is too old to store."""

    leases: Leases | None
    """Cross-process single-flight leases, or ``None`` if the backend has none."""

    def peek(self, key: str) -> Any:
        """
        The value under *key* if this process holds it, else :data:`MISSING`.

        Never does I/O, so async callers use it before awaiting :meth:`aget`.
        """
        ...

    def get(self, key: str) -> Any:
        """Return the value under *key*, or :data:`MISSING`."""
        ...

    def get_entry(self, key: str) -> tuple[Any, tuple[str, ...]]:
        """The value under *key* (or :data:`MISSING`) and the tags it was stored with."""
        ...

    def fill_token(self) -> int:
        """Return the current invalidation sequence, to pass to :meth:`set`."""
        ...

    def set(self, key: str, value: Any, *, ttl: float, tags: Collection[str], token: int) -> bool:
        """Store *value* unless *key* or a tag was invalidated after *token*."""
        ...

    def invalidate(self, *, keys: Collection[str] = (), tags: Collection[str] = ()) -> None:
        """Drop *keys* and every entry carrying one of *tags*; fence in-flight fills."""
        ...

    def clear(self) -> None:
        """Drop every entry and fence every in-flight fill."""
        ...

    def close(self) -> None:
        """Release connections and threads; the backend is not used afterwards."""
        ...

    async def aget(self, key: str) -> Any:
        """Async :meth:`get`."""
        ...

    async def aget_entry(self, key: str) -> tuple[Any, tuple[str, ...]]:
        """Async :meth:`get_entry`."""
        ...

    async def afill_token(self) -> int:
        """Async :meth:`fill_token`."""
        ...

    async def aset(
        self, key: str, value: Any, *, ttl: float, tags: Collection[str], token: int
    ) -> bool:
        """Async :meth:`set`."""
        ...

    async def ainvalidate(self, *, keys: Collection[str] = (), tags: Collection[str] = ()) -> None:
        """Async :meth:`invalidate`."""
        ...

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        ...

    async def aclose(self) -> None:
        """Async :meth:`close` (in the event loop that used the backend)."""
        ...
