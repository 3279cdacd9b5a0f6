"""
The public surface: what perfkit exports, and what importing it costs.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import perfkit
import perfkit.reference

PUBLIC = [
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
    "Page",
    "PerfkitError",
    "RedisBackend",
    "RequestTiming",
    "RetryBudget",
    "TieredBackend",
    "TimingMiddleware",
    "WSGITimingMiddleware",
    "__version__",
    "apaginate",
    "apaginate_keyset",
    "arun_in_transaction",
    "db",
    "instrument_engine",
    "is_transient",
    "paginate",
    "paginate_keyset",
    "retry_with_backoff",
    "run_in_transaction",
]

REFERENCE = [
    "Base",
    "Bill",
    "BillRecord",
    "BillStatus",
    "BillStore",
    "SeedSummary",
    "Stores",
    "User",
    "UserRecord",
    "UserStore",
    "Vote",
    "VoteChoice",
    "VoteCounts",
    "VoteRecord",
    "VoteStore",
    "codec",
    "open_stores",
    "seed",
]


def test_all_is_pinned_and_sorted() -> None:
    """perfkit.__all__ is exactly the public set, sorted, and every name resolves."""
    assert perfkit.__all__ == PUBLIC
    assert sorted(PUBLIC) == PUBLIC
    for name in PUBLIC:
        assert hasattr(perfkit, name)


def test_reference_all_is_pinned() -> None:
    """perfkit.reference.__all__ is exactly its public set."""
    assert perfkit.reference.__all__ == REFERENCE
    for name in REFERENCE:
        assert hasattr(perfkit.reference, name)


def test_version_matches_distribution() -> None:
    """__version__ is the installed distribution's version."""
    assert importlib.metadata.version("perfkit") == perfkit.__version__


def test_import_stays_light() -> None:
    """import perfkit (and perfkit.reference) loads no optional integration."""
    code = (
        "import json, sys, perfkit, perfkit.reference; "
        "print(json.dumps(sorted(m for m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    loaded = set(json.loads(out))

    heavy = {"redis", "fastapi", "starlette", "uvicorn", "opentelemetry.sdk", "greenlet",
             "aiosqlite", "psycopg", "sqlalchemy.ext.asyncio", "pydantic"}  # fmt: skip
    assert set() == heavy & loaded


def test_package_is_typed() -> None:
    """The wheel ships py.typed so type checkers use perfkit's annotations."""
    assert perfkit.__file__ is not None
    assert (Path(perfkit.__file__).parent / "py.typed").is_file()
