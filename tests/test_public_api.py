"""
The public surface: what perfkit exports, and what importing it costs.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

import perfkit
import perfkit.reference

PUBLIC = [
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

REFERENCE = [
    "Base",
    "Bill",
    "BillRecord",
    "BillStatus",
    "BillStore",
    "NewBill",
    "NewUser",
    "NewVote",
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


HTTP = [
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

FASTAPI = [
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


BUDGETS = [
    "Budget",
    "BudgetError",
    "Budgets",
    "Check",
    "duration_buckets",
    "grafana_dashboard",
    "le_label",
    "load_budgets",
    "prometheus_rules",
    "to_yaml",
]


LOAD = [
    "Arrivals",
    "Budget",
    "BudgetError",
    "Budgets",
    "Capacity",
    "Check",
    "HTTPClient",
    "Recorder",
    "Request",
    "RouteStats",
    "RunResult",
    "Scenario",
    "Step",
    "capacity_markdown",
    "find_capacity",
    "load_budgets",
    "markdown",
    "passed",
    "percentile_plot",
    "rates",
    "report",
    "run",
    "run_in_processes",
    "schedule",
]


PAGINATION = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_LIMIT",
    "KEYS_TABLE",
    "MAX_PAGE",
    "CountStrategy",
    "CursorKeys",
    "CursorPage",
    "Page",
    "SharedCursorKeys",
    "akeyset_batches",
    "apaginate",
    "apaginate_keyset",
    "count_tag",
    "cursor_keys_table",
    "keyset_batches",
    "paginate",
    "paginate_keyset",
    "validate_page",
]

BATCH = ["DEFAULT_CHUNK_SIZE", "BatchResult", "ItemResult", "RowSource", "chunked"]

WEBHOOKS = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOLERANCE",
    "RETRY_SCHEDULE",
    "Delivery",
    "DeliveryStatus",
    "DramatiqWebhooks",
    "Endpoint",
    "EndpointStatus",
    "InvalidSignature",
    "Subscription",
    "Target",
    "WebhookSigner",
    "WebhookWorker",
    "Webhooks",
    "check_url",
    "parse_retry_after",
    "retry_delay",
    "verify_webhook",
]

OUTBOX = [
    "DEFAULT_TABLE",
    "DramatiqPublisher",
    "Event",
    "InProcessPublisher",
    "Outbox",
    "Publisher",
    "Relay",
]

TESTING = [
    "BackendContract",
    "FakeClock",
    "QueryLog",
    "assert_max_queries",
    "count_queries",
    "retries_without_sleep",
    "set_retry_testing",
]


MIGRATIONS = [
    "BRANCHES",
    "REFERENCE_VERSIONS",
    "VERSIONS",
    "VERSION_TABLE",
    "Branch",
    "CopyReport",
    "SchemaState",
    "TableCopy",
    "check",
    "copy_database",
    "include_name",
    "prepare",
    "state",
    "upgrade",
]


OBSERVABILITY = [
    "DB_DURATION",
    "HTTP_DURATION",
    "HTTP_DURATION_BUCKETS",
    "BufferedStreamHandler",
    "Histogram",
    "HistogramPoint",
    "Histograms",
    "InstanceMetrics",
    "RequestTiming",
    "TimingMiddleware",
    "WSGITimingMiddleware",
    "current_timing",
    "instrument",
    "instrument_engine",
    "worker_resource",
]


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("perfkit.http", HTTP),
        ("perfkit.fastapi", FASTAPI),
        ("perfkit.observability", OBSERVABILITY),
        ("perfkit.budgets", BUDGETS),
        ("perfkit.load", LOAD),
        ("perfkit.pagination", PAGINATION),
        ("perfkit.batch", BATCH),
        ("perfkit.outbox", OUTBOX),
        ("perfkit.webhooks", WEBHOOKS),
        ("perfkit.testing", TESTING),
        ("perfkit.migrations", MIGRATIONS),
    ],
)
def test_http_and_fastapi_all_are_pinned(module: str, names: list[str]) -> None:
    """perfkit.http, perfkit.fastapi and perfkit.observability export exactly their public sets."""
    imported = importlib.import_module(module)

    assert imported.__all__ == names
    for name in names:
        assert hasattr(imported, name)


def test_http_needs_no_framework() -> None:
    """import perfkit.http loads no FastAPI, Starlette or pydantic: plain ASGI apps can use it."""
    loaded = _modules_after("import perfkit.http")

    assert set() == {"fastapi", "starlette", "pydantic", "redis"} & loaded


def test_budgets_need_nothing_heavy() -> None:
    """import perfkit.budgets (what a deploy step runs to make alerts) loads no SQLAlchemy,
    OpenTelemetry, HdrHistogram or matplotlib."""
    loaded = _modules_after("import perfkit.budgets")

    assert set() == {"sqlalchemy", "opentelemetry", "hdrh", "matplotlib"} & loaded


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


def _modules_after(code: str) -> set[str]:
    """The names in sys.modules after running *code* in a fresh interpreter."""
    code += "; import json, sys; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out))


# Optional integrations: never loaded by importing perfkit or perfkit.reference.
OPTIONAL = {"redis", "fastapi", "starlette", "uvicorn", "opentelemetry.sdk", "greenlet",
            "aiosqlite", "psycopg", "sqlalchemy.ext.asyncio", "pydantic", "dramatiq",
            "pika", "alembic"}  # fmt: skip
# Loaded only by the parts that use them: not by `import perfkit` nor `import perfkit.cache`.
HEAVY = OPTIONAL | {"sqlalchemy", "tenacity", "opentelemetry", "pybreaker"}

# Where each lazy public name of perfkit is documented to come from.
HOMES = {
    "perfkit.cache": ["Cache", "CacheStats", "JSONCodec", "MemoryBackend", "RedisBackend",
                      "TieredBackend"],
    "perfkit.errors": ["BodyTooLarge", "CircuitOpenError", "CommitOutcomeUnknown", "Conflict",
                       "InvalidCursor", "InvalidInput", "InvalidPage", "NotFound", "Overloaded",
                       "PerfkitError",
                       "SchemaNotCurrent"],
    "perfkit.observability": ["RequestTiming", "TimingMiddleware", "WSGITimingMiddleware",
                              "instrument_engine"],
    "perfkit.pagination": ["CursorPage", "Page", "apaginate", "apaginate_keyset", "paginate",
                           "paginate_keyset"],
    "perfkit.resilience": ["CircuitBreaker", "RetryBudget", "arun_in_transaction", "arun_read",
                           "is_transient", "retry_with_backoff", "run_in_transaction",
                           "run_read"],
}  # fmt: skip


def test_import_stays_light() -> None:
    """import perfkit.reference (and perfkit.outbox) loads no optional integration."""
    loaded = _modules_after("import perfkit, perfkit.reference, perfkit.outbox, perfkit.migrations")

    assert set() == OPTIONAL & loaded


@pytest.mark.parametrize("module", ["perfkit", "perfkit.cache"])
def test_import_loads_no_heavy_dependency(module: str) -> None:
    """import perfkit and import perfkit.cache load no SQLAlchemy, tenacity or OpenTelemetry."""
    loaded = _modules_after(f"import {module}")

    assert set() == HEAVY & loaded


def test_lazy_names_resolve() -> None:
    """Every lazy public name is its submodule's object, kept in perfkit once resolved."""
    homed = sorted(name for names in HOMES.values() for name in names)
    assert sorted(set(PUBLIC) - {"__version__", "db"}) == homed

    for module, names in HOMES.items():
        for name in names:
            expected = getattr(importlib.import_module(module), name)
            assert expected is getattr(perfkit, name)
            assert expected is vars(perfkit)[name]
    assert importlib.import_module("perfkit.db") is perfkit.db


