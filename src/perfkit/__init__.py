"""
perfkit: fast, resilient data-backed Python APIs.

The public API is what this module exports; everything in a module whose name
starts with an underscore is private. Optional integrations (Redis, FastAPI,
the OpenTelemetry SDK) are never imported by ``import perfkit``.

``import perfkit`` is light: each public name is imported from its submodule on
first use (:pep:`562`), so SQLAlchemy, tenacity and the OpenTelemetry API load
only when a part that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from . import db
    from ._context import RequestTiming
    from .cache import Cache, CacheStats, JSONCodec, MemoryBackend, RedisBackend, TieredBackend
    from .errors import (
        BodyTooLarge,
        CircuitOpenError,
        CommitOutcomeUnknown,
        Conflict,
        InvalidCursor,
        InvalidInput,
        InvalidPage,
        NotFound,
        Overloaded,
        PerfkitError,
        SchemaNotCurrent,
    )
    from .observability import TimingMiddleware, WSGITimingMiddleware, instrument_engine
    from .pagination import (
        CursorPage,
        Page,
        apaginate,
        apaginate_keyset,
        paginate,
        paginate_keyset,
    )
    from .resilience import (
        CircuitBreaker,
        RetryBudget,
        arun_in_transaction,
        arun_read,
        is_transient,
        retry_with_backoff,
        run_in_transaction,
        run_read,
    )

__version__ = "0.1.0"

__all__ = [
    "BodyTooLarge",
    "Cache",
    "CacheStats",
    "CircuitBreaker",
    "CircuitOpenError",
    "CommitOutcomeUnknown",
    "Conflict",
    "CursorPage",
    "InvalidCursor",
    "InvalidInput",
    "InvalidPage",
    "JSONCodec",
    "MemoryBackend",
    "NotFound",
    "Overloaded",
    "Page",
    "PerfkitError",
    "RedisBackend",
    "RequestTiming",
    "RetryBudget",
    "SchemaNotCurrent",
    "TieredBackend",
    "TimingMiddleware",
    "WSGITimingMiddleware",
    "__version__",
    "apaginate",
    "apaginate_keyset",
    "arun_in_transaction",
    "arun_read",
    "db",
    "instrument_engine",
    "is_transient",
    "paginate",
    "paginate_keyset",
    "retry_with_backoff",
    "run_in_transaction",
    "run_read",
]

# Public name -> the module it is imported from, relative to this package.
_LAZY: Final[dict[str, str]] = {
    "BodyTooLarge": ".errors",
    "Cache": ".cache",
    "CacheStats": ".cache",
    "CircuitBreaker": ".resilience",
    "CircuitOpenError": ".errors",
    "CommitOutcomeUnknown": ".errors",
    "Conflict": ".errors",
    "CursorPage": ".pagination",
    "InvalidCursor": ".errors",
    "InvalidInput": ".errors",
    "InvalidPage": ".errors",
    "JSONCodec": ".cache",
    "MemoryBackend": ".cache",
    "NotFound": ".errors",
    "Overloaded": ".errors",
    "Page": ".pagination",
    "PerfkitError": ".errors",
    "RedisBackend": ".cache",
    "RequestTiming": "._context",
    "RetryBudget": ".resilience",
    "SchemaNotCurrent": ".errors",
    "TieredBackend": ".cache",
    "TimingMiddleware": ".observability",
    "WSGITimingMiddleware": ".observability",
    "apaginate": ".pagination",
    "apaginate_keyset": ".pagination",
    "arun_in_transaction": ".resilience",
    "arun_read": ".resilience",
    "db": ".db",
    "instrument_engine": ".observability",
    "is_transient": ".resilience",
    "paginate": ".pagination",
    "paginate_keyset": ".pagination",
    "retry_with_backoff": ".resilience",
    "run_in_transaction": ".resilience",
    "run_read": ".resilience",
}
# Public names that are submodules themselves rather than names in one.
_SUBMODULES: Final = frozenset({"db"})


# Under ``if not TYPE_CHECKING`` so type checkers see only the imports above and
# still flag a misspelt ``perfkit.<name>`` (a module ``__getattr__`` would make it ``Any``).
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """
        Import a public name from its submodule on first access and keep it here.
        """
        try:
            module_name = _LAZY[name]
        except KeyError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        module = importlib.import_module(module_name, __name__)
        value = module if name in _SUBMODULES else getattr(module, name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    """
    The module's names, the public ones not yet imported included.
    """
    return sorted(set(globals()) | set(__all__))
