"""
The contract between :class:`~perfkit.cache.Cache` and its storage backends.

Freshness protocol
------------------
Every backend keeps a monotonically increasing *invalidation sequence* and,
for each key and tag invalidated recently, the sequence number at which that
happened. A fill goes:

1. ``token = backend.fill_token()`` — read the sequence *before* loading;
2. load the value from the database;
3. ``backend.set(key, value, ttl=..., tags=..., token=token)`` — stored only
   if neither the key nor any of its tags was invalidated after ``token``.

A load that raced with a committed write therefore cannot put the old value
back (the write's invalidation moved the key's or a tag's sequence past
``token``), including tags known only from the loaded value. A fill that
took longer than ``max_load`` seconds is not stored at all, which bounds how
long invalidation sequence numbers must be remembered.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final, Protocol, runtime_checkable

__all__ = ["MISSING", "Backend"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final[Any] = _Missing()
"""Returned by ``get`` for an absent entry (``None`` is a cacheable value)."""


@runtime_checkable
class Backend(Protocol):
    """
    Storage for a :class:`~perfkit.cache.Cache`, in sync and async flavours.

    Implementations must make ``set`` atomic with respect to ``invalidate``
    (the check of the token and the write happen as one step).

    .. versionadded:: 0.1.0
    """

    max_load: float
    """Seconds after which a fill is too old to store."""

    def get(self, key: str) -> Any:
        """Return the value under *key*, or :data:`MISSING`."""
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
        """Drop every entry."""
        ...

    async def aget(self, key: str) -> Any:
        """Async :meth:`get`."""
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
