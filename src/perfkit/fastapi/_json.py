"""
:class:`JSONBytes`: records straight to JSON bytes with orjson, no pydantic pass.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

__all__ = ["JSONBytes"]


class JSONBytes(Response):
    """
    A JSON response encoded by orjson, records (dataclasses) and all.

    Return it from a route to skip FastAPI's return-value handling: no
    ``to_dict()``, no ``jsonable_encoder``, no pydantic validation of the
    result (which, for a sync route, is a second trip through the thread
    pool). orjson encodes dataclasses, datetimes (``isoformat()``'s form,
    ``+00:00`` for UTC), dates, enums (their values), UUIDs and the usual
    containers; a property is not a field, so a record with computed fields
    should be passed as its dict. A type it cannot encode raises
    ``TypeError``, as ``json.dumps`` would.

    Declare ``response_class=JSONBytes`` on the route so OpenAPI says JSON::

        @app.get("/orders/{order_id}", response_class=JSONBytes)
        def get_order(order_id: int) -> JSONBytes:
            return JSONBytes(store.get(order_id))

    Measured in docs/benchmarks.md ("JSON bodies"): 0.15x FastAPI's own path
    for one record, the same bytes.

    .. versionadded:: 0.2.0
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Encode *content* (bytes pass through as they are)."""
        if isinstance(content, bytes):
            return content
        return orjson.dumps(content)
