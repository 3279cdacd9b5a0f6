"""
The JSON error envelope every perfkit HTTP error uses, framework-free.

Every error response has the body::

    {"error": {"code": "not_found", "message": "bill with id=9 does not exist"}}

``code`` is stable and machine-readable, ``message`` is for people; some
errors add members (a validation error lists its ``fields``). This module
maps perfkit's exceptions to statuses, describes the envelope as a JSON
Schema for OpenAPI, and sends an error over raw ASGI for middleware that
runs outside any framework (the body limit, the response cache).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from perfkit.errors import (
    BodyTooLarge,
    CircuitOpenError,
    CommitOutcomeUnknown,
    Conflict,
    InvalidInput,
    InvalidSignature,
    NotFound,
    Overloaded,
    PerfkitError,
)

from ._asgi import Send

__all__ = [
    "ERROR_SCHEMA",
    "ERROR_STATUS",
    "encode_error",
    "error_body",
    "error_headers",
    "error_status",
    "send_error",
    "send_error_for",
]

ERROR_STATUS: Final[Mapping[type[PerfkitError], int]] = MappingProxyType(
    {
        NotFound: 404,
        Conflict: 409,
        BodyTooLarge: 413,
        InvalidSignature: 401,  # a webhook receiver's answer: not signed by a known secret
        InvalidInput: 422,  # InvalidPage and InvalidCursor too
        CircuitOpenError: 503,  # a dependency is down: come back after Retry-After
        CommitOutcomeUnknown: 503,  # not a bug: the database went away mid-COMMIT
        Overloaded: 503,  # a bounded resource is full: come back after Retry-After
        PerfkitError: 500,
    }
)
"""The HTTP status of each perfkit error; a subclass takes its nearest listed base's."""

ERROR_SCHEMA: Final[dict[str, Any]] = {
    "title": "ErrorEnvelope",
    "description": "The body of every error response.",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "type": "string",
                    "description": "Stable, machine-readable: not_found, conflict, "
                    "validation_error, invalid_input, malformed_json, ...",
                },
                "message": {"type": "string", "description": "For people; never echoes input"},
                "fields": {
                    "type": "array",
                    "description": "validation_error only: each invalid field",
                    "items": {
                        "type": "object",
                        "required": ["field", "message"],
                        "properties": {
                            "field": {"type": "string", "examples": ["body.email"]},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
            "additionalProperties": True,
        }
    },
}
"""The envelope as a JSON Schema (draft 2020-12, as OpenAPI 3.1 uses); copy it to change it."""


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """
    Return the JSON error envelope ``{"error": {"code", "message", **extra}}``.

    Args:
        code: The stable machine-readable code (``"not_found"``).
        message: What went wrong, for people. Never put the rejected input in it.
        extra: More members of ``error`` (``fields=[...]``).

    Example::

        >>> error_body("not_found", "note 7 does not exist")
        {'error': {'code': 'not_found', 'message': 'note 7 does not exist'}}

    .. versionadded:: 0.2.0
    """
    return {"error": {"code": code, "message": message, **extra}}


def encode_error(code: str, message: str, **extra: Any) -> bytes:
    """
    Return :func:`error_body` as compact UTF-8 JSON (as Starlette's ``JSONResponse`` renders it).

    .. versionadded:: 0.2.0
    """
    body = error_body(code, message, **extra)
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def error_status(error: PerfkitError | type[PerfkitError]) -> int:
    """
    Return the HTTP status for *error* (an exception or its class): its nearest class in
    :data:`ERROR_STATUS`.

    .. versionadded:: 0.2.0
    """
    cls_of = error if isinstance(error, type) else type(error)
    for cls in cls_of.__mro__:
        status = ERROR_STATUS.get(cls)
        if status is not None:
            return status
    return 500  # pragma: no cover - PerfkitError itself is listed


def error_headers(exc: PerfkitError) -> dict[str, str]:
    """
    Return the headers an error response for *exc* carries.

    A :class:`~perfkit.errors.CircuitOpenError` or :class:`~perfkit.errors.Overloaded` says
    when to come back:
    ``Retry-After`` in whole seconds, rounded up. A
    :class:`~perfkit.errors.CommitOutcomeUnknown` does not: the client
    must first find out whether its write was applied.

    .. versionadded:: 0.2.0
    """
    if isinstance(exc, CircuitOpenError | Overloaded):
        return {"Retry-After": str(max(0, math.ceil(exc.retry_after)))}
    return {}


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> None:
    """
    Send a whole JSON error response over ASGI *send*, no framework needed.

    Args:
        send: The ASGI ``send`` callable; the response must not have started.
        status: The HTTP status.
        code: The envelope's ``code``.
        message: The envelope's ``message``.
        headers: More response headers (``Retry-After``…).
        extra: More members of the envelope's ``error``.

    Example::

        await send_error(send, 503, "unavailable", "the cache is warming up",
                         headers={"Retry-After": "5"})

    .. versionadded:: 0.2.0
    """
    body = encode_error(code, message, **extra)
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    raw += [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in (headers or {}).items()
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_error_for(send: Send, exc: PerfkitError) -> None:
    """
    Send the JSON error response for *exc*: its status, code, message and headers.

    .. versionadded:: 0.2.0
    """
    await send_error(send, error_status(exc), exc.code, exc.message, headers=error_headers(exc))
