"""
Prometheus recording and alerting rules made from a budgets file.

What the rules read is what perfkit exports through OpenTelemetry's Prometheus exporter:
``http_server_request_duration_seconds`` (the timing middleware's histogram; labels
``http_request_method``, ``http_route``, ``http_response_status_code``),
``perfkit_breaker_state`` (0 closed, 1 half-open, 2 open) and
``perfkit_cache_operations_total`` (by ``perfkit_cache_result``).

A latency budget ``p95_ms: 100`` says at most 5 % of a route's requests take longer than
100 ms, so its rule watches the fraction of requests above the 100 ms bucket boundary (the
boundary must exist: :func:`duration_buckets`). Each budget line alerts twice, as multiwindow
checks: ``severity: page`` when the fraction is over budget across both the last 5 minutes
and the last 30 (broken now, and not a blip), ``severity: ticket`` across both the last hour
and the last 6 (a slow, lasting breach). Error budgets work the same way on the share of
5xx answers.
"""

from __future__ import annotations

import re
from typing import Any, Final

from ._budgets import LATENCY_FIELDS, PERCENTILES, Budget, Budgets
from ._promql import (
    BREAKER_STATE,
    CACHE_OPERATIONS,
    DURATION,
    braces,
    le_label,
    matchers_of,
    number,
    quote,
    route_matchers,
)

__all__ = ["prometheus_rules"]

ROUTE_LABELS: Final = "http_request_method, http_route"

REQUESTS: Final = "route:http_server_requests:rate"
ERRORS: Final = "route:http_server_errors:rate"
WITHIN: Final = "route_le:http_server_request_duration_seconds_bucket:rate"
WINDOWS: Final = ("5m", "30m", "1h", "6h")
# (severity, short window, long window): over budget on both, or no alert.
SEVERITIES: Final = (("page", "5m", "30m"), ("ticket", "1h", "6h"))


def prometheus_rules(
    budgets: Budgets,
    *,
    selector: str = "",
    min_rate: float = 0.1,
    min_cache_hit_ratio: float | None = 0.5,
    breaker_open_for: str = "1m",
) -> dict[str, Any]:
    """
    Recording and alerting rules for every budget in *budgets*, as a Prometheus rule file
    (write it with :func:`to_yaml`, or ``perfkit-budgets rules``).

    Args:
        budgets: From :func:`load_budgets`.
        selector: Label matchers added to every raw series, e.g. ``job="bill-api"``.
        min_rate: Requests per second a route needs over the short window before its
            ratios alert (a quiet night's one slow request of two is not a breach).
        min_cache_hit_ratio: Alert (ticket) when a cache namespace's hit ratio stays below
            this for 15 minutes; ``None`` leaves the alert out.
        breaker_open_for: How long a breaker must stay open before it pages.

    Raises:
        ValueError: *selector* is not a comma-separated list of label matchers, or a
            number is out of range.

    .. versionadded:: 0.2.0
    """
    matchers = matchers_of(selector)
    # The selector's labels stay on the recorded series: rules of two services (job="a",
    # job="b") in one Prometheus then record apart instead of into one series.
    kept = list(dict.fromkeys(re.split(r"[=!]", m, maxsplit=1)[0].strip() for m in matchers))
    by = ", ".join([*(k for k in kept if k not in ROUTE_LABELS), ROUTE_LABELS])
    if min_rate < 0:
        raise ValueError(f"min_rate must be >= 0, not {min_rate!r}")
    if min_cache_hit_ratio is not None and not 0 < min_cache_hit_ratio <= 1:
        raise ValueError(f"min_cache_hit_ratio must be in (0, 1], not {min_cache_hit_ratio!r}")
    thresholds = budgets.thresholds_seconds()
    le_pattern = "|".join(re.escape(le_label(t)) for t in thresholds)
    recording: list[dict[str, Any]] = []
    for window in WINDOWS:
        recording += [
            {
                "record": f"{REQUESTS}{window}",
                "expr": f"sum by ({by}) (rate({DURATION}_count{braces(matchers)}[{window}]))",
            },
            {
                "record": f"{ERRORS}{window}",
                "expr": f"sum by ({by}) (rate({DURATION}_count"
                f"{braces([*matchers, 'http_response_status_code=~' + quote('5..')])}[{window}]))",
            },
            {
                "record": f"{WITHIN}{window}",
                "expr": f"sum by ({by}, le) (rate({DURATION}_bucket"
                f"{braces([*matchers, 'le=~' + quote(le_pattern)])}[{window}]))",
            },
        ]
    alerts: list[dict[str, Any]] = []
    for budget in budgets:
        for name in LATENCY_FIELDS:
            limit = getattr(budget, name)
            if limit is not None:
                alerts += _latency_alerts(budget, name, limit, min_rate, by)
        alerts += _error_alerts(budget, min_rate, by)
        alerts += _bucket_guards(budget, by)
    alerts.append(
        {
            "alert": "PerfkitTrafficAboveBudgetRate",
            "expr": f"sum(rate({DURATION}_count{braces(matchers)}[5m])) > "
            f"{number(max(budget.rate for budget in budgets))}",
            "for": "10m",
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": "Traffic is above the arrival rate the budgets were measured at",
                "description": "{{ $value | humanize }} requests/s over 5m; budgets.json's "
                "latency budgets hold up to "
                f"{number(max(budget.rate for budget in budgets))} requests/s.",
            },
        }
    )
    alerts.append(
        {
            "alert": "PerfkitBreakerOpen",
            "expr": f"max by (perfkit_breaker_name) ({BREAKER_STATE}{braces(matchers)}) >= 2",
            "for": breaker_open_for,
            "labels": {"severity": "page"},
            "annotations": {
                "summary": "Circuit breaker {{ $labels.perfkit_breaker_name }} is open",
                "description": "Calls through breaker {{ $labels.perfkit_breaker_name }} are "
                f"refused: the dependency behind it has been failing for {breaker_open_for}.",
            },
        }
    )
    if min_cache_hit_ratio is not None:
        alerts.append(_cache_alert(matchers, min_rate, min_cache_hit_ratio))
    return {
        "groups": [
            {"name": "perfkit-budgets-recording", "rules": recording},
            {"name": "perfkit-budgets-alerts", "rules": alerts},
        ]
    }


