"""
perfkit: fast, resilient data-backed Python APIs.

The public API is what this module exports; everything in a module whose name
starts with an underscore is private. Optional integrations (Redis, FastAPI,
the OpenTelemetry SDK) are never imported by ``import perfkit``.
"""

from __future__ import annotations

from . import db
from .errors import Conflict, InvalidInput, InvalidPage, NotFound, PerfkitError
from .pagination import Page, paginate

__version__ = "0.1.0"

__all__ = [
    "Conflict",
    "InvalidInput",
    "InvalidPage",
    "NotFound",
    "Page",
    "PerfkitError",
    "__version__",
    "db",
    "paginate",
]
