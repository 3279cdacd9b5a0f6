"""
The ASGI types the HTTP parts share (no framework imported).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

__all__ = ["ASGIApp", "Headers", "Message", "Receive", "Scope", "Send", "header_value"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = Iterable[tuple[bytes, bytes]]


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """
    The value of header *name* (lower-case), several joined with ``, ``; ``None`` if absent.
    """
    found: list[bytes] = []
    for key, value in headers:
        if key.lower() == name:
            found.append(value)
    if not found:
        return None
    return found[0] if len(found) == 1 else b", ".join(found)
