"""
Query timing for SQLAlchemy engines: into the request context and ``db.client.operation.duration``.
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import event
from sqlalchemy.engine import Engine

from perfkit._context import CURRENT
from perfkit._semconv import DB_DURATION_BUCKETS

from ._histograms import Histograms
from ._metrics import DB_DURATION, Binder, Recorder, histogram, meter

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["instrument_engine"]

_STARTED: Final = "_perfkit_query_started"
_INSTRUMENTED: Final[weakref.WeakSet[Engine]] = weakref.WeakSet()
_CONTROL: Final = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"})
_OPERATIONS: Final = frozenset(
    {
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "WITH",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
    }
)


def instrument_engine(
    engine: Engine | AsyncEngine,
    *,
    meter_provider: MeterProvider | None = None,
    metrics: bool | Histograms = True,
) -> None:
    """
    Time every statement *engine* runs.

    Instrumenting the same engine again does nothing. Each statement's
    duration is added to the current request's
    :class:`~perfkit.observability.RequestTiming` (``db`` in ``Server-Timing``
    and the request log line; transaction control such as ``BEGIN`` adds
    time but is not counted as a query) and, with *metrics*, recorded in the
    ``db.client.operation.duration`` histogram with ``db.system.name`` and
    ``db.operation.name`` (the statement's first keyword; never its text):
    the OpenTelemetry SDK's, or, given *metrics* as a
    :class:`~perfkit.observability.Histograms`, one counted there.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 *metrics* takes :class:`~perfkit.observability.Histograms`.
    """
    if isinstance(metrics, Histograms) and meter_provider is not None:
        raise ValueError("metrics=Histograms takes no meter_provider: give one or the other")
    sync_engine: Engine = engine if isinstance(engine, Engine) else engine.sync_engine
    if sync_engine in _INSTRUMENTED:
        return  # twice would count every statement twice
    _INSTRUMENTED.add(sync_engine)
    system = sync_engine.dialect.name
    bind: Binder | None = None
    if isinstance(metrics, Histograms):
        bind = metrics.histogram(
            DB_DURATION, buckets=DB_DURATION_BUCKETS, description="Duration of database statements"
        ).series
    elif metrics:
        bind = histogram(
            meter(meter_provider), DB_DURATION, "Duration of database statements",
            DB_DURATION_BUCKETS,
        )  # fmt: skip
    recorders: dict[str, Recorder] = {}

    def before(
        conn: Any, _cursor: Any, _stmt: str, _params: Any, context: Any, _many: bool
    ) -> None:
        if context is None:  # a statement of SQLAlchemy's own small path (or the outbox's)
            conn.info[_STARTED] = time.perf_counter()
        else:
            setattr(context, _STARTED, time.perf_counter())

    def after(conn: Any, _cursor: Any, stmt: str, _params: Any, context: Any, _many: bool) -> None:
        if context is None:
            started = conn.info.pop(_STARTED, None)
        else:
            started = getattr(context, _STARTED, None)
        if started is None:
            return
        elapsed = time.perf_counter() - started
        head = stmt.lstrip()[:10].split(None, 1)
        operation = head[0].upper() if head else ""
        if operation not in _OPERATIONS:
            operation = "OTHER"
        timing = CURRENT.get()
        if timing is not None:
            timing.db_seconds += elapsed
            if operation not in _CONTROL:  # BEGIN/COMMIT are not queries
                timing.db_queries += 1
        if bind is not None:
            record = recorders.get(operation)
            if record is None:
                record = recorders[operation] = bind(
                    {"db.system.name": system, "db.operation.name": operation}
                )
            record(elapsed)

    event.listen(sync_engine, "before_cursor_execute", before)
    event.listen(sync_engine, "after_cursor_execute", after)
