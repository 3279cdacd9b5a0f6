"""
A Grafana dashboard made from a budgets file: the service at a glance, then one row per
budgeted route with its rate, errors and latency drawn against its budget lines.

Import the JSON in Grafana (Dashboards → New → Import) and pick a Prometheus data source.
Queries use ``$__rate_interval`` and the dashboard's ``datasource`` variable.
"""

from __future__ import annotations

import re
from typing import Any, Final

from ._budgets import LATENCY_FIELDS, PERCENTILES, Budget, Budgets
from ._promql import (
    BREAKER_STATE,
    CACHE_OPERATIONS,
    DB_DURATION,
    DURATION,
    braces,
    matchers_of,
    quote,
    route_matchers,
)

__all__ = ["grafana_dashboard"]

RATE: Final = "$__rate_interval"
SCHEMA_VERSION: Final = 39
_DATASOURCE: Final = {"type": "prometheus", "uid": "${datasource}"}
_COLOURS: Final = {"p50_ms": "green", "p95_ms": "orange", "p99_ms": "red"}


def grafana_dashboard(
    budgets: Budgets,
    *,
    title: str = "perfkit: budgets",
    uid: str | None = None,
    selector: str = "",
) -> dict[str, Any]:
    """
    A Grafana dashboard (JSON model) for the routes in *budgets*.

    At the top: request rate, 5xx ratio, database time (p95 and mean per statement),
    cache hit ratio per namespace, circuit breaker state. Then a row per route: its
    rate, its 5xx ratio against ``max_error_rate``, and p50/p95/p99 latency with each
    budget drawn as a threshold line.

    Args:
        budgets: From :func:`load_budgets`.
        title: The dashboard's title.
        uid: Grafana's id for it (default: made from *title*), so re-importing replaces it.
        selector: Label matchers added to every query, e.g. ``job="bill-api"``.

    .. versionadded:: 0.2.0
    """
    matchers = matchers_of(selector)
    panels: list[dict[str, Any]] = []
    y = 0

    def add(panel: dict[str, Any], width: int, height: int = 8) -> None:
        nonlocal y
        row_x = sum(p["gridPos"]["w"] for p in panels if p["gridPos"]["y"] == y)
        if row_x + width > 24:
            y += height
            row_x = 0
        panel["id"] = len(panels) + 1
        panel["gridPos"] = {"h": height, "w": width, "x": row_x, "y": y}
        panels.append(panel)

    def row(name: str) -> None:
        nonlocal y
        if panels:
            y = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
        add({"type": "row", "title": name, "collapsed": False, "panels": []}, 24, 1)
        y += 1

    every = braces(matchers)
    errors = braces([*matchers, "http_response_status_code=~" + quote("5..")])
    row("Service")
    add(_timeseries("Requests / s by route", "reqps", [
        (f"sum by (http_request_method, http_route) (rate({DURATION}_count{every}[{RATE}]))",
         "{{http_request_method}} {{http_route}}"),
    ]), 8)  # fmt: skip
    add(_timeseries("5xx ratio", "percentunit", [
        (f"sum(rate({DURATION}_count{errors}[{RATE}])) / "
         f"sum(rate({DURATION}_count{every}[{RATE}]))", "5xx"),
    ]), 8)  # fmt: skip
    add(_timeseries("Database time per statement", "s", [
        (f"histogram_quantile(0.95, sum by (le) (rate({DB_DURATION}_bucket{every}[{RATE}])))",
         "p95"),
        (f"sum(rate({DB_DURATION}_sum{every}[{RATE}])) / "
         f"sum(rate({DB_DURATION}_count{every}[{RATE}]))", "mean"),
    ]), 8)  # fmt: skip
    hits = braces([*matchers, "perfkit_cache_result=" + quote("hit")])
    reads = braces([*matchers, "perfkit_cache_result=~" + quote("hit|miss")])
    add(_timeseries("Cache hit ratio", "percentunit", [
        (f"sum by (perfkit_cache_namespace) (rate({CACHE_OPERATIONS}{hits}[{RATE}])) / "
         f"sum by (perfkit_cache_namespace) (rate({CACHE_OPERATIONS}{reads}[{RATE}]))",
         "{{perfkit_cache_namespace}}"),
    ], maximum=1), 12)  # fmt: skip
    add(_breaker_panel(every), 12)
    for budget in budgets:
        row(budget.key)
        add(_route_rate(budget, matchers), 6)
        add(_route_errors(budget, matchers), 6)
        add(_route_latency(budget, matchers), 12)
    return {
        "title": title,
        "uid": uid or _uid(title),
        "tags": ["perfkit", "budgets"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def _route_rate(budget: Budget, matchers: list[str]) -> dict[str, Any]:
    route = braces([*matchers, *route_matchers(budget)])
    return _timeseries(
        "Requests / s", "reqps", [(f"sum(rate({DURATION}_count{route}[{RATE}]))", "requests")]
    )


def _route_errors(budget: Budget, matchers: list[str]) -> dict[str, Any]:
    route = braces([*matchers, *route_matchers(budget)])
    failed = braces(
        [*matchers, *route_matchers(budget), "http_response_status_code=~" + quote("5..")]
    )
    panel = _timeseries("5xx ratio", "percentunit", [
        (f"sum(rate({DURATION}_count{failed}[{RATE}])) / "
         f"sum(rate({DURATION}_count{route}[{RATE}]))", "5xx"),
    ])  # fmt: skip
    _threshold_lines(panel, [(budget.max_error_rate, "red")])
    return panel


def _route_latency(budget: Budget, matchers: list[str]) -> dict[str, Any]:
    route = braces([*matchers, *route_matchers(budget)])
    queries = []
    lines = []
    for name in LATENCY_FIELDS:
        quantile = PERCENTILES[name] / 100
        queries.append((
            f"histogram_quantile({quantile:g}, sum by (le) "
            f"(rate({DURATION}_bucket{route}[{RATE}])))",
            f"p{PERCENTILES[name]:g}",
        ))  # fmt: skip
        limit = getattr(budget, name)
        if limit is not None:
            lines.append((limit / 1000, _COLOURS[name]))
    limits = ", ".join(f"p{p:g} ≤ {limit:g} ms" for p, limit in budget.limits().items())
    panel = _timeseries(f"Latency (budget: {limits})", "s", queries)
    _threshold_lines(panel, lines)
    return panel


def _breaker_panel(every: str) -> dict[str, Any]:
    panel = _timeseries(
        "Circuit breakers (0 closed, 1 half-open, 2 open)", "none",
        [(f"max by (perfkit_breaker_name) ({BREAKER_STATE}{every})", "{{perfkit_breaker_name}}")],
        maximum=2,
    )  # fmt: skip
    panel["type"] = "state-timeline"
    panel["fieldConfig"]["defaults"]["mappings"] = [
        {
            "type": "value",
            "options": {
                "0": {"text": "closed", "color": "green", "index": 0},
                "1": {"text": "half-open", "color": "orange", "index": 1},
                "2": {"text": "open", "color": "red", "index": 2},
            },
        }
    ]
    return panel


def _timeseries(
    title: str, unit: str, queries: list[tuple[str, str]], *, maximum: float | None = None
) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit, "min": 0}
    if maximum is not None:
        defaults["max"] = maximum
    return {
        "type": "timeseries",
        "title": title,
        "datasource": dict(_DATASOURCE),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": dict(_DATASOURCE),
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (expr, legend) in enumerate(queries)
        ],
    }


def _threshold_lines(panel: dict[str, Any], lines: list[tuple[float, str]]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    defaults["thresholds"] = {
        "mode": "absolute",
        "steps": [{"color": "transparent", "value": None}]
        + [{"color": colour, "value": value} for value, colour in sorted(lines)],
    }
    defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}


def _uid(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40] or "perfkit"
