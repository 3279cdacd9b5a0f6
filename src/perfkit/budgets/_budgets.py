"""
``budgets.json``: per-route latency and error budgets, validated with errors that say where.

The file::

    {
      "version": 1,
      "defaults": {"p50_ms": 25, "p95_ms": 100, "p99_ms": 250, "max_error_rate": 0.01,
                   "rate": 100},
      "routes": [
        {"method": "GET", "route": "/bills/{bill_id}", "p95_ms": 10, "rate": 1000}
      ]
    }

``route`` is the route template exactly as the timing middleware reports
``http.route``; each route takes every field it leaves out from ``defaults``.
Latencies are milliseconds, ``max_error_rate`` a fraction (0.01 is 1 %),
``rate`` the arrival rate (requests per second, the whole run's) at which the
budget must hold. Every latency field is optional, but a route needs at least one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from perfkit._semconv import HTTP_DURATION_BUCKETS

__all__ = ["Budget", "BudgetError", "Budgets", "Check", "duration_buckets", "load_budgets"]

LATENCY_FIELDS: Final = ("p50_ms", "p95_ms", "p99_ms")
_FIELDS: Final = (*LATENCY_FIELDS, "max_error_rate", "rate")
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
PERCENTILES: Final = {"p50_ms": 50.0, "p95_ms": 95.0, "p99_ms": 99.0}


class BudgetError(ValueError):
    """
    ``budgets.json`` is malformed; the message names the offending place (``routes[2].p95_ms``).

    .. versionadded:: 0.2.0
    """


@dataclass(frozen=True, slots=True)
class Check:
    """
    One budget line judged against a run: *name* (``p95_ms``), its *limit*, the *actual*
    figure, and whether it holds.

    .. versionadded:: 0.2.0
    """

    name: str
    limit: float
    actual: float
    ok: bool


@dataclass(frozen=True, slots=True)
class Budget:
    """
    The budget of one route, defaults filled in.

    Attributes:
        method: ``GET``, ``POST``...
        route: The route template (``/bills/{bill_id}``).
        p50_ms: Median latency limit, or ``None``.
        p95_ms: 95th percentile limit, or ``None``.
        p99_ms: 99th percentile limit, or ``None``.
        max_error_rate: Largest fraction of 5xx answers and failed sends.
        rate: Requests per second (whole run) at which the budget must hold.

    .. versionadded:: 0.2.0
    """

    method: str
    route: str
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_error_rate: float
    rate: float

    @property
    def key(self) -> str:
        """``"GET /bills/{bill_id}"``: how reports name the route."""
        return f"{self.method} {self.route}"

    def limits(self) -> dict[float, float]:
        """The latency limits by percentile: ``{50.0: 25.0, 95.0: 100.0}`` (ms)."""
        return {
            PERCENTILES[name]: getattr(self, name)
            for name in LATENCY_FIELDS
            if getattr(self, name) is not None
        }

    def thresholds_seconds(self) -> list[float]:
        """Every latency limit in seconds (histogram bucket boundaries must include them)."""
        return [getattr(self, name) / 1000 for name in LATENCY_FIELDS if getattr(self, name)]

    def judge(
        self, percentile_ms: Mapping[float, float], *, errors: int, count: int
    ) -> list[Check]:
        """The checks of this budget against a run's percentiles (ms) and error count."""
        checks = []
        for name in LATENCY_FIELDS:
            limit = getattr(self, name)
            if limit is not None:
                actual = percentile_ms[PERCENTILES[name]]
                checks.append(Check(name, limit, actual, actual <= limit))
        error_rate = errors / count if count else 0.0
        checks.append(
            Check("error_rate", self.max_error_rate, error_rate, error_rate <= self.max_error_rate)
        )
        return checks


@dataclass(frozen=True, slots=True)
class Budgets:
    """
    Every route's budget (:func:`load_budgets` makes one).

    .. versionadded:: 0.2.0
    """

    defaults: Mapping[str, float]
    routes: tuple[Budget, ...]

    def __iter__(self) -> Iterator[Budget]:
        return iter(self.routes)

    def get(self, method: str, route: str) -> Budget | None:
        """The budget of *method* *route*, or ``None`` if it has none."""
        for budget in self.routes:
            if budget.method == method and budget.route == route:
                return budget
        return None

    def thresholds_seconds(self) -> list[float]:
        """Every latency limit of every route, in seconds, sorted, once each."""
        return sorted({t for budget in self.routes for t in budget.thresholds_seconds()})