def _latency_alerts(budget: Budget, name: str, limit: float, min_rate: float, by: str) -> list[Any]:
    percentile = PERCENTILES[name]
    allowed = round(1 - percentile / 100, 6)
    route = route_matchers(budget)
    within = [*route, f"le={quote(le_label(limit / 1000))}"]

    def slow(window: str) -> str:
        return (
            f"(1 - {WITHIN}{window}{braces(within)} / ignoring(le) "
            f"{REQUESTS}{window}{braces(route)}) > {number(allowed)}"
        )

    return [
        {
            "alert": "PerfkitLatencyBudget",
            "expr": f"{slow(short)} and on({by}) {slow(long)} "
            f"and on({by}) {REQUESTS}{short}{braces(route)} > {number(min_rate)}",
            "labels": {"severity": severity, "budget": name, **_route_labels(budget)},
            "annotations": {
                "summary": f"{budget.key}: p{number(percentile)} above {number(limit)} ms",
                "description": f"{{{{ $value | humanizePercentage }}}} of {budget.key} requests "
                f"took longer than {number(limit)} ms over {short} (and over {long}); "
                f"the budget allows {_percent(allowed)} %.",
            },
        }
        for severity, short, long in SEVERITIES
    ]


def _error_alerts(budget: Budget, min_rate: float, by: str) -> list[Any]:
    route = route_matchers(budget)

    def failing(window: str) -> str:
        return (
            f"{ERRORS}{window}{braces(route)} / {REQUESTS}{window}{braces(route)} "
            f"> {number(budget.max_error_rate)}"
        )

    return [
        {
            "alert": "PerfkitErrorBudget",
            "expr": f"{failing(short)} and on({by}) {failing(long)} "
            f"and on({by}) {REQUESTS}{short}{braces(route)} > {number(min_rate)}",
            "labels": {"severity": severity, "budget": "max_error_rate", **_route_labels(budget)},
            "annotations": {
                "summary": f"{budget.key}: 5xx above {_percent(budget.max_error_rate)} %",
                "description": f"{{{{ $value | humanizePercentage }}}} of {budget.key} requests "
                f"answered 5xx over {short} (and over {long}); the budget allows "
                f"{_percent(budget.max_error_rate)} %.",
            },
        }
        for severity, short, long in SEVERITIES
    ]


def _bucket_guards(budget: Budget, by: str) -> list[Any]:
    """
    A latency alert reads the bucket at its threshold; without that bucket (no
    duration_buckets=, a collector rewriting ``le``) it would stay silent for ever.
    """
    route = route_matchers(budget)
    guards = []
    for seconds in budget.thresholds_seconds():
        within = [*route, f"le={quote(le_label(seconds))}"]
        guards.append({
            "alert": "PerfkitBudgetBucketMissing",
            "expr": f"{REQUESTS}30m{braces(route)} > 0 unless on({by}) "
            f"{WITHIN}30m{braces(within)}",
            "for": "30m",
            "labels": {"severity": "ticket", "le": le_label(seconds), **_route_labels(budget)},
            "annotations": {
                "summary": f"{budget.key}: no histogram bucket at {le_label(seconds)} s",
                "description": f"The latency budgets of {budget.key} need a bucket boundary at "
                f"{le_label(seconds)} s and the series has none, so their alerts cannot fire: "
                "pass duration_buckets=perfkit.budgets.duration_buckets(budgets) to the "
                "timing middleware, or regenerate the rules for the le labels your pipeline "
                "writes.",
            },
        })  # fmt: skip
    return guards


def _cache_alert(matchers: list[str], min_rate: float, ratio: float) -> dict[str, Any]:
    by = "sum by (perfkit_cache_namespace)"

    def reads(result: str) -> str:
        return (
            f"{by} (rate({CACHE_OPERATIONS}"
            f"{braces([*matchers, 'perfkit_cache_result=~' + quote(result)])}[30m]))"
        )

    return {
        "alert": "PerfkitCacheHitRatioLow",
        "expr": f"{reads('hit')} / {reads('hit|miss')} < {number(ratio)} "
        f"and on(perfkit_cache_namespace) {reads('hit|miss')} > {number(min_rate)}",
        "for": "15m",
        "labels": {"severity": "ticket"},
        "annotations": {
            "summary": "Cache {{ $labels.perfkit_cache_namespace }}: hit ratio low",
            "description": "{{ $value | humanizePercentage }} of reads hit over 30m "
            f"(alerting below {_percent(ratio)} %): the cache is cold, evicting, "
            "or invalidated too broadly.",
        },
    }


def _route_labels(budget: Budget) -> dict[str, str]:
    # The query's result carries them too; as rule labels they also keep each route's
    # rule distinct (promtool flags same-named rules with the same labels).
    return {"http_request_method": budget.method, "http_route": budget.route}


def _percent(fraction: float) -> str:
    """0.05 -> ``5``: for people (annotations), where 5.000000000000001 would not do."""
    return f"{fraction * 100:.6g}"
