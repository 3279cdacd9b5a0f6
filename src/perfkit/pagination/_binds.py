"""
What a page is read from: a connection or session the caller holds, or an engine or
session factory, from which each attempt takes a fresh one (retried reads).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
    from sqlalchemy.ext.asyncio import async_sessionmaker as AsyncSessionMaker

__all__ = ["AsyncBind", "Bind", "aread_from", "read_from"]

T = TypeVar("T")

Bind: TypeAlias = "Session | Connection | Engine | sessionmaker[Session]"
"""A handle to read on, or where to get one per attempt (then transient failures retry)."""
AsyncBind: TypeAlias = (
    "AsyncSession | AsyncConnection | AsyncEngine | AsyncSessionMaker[AsyncSession]"
)


def read_from(bind: Bind, query: Callable[[Any], T]) -> T:
    """``query(bind)``, or :func:`perfkit.run_read` over fresh handles of an engine/factory."""
    if isinstance(bind, Engine):
        from perfkit.resilience import run_read  # noqa: PLC0415 - tenacity loads on first use

        return run_read(bind.connect, query)
    if isinstance(bind, sessionmaker):
        from perfkit.resilience import run_read  # noqa: PLC0415

        return run_read(bind, query)
    return query(bind)


async def aread_from(bind: AsyncBind, query: Callable[[Any], Awaitable[T]]) -> T:
    """The asyncio twin of :func:`read_from`."""
    asyncio_ext = sys.modules.get("sqlalchemy.ext.asyncio")  # not loaded: not one of its types
    if asyncio_ext is not None:
        factory: Callable[[], Any] | None = None
        if isinstance(bind, asyncio_ext.AsyncEngine):
            factory = bind.connect
        elif isinstance(bind, asyncio_ext.async_sessionmaker):
            factory = bind
        if factory is not None:
            from perfkit.resilience import arun_read  # noqa: PLC0415

            return await arun_read(factory, query)
    return await query(bind)