def load_budgets(source: str | Path | Mapping[str, Any]) -> Budgets:
    """
    Read and validate a budgets file (a path, or its parsed JSON).

    Raises:
        BudgetError: what is wrong and where (``routes[1].p95_ms: must be a
            positive number of milliseconds, not "fast"``).

    .. versionadded:: 0.2.0
    """
    if isinstance(source, Mapping):
        document: Any = source
    else:
        path = Path(source)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BudgetError(f"{path}: no such file") from None
        except json.JSONDecodeError as exc:
            raise BudgetError(f"{path}: not JSON: {exc}") from None
        except UnicodeDecodeError as exc:
            raise BudgetError(f"{path}: not UTF-8 text: {exc}") from None
        except OSError as exc:
            raise BudgetError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if not isinstance(document, Mapping):
        raise BudgetError("the budgets file must be a JSON object")
    _only(document, {"version", "defaults", "routes", "$comment"}, "")
    if document.get("version") != 1:
        raise BudgetError(f"version: must be 1, not {document.get('version')!r}")
    defaults = document.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise BudgetError("defaults: must be an object")
    _only(defaults, set(_FIELDS), "defaults.")
    checked_defaults = {name: _field(name, value, "defaults.") for name, value in defaults.items()}
    routes = document.get("routes")
    if not isinstance(routes, list) or not routes:
        raise BudgetError("routes: must be a non-empty list")
    budgets = []
    seen: set[tuple[str, str]] = set()
    for i, entry in enumerate(routes):
        budget = _route(entry, checked_defaults, f"routes[{i}].")
        if (budget.method, budget.route) in seen:
            raise BudgetError(f"routes[{i}]: {budget.key} is listed twice")
        seen.add((budget.method, budget.route))
        budgets.append(budget)
    return Budgets(checked_defaults, tuple(budgets))


def _route(entry: Any, defaults: Mapping[str, float], where: str) -> Budget:
    if not isinstance(entry, Mapping):
        raise BudgetError(f"{where.rstrip('.')}: must be an object")
    _only(entry, {"method", "route", "$comment", *_FIELDS}, where)
    method = entry.get("method")
    if method not in _METHODS:
        raise BudgetError(f"{where}method: must be one of {sorted(_METHODS)}, not {method!r}")
    route = entry.get("route")
    if not isinstance(route, str) or not route.startswith("/"):
        raise BudgetError(f"{where}route: must be a route template starting with /, not {route!r}")
    values = dict(defaults)
    values.update({name: _field(name, value, where) for name, value in entry.items()
                   if name in _FIELDS})  # fmt: skip
    if not any(values.get(name) for name in LATENCY_FIELDS):
        raise BudgetError(f"{where.rstrip('.')}: no latency budget (p50_ms, p95_ms or p99_ms)")
    if "max_error_rate" not in values or "rate" not in values:
        missing = "max_error_rate" if "max_error_rate" not in values else "rate"
        raise BudgetError(f"{where}{missing}: missing here and in defaults")
    limits = [values[name] for name in LATENCY_FIELDS if values.get(name) is not None]
    if limits != sorted(limits):
        raise BudgetError(
            f"{where.rstrip('.')}: p50_ms <= p95_ms <= p99_ms must hold, got {limits}"
        )
    return Budget(
        method=method,
        route=route,
        p50_ms=values.get("p50_ms"),
        p95_ms=values.get("p95_ms"),
        p99_ms=values.get("p99_ms"),
        max_error_rate=values["max_error_rate"],
        rate=values["rate"],
    )


def _field(name: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BudgetError(f"{where}{name}: must be a number, not {value!r}")
    if name == "max_error_rate":
        if not 0 <= value <= 1:
            raise BudgetError(f"{where}{name}: must be a fraction from 0 to 1, not {value!r}")
    elif value <= 0:
        unit = "requests per second" if name == "rate" else "milliseconds"
        raise BudgetError(f"{where}{name}: must be a positive number of {unit}, not {value!r}")
    return float(value)


def _only(mapping: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise BudgetError(f"{where}{unknown[0]}: unknown field (allowed: {sorted(allowed)})")


def duration_buckets(
    budgets: Budgets, base: Iterable[float] = HTTP_DURATION_BUCKETS
) -> tuple[float, ...]:
    """
    *base* bucket boundaries (seconds) plus every latency threshold of *budgets*, sorted:
    pass them to :class:`~perfkit.TimingMiddleware` (``duration_buckets=``) so each
    threshold the alerts test has a boundary exactly there. Without one, the fraction of
    requests above 30 ms can only be guessed from the 25 and 50 ms buckets.

    .. versionadded:: 0.2.0
    """
    return tuple(sorted({*(float(value) for value in base), *budgets.thresholds_seconds()}))
