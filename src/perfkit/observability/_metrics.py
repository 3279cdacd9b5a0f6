"""
OpenTelemetry instruments, through opentelemetry-api only.

Per-request and per-query durations are histograms (there is no cheaper way
to export a distribution). Everything that is a count on a hot path — cache
hits and misses, breaker rejections, retries — is kept in plain ints by the
component and exported through observable instruments read at collection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from perfkit._context import REGISTRY
from perfkit._semconv import HTTP_DURATION_BUCKETS

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

__all__ = [
    "DB_DURATION",
    "HTTP_DURATION",
    "HTTP_DURATION_BUCKETS",
    "instrument",
    "meter",
]

HTTP_DURATION: Final = "http.server.request.duration"
DB_DURATION: Final = "db.client.operation.duration"
CACHE_OPERATIONS: Final = "perfkit.cache.operations"
BREAKER_STATE: Final = "perfkit.breaker.state"
BREAKER_REJECTIONS: Final = "perfkit.breaker.rejections"
RETRY_ATTEMPTS: Final = "perfkit.retry.attempts"


_STATE_VALUES: Final = {"closed": 0, "half-open": 1, "open": 2}


def meter(meter_provider: MeterProvider | None = None) -> Meter:
    """perfkit's meter, from *meter_provider* or the global one."""
    from opentelemetry import metrics  # noqa: PLC0415 - keep `import perfkit` light

    from perfkit import __version__  # noqa: PLC0415

    provider = meter_provider or metrics.get_meter_provider()
    return provider.get_meter("perfkit", __version__)


_INSTRUMENTED: set[int] = set()


def instrument(meter_provider: MeterProvider | None = None) -> None:
    """
    Export perfkit's counters as OpenTelemetry observable instruments.

    Reads, at each collection, every live :class:`~perfkit.Cache` (hits,
    misses, stale fills, backend errors, loads, bypassed reads, by
    namespace), every :class:`~perfkit.CircuitBreaker` (state: 0 closed,
    1 half-open, 2 open; rejections) and the process's retry counters.
    Calling it again for the same provider does nothing.

    .. versionadded:: 0.1.0
    """
    from opentelemetry.metrics import Observation  # noqa: PLC0415

    the_meter = meter(meter_provider)
    if id(the_meter) in _INSTRUMENTED:
        return
    _INSTRUMENTED.add(id(the_meter))

    def cache_operations(_options: CallbackOptions) -> Iterable[Observation]:
        for cache in list(REGISTRY.caches):
            stats = cache.stats
            for result, value in (
                ("hit", stats.hits), ("miss", stats.misses), ("stale", stats.stale),
                ("error", stats.errors), ("load", stats.loads), ("bypass", stats.bypassed),
            ):  # fmt: skip
                yield Observation(
                    value,
                    {"perfkit.cache.namespace": cache.namespace, "perfkit.cache.result": result},
                )

    def breaker_state(_options: CallbackOptions) -> Iterable[Observation]:
        for breaker in list(REGISTRY.breakers):
            state = breaker._view.state  # last known state: no storage round trip
            yield Observation(_STATE_VALUES.get(state, -1), {"perfkit.breaker.name": breaker.name})

    def breaker_rejections(_options: CallbackOptions) -> Iterable[Observation]:
        for breaker in list(REGISTRY.breakers):
            yield Observation(breaker.rejections, {"perfkit.breaker.name": breaker.name})

    def retry_attempts(_options: CallbackOptions) -> Iterable[Observation]:
        from perfkit.resilience import retry_stats  # noqa: PLC0415

        yield Observation(retry_stats.retries, {"perfkit.retry.outcome": "retried"})
        yield Observation(retry_stats.gave_up, {"perfkit.retry.outcome": "gave_up"})
        yield Observation(retry_stats.denied, {"perfkit.retry.outcome": "denied"})

    the_meter.create_observable_counter(
        CACHE_OPERATIONS, [cache_operations], unit="{operation}",
        description="Cache reads and fills by result",
    )  # fmt: skip
    the_meter.create_observable_gauge(
        BREAKER_STATE, [breaker_state], unit="1",
        description="Circuit breaker state: 0 closed, 1 half-open, 2 open",
    )  # fmt: skip
    the_meter.create_observable_counter(
        BREAKER_REJECTIONS, [breaker_rejections], unit="{call}",
        description="Calls refused by an open circuit breaker",
    )  # fmt: skip
    the_meter.create_observable_counter(
        RETRY_ATTEMPTS, [retry_attempts], unit="{attempt}",
        description="Retries performed, given up, and denied by a retry budget",
    )  # fmt: skip


Recorder = Callable[[float], None]
"""Records one duration (seconds) in one series."""
Binder = Callable[[Mapping[str, Any]], Recorder]
"""The recorder of one attribute set (callers keep one per set)."""

# Measurements waiting to reach their histograms, flat: record, value, attributes, context,
# record, ... A flat list of objects that exist anyway (the bound record, the cached
# attribute dicts, the current context) allocates nothing the garbage collector tracks,
# where a tuple per measurement would be promoted by every young collection it lives through.
_PENDING: Final[list[Any]] = []
_FIELDS: Final = 4
_FLUSHING: Final = threading.Lock()
BATCH: Final = 64
FLUSH_GAUGE: Final = "perfkit.metrics.flush"


def flush(_options: CallbackOptions | None = None) -> Iterable[Observation]:
    """Hand every pending measurement to its histogram (any thread; observes nothing)."""
    with _FLUSHING:
        # list.extend of a tuple is atomic, so the length is a multiple of _FIELDS.
        taken = _PENDING[:]
        del _PENDING[: len(taken)]
    for i in range(0, len(taken), _FIELDS):
        taken[i](taken[i + 1], taken[i + 2], taken[i + 3])
    return ()


def histogram(the_meter: Meter, name: str, description: str, buckets: tuple[float, ...]) -> Binder:
    """
    A seconds histogram with advised bucket boundaries, recorded in batches.

    The OpenTelemetry SDK spends ~6 us on a ``record()`` when its code is
    warm and about twice that inside a request, where it is not. So
    measurements wait in a queue (with the context they were taken in, for
    exemplars) and reach the SDK up to :data:`BATCH` at a time, in one loop.
    A reader never sees a partial picture: every collection first calls
    :func:`flush` through an observable gauge that observes nothing (the SDK
    runs instrument callbacks before it reads the histograms).
    """
    from opentelemetry.context import get_current  # noqa: PLC0415 - keep `import perfkit` light

    record = the_meter.create_histogram(
        name, unit="s", description=description, explicit_bucket_boundaries_advisory=list(buckets)
    ).record
    # Registered once per meter: the SDK returns the existing gauge for the same name.
    the_meter.create_observable_gauge(
        FLUSH_GAUGE, [flush], unit="1", description="Hands perfkit's queued measurements to the SDK"
    )
    extend = _PENDING.extend
    limit = BATCH * _FIELDS

    def bind(attributes: Mapping[str, Any]) -> Recorder:
        def queued(value: float) -> None:
            extend((record, value, attributes, get_current()))
            if len(_PENDING) >= limit:
                flush()

        return queued

    return bind
