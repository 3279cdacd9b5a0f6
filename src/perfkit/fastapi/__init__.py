"""
perfkit's FastAPI integration (``pip install perfkit[app]``).

* :func:`install`: one JSON error envelope for perfkit's errors and FastAPI's
  alike, a request-body limit, a correct ``Allow`` on 405, and OpenAPI that
  documents every error status of every route with the envelope's schema.
* :func:`error_responses`: document the perfkit errors a route raises
  (``responses=error_responses(Conflict)``).
* :func:`health_routes`: ``/healthz`` (liveness) and ``/readyz`` (readiness:
  the database and the cache probed, 503 while a critical one is down).
* :class:`JSONBytes`: records to JSON bytes with orjson, skipping FastAPI's
  validation of the return value.
* :class:`ExportResponse`: a listing streamed as NDJSON or CSV, batch by
  batch (from :func:`perfkit.pagination.keyset_batches`).
* :class:`Pagination` / :data:`Paginated`: ``page``/``limit``/``cursor``
  validated once, JSON bodies for :class:`~perfkit.pagination.Page` and
  :class:`~perfkit.pagination.CursorPage`, and RFC 8288 ``Link`` headers.

The framework-free parts (the envelope, :class:`~perfkit.http.BodyLimit`)
live in :mod:`perfkit.http`, which a plain Starlette app can use alone.
"""

from __future__ import annotations

from ._export import EXPORT_FORMATS, ExportFormat, ExportResponse
from ._health import health_routes
from ._install import DEFAULT_MAX_BODY_BYTES, DEFAULT_RETRY_AFTER, install
from ._json import JSONBytes
from ._openapi import error_responses
from ._pagination import Paginated, Pagination, cursor_body, page_body

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_RETRY_AFTER",
    "EXPORT_FORMATS",
    "ExportFormat",
    "ExportResponse",
    "JSONBytes",
    "Paginated",
    "Pagination",
    "cursor_body",
    "error_responses",
    "health_routes",
    "install",
    "page_body",
]
