"""
perfkit's HTTP layer, pure ASGI (no framework needed): a response cache on the
data cache's tags, conditional requests, compression, a request-body limit and
one JSON error envelope, readiness probes, and streamed NDJSON/CSV exports.

FastAPI users get the envelope, the body limit, pagination and OpenAPI wired
by :mod:`perfkit.fastapi`; the response cache and compression wrap any ASGI app.
"""

from __future__ import annotations

from ._batch import BATCH_SCHEMA, batch_body
from ._body_limit import BodyLimit
from ._compression import Compression
from ._envelope import (
    ERROR_SCHEMA,
    ERROR_STATUS,
    encode_error,
    error_body,
    error_headers,
    error_status,
    send_error,
    send_error_for,
)
from ._export import (
    CSV_MEDIA_TYPE,
    NDJSON_MEDIA_TYPE,
    CSVEncoder,
    acsv_chunks,
    andjson_chunks,
    csv_chunks,
    ndjson_batch,
    ndjson_chunks,
)
from ._health import (
    DEFAULT_PROBE_TIMEOUT,
    Probe,
    Readiness,
    cache_probe,
    database_probe,
    drain_on_sigterm,
)
from ._response_cache import ResponseCache, tag_response
from ._routes import CachedRoute, Principal
from ._stream_limit import DEFAULT_STREAM_LIMIT, SendTimeout, StreamLimit

__all__ = [
    "BATCH_SCHEMA",
    "CSV_MEDIA_TYPE",
    "DEFAULT_PROBE_TIMEOUT",
    "DEFAULT_STREAM_LIMIT",
    "ERROR_SCHEMA",
    "ERROR_STATUS",
    "NDJSON_MEDIA_TYPE",
    "BodyLimit",
    "CSVEncoder",
    "CachedRoute",
    "Compression",
    "Principal",
    "Probe",
    "Readiness",
    "ResponseCache",
    "SendTimeout",
    "StreamLimit",
    "acsv_chunks",
    "andjson_chunks",
    "batch_body",
    "cache_probe",
    "csv_chunks",
    "database_probe",
    "drain_on_sigterm",
    "encode_error",
    "error_body",
    "error_headers",
    "error_status",
    "ndjson_batch",
    "ndjson_chunks",
    "send_error",
    "send_error_for",
    "tag_response",
]