def test_lazy_names_are_listed() -> None:
    """dir(perfkit) lists every public name, resolved or not."""
    assert set() == set(PUBLIC) - set(dir(perfkit))


def test_unknown_name_raises_attribute_error() -> None:
    """An unknown attribute raises the usual AttributeError."""
    with pytest.raises(AttributeError, match=r"^module 'perfkit' has no attribute 'nope'$"):
        perfkit.nope  # type: ignore[attr-defined]  # noqa: B018


def test_from_import_of_submodule() -> None:
    """from perfkit import db gives the submodule, in a fresh interpreter too."""
    loaded = _modules_after("from perfkit import db; assert db.create_engine")

    assert "perfkit.db" in loaded
    assert "sqlalchemy" in loaded


def test_tenacity_loads_on_first_use() -> None:
    """tenacity is loaded by resolving perfkit.retry_with_backoff, not before."""
    code = (
        "import sys, perfkit; "
        "assert 'tenacity' not in sys.modules; "
        "assert 'retry_with_backoff' not in vars(perfkit); "
        "perfkit.retry_with_backoff; "
        "assert 'tenacity' in sys.modules; "
        "assert 'retry_with_backoff' in vars(perfkit)"
    )
    loaded = _modules_after(code)

    assert "tenacity" in loaded


def test_package_is_typed() -> None:
    """The wheel ships py.typed so type checkers use perfkit's annotations."""
    assert perfkit.__file__ is not None
    assert (Path(perfkit.__file__).parent / "py.typed").is_file()


def test_signing_webhooks_needs_no_http_client() -> None:
    """import perfkit.webhooks (sign, verify, schedule, check_url) loads no httpx or dramatiq."""
    loaded = _modules_after("import perfkit.webhooks")

    assert set() == {"httpx", "dramatiq", "pika"} & loaded
