"""
A :class:`~perfkit.batch.BatchResult` as a JSON body: one result per item, each with its status.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ._envelope import ERROR_SCHEMA, error_body, error_status

if TYPE_CHECKING:
    from perfkit.batch import BatchResult

__all__ = ["BATCH_SCHEMA", "batch_body"]


def batch_body(
    result: BatchResult[Any],
    *,
    stored_status: int = 201,
    item: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """
    Return ``{"stored": n, "failed": m, "results": [...]}`` for *result*, in input order.

    Each result has the item's ``index`` and the ``status`` it would have had
    alone: *stored_status* with the record as ``data``, or the error's
    status (:data:`ERROR_STATUS`) with the envelope's ``error``, so a client
    handles a failed item as it handles a failed single request. The
    request as a whole answers 200: it was processed.

    Args:
        result: What the batch write returned.
        stored_status: The status of a stored item (201 for creations).
        item: Turns a stored record into JSON-ready data (default: the record
            as it is, for an encoder such as orjson that takes dataclasses).

    Example::

        return JSONBytes(batch_body(store.create_many(body.items)))

    .. versionadded:: 0.2.0
    """
    results: list[dict[str, Any]] = []
    stored = 0
    for entry in result.items:
        error = entry.error
        if error is None:
            stored += 1
            data = entry.value if item is None else item(entry.value)
            results.append({"index": entry.index, "status": stored_status, "data": data})
        else:
            body = error_body(error.code, error.message)
            results.append({"index": entry.index, "status": error_status(error), **body})
    return {"stored": stored, "failed": len(results) - stored, "results": results}


BATCH_SCHEMA: Final[dict[str, Any]] = {
    "title": "BatchResult",
    "description": "One result per item, in input order, with the status it would have had alone.",
    "type": "object",
    "required": ["stored", "failed", "results"],
    "properties": {
        "stored": {"type": "integer", "description": "Items stored."},
        "failed": {"type": "integer", "description": "Items not stored."},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "status"],
                "properties": {
                    "index": {"type": "integer", "description": "The item's position, from 0."},
                    "status": {"type": "integer", "description": "201, or the error's status."},
                    "data": {"description": "The stored record (when stored)."},
                    "error": ERROR_SCHEMA["properties"]["error"],
                },
            },
        },
    },
}
"""The OpenAPI schema of :func:`batch_body`'s output."""
