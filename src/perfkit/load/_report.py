"""
A run's report: JSON (for machines and CI) and a Markdown table (for people), each route
judged against its budget.
"""

from __future__ import annotations

from typing import Any

from perfkit.budgets import Budgets

from ._runner import RunResult
from ._stats import PERCENTILES

__all__ = ["markdown", "passed", "report"]

_NAMES = {50.0: "p50_ms", 90.0: "p90_ms", 95.0: "p95_ms", 99.0: "p99_ms", 100.0: "max_ms"}


def report(result: RunResult, budgets: Budgets | None = None) -> dict[str, Any]:
    """
    The JSON report: the run's validity, then per route its count, errors, latency
    percentiles (ms, from each request's intended start), achieved rate, and each
    budget check (``limit``, ``actual``, ``ok``).

    .. versionadded:: 0.2.0
    """
    routes: dict[str, Any] = {}
    for name, stats in sorted(result.routes.items()):
        percentiles = stats.percentiles_ms(PERCENTILES)
        entry: dict[str, Any] = {
            "count": stats.count,
            "errors": stats.errors,
            "statuses": dict(sorted(stats.statuses.items())),
            "rate": round(stats.count / result.duration, 1) if result.duration else 0.0,
            **{_NAMES[p]: round(value, 3) for p, value in percentiles.items()},
        }
        method, _, route = name.partition(" ")
        budget = budgets.get(method, route) if budgets is not None else None
        if budget is not None:
            entry["budget"] = {
                check.name: {"limit": check.limit, "actual": round(check.actual, 4), "ok": check.ok}
                for check in budget.judge(percentiles, errors=stats.errors, count=stats.count)
            }
        routes[name] = entry
    lag = result.lag.percentiles_ms((50.0, 99.0, 100.0)) if result.lag.count else {}
    return {
        "valid": result.valid,
        "problems": list(result.problems),
        "rate": result.rate,
        "achieved_rate": round(result.achieved_rate, 1),
        "duration_s": result.duration,
        "scheduled": result.scheduled,
        "sent": result.sent,
        "dropped": result.dropped,
        "lag_ms": {_NAMES[p]: round(v, 3) for p, v in lag.items()},
        "routes": routes,
    }


def passed(document: dict[str, Any]) -> bool:
    """Whether a report says the run was valid and every budget held."""
    checks = (
        check["ok"]
        for route in document["routes"].values()
        for check in route.get("budget", {}).values()
    )
    return bool(document["valid"]) and all(checks)


def markdown(document: dict[str, Any]) -> str:
    """The report as a Markdown table, a verdict line first."""
    verdict = "valid" if document["valid"] else "INVALID: " + "; ".join(document["problems"])
    lines = [
        f"{document['achieved_rate']:,.0f} of {document['rate']:,.0f} req/s for "
        f"{document['duration_s']:g} s; run {verdict}; generator lag p99 "
        f"{document['lag_ms'].get('p99_ms', 0):.2f} ms",
        "",
        "| route | count | errors | p50 ms | p90 ms | p95 ms | p99 ms | max ms | budget |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for name, route in document["routes"].items():
        broken = [n for n, check in route.get("budget", {}).items() if not check["ok"]]
        budget = (
            "none"
            if "budget" not in route
            else ("ok" if not broken else "BROKEN: " + ", ".join(broken))
        )
        lines.append(
            f"| {name} | {route['count']:,} | {route['errors']:,} | {route['p50_ms']:.2f} "
            f"| {route['p90_ms']:.2f} | {route['p95_ms']:.2f} | {route['p99_ms']:.2f} "
            f"| {route['max_ms']:.2f} | {budget} |"
        )
    return "\n".join(lines)
