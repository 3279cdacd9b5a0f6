"""
perfkit's HTTP layer, pure ASGI (no framework needed): a response cache on the
data cache's tags, conditional requests, compression, a request-body limit and
one JSON error envelope.

FastAPI users get all of it wired, plus pagination and OpenAPI, from
:mod:`perfkit.fastapi`.
"""

from __future__ import annotations

from ._compression import Compression
from ._response_cache import ResponseCache, tag_response
from ._routes import CachedRoute, Principal

__all__ = [
    "CachedRoute",
    "Compression",
    "Principal",
    "ResponseCache",
    "tag_response",
]
