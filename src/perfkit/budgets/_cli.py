"""
``perfkit-budgets``: check a budgets file, or make Prometheus rules, a Grafana dashboard
or histogram boundaries from it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._budgets import BudgetError, duration_buckets, load_budgets
from ._grafana import grafana_dashboard
from ._prometheus import prometheus_rules
from ._yaml import to_yaml

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``perfkit-budgets``: 0 on success, 2 for a bad budgets file or option."""
    parser = argparse.ArgumentParser(
        prog="perfkit-budgets",
        description="Check budgets.json, or make alert rules, a dashboard or histogram "
        "bucket boundaries from it.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate the file and list its budgets")
    rules = commands.add_parser("rules", help="Prometheus recording and alerting rules (YAML)")
    dashboard = commands.add_parser("dashboard", help="a Grafana dashboard (JSON)")
    buckets = commands.add_parser("buckets", help="duration histogram boundaries (seconds)")
    for command in (check, rules, dashboard, buckets):
        command.add_argument("budgets", type=Path, help="the budgets file")
    for command in (rules, dashboard):
        command.add_argument("-o", "--output", type=Path, help="write here (default: stdout)")
        command.add_argument(
            "--selector", default="", help='label matchers for every series, e.g. job="api"'
        )
    rules.add_argument("--min-rate", type=float, default=0.1, help="requests/s before alerting")
    rules.add_argument(
        "--min-cache-hit-ratio", type=float, default=0.5, help="0 leaves the cache alert out"
    )
    rules.add_argument("--breaker-open-for", default="1m")
    dashboard.add_argument("--title", default="perfkit: budgets")
    options = parser.parse_args(argv)
    try:
        budgets = load_budgets(options.budgets)
        if options.command == "check":
            for budget in budgets:
                limits = ", ".join(
                    f"p{percentile:g} <= {limit:g} ms"
                    for percentile, limit in budget.limits().items()
                )
                print(
                    f"{budget.key}: {limits}, errors <= {budget.max_error_rate:.2%} "
                    f"at {budget.rate:g} req/s"
                )
            return 0
        if options.command == "buckets":
            print(json.dumps(list(duration_buckets(budgets))))
            return 0
        if options.command == "rules":
            text = to_yaml(
                prometheus_rules(
                    budgets,
                    selector=options.selector,
                    min_rate=options.min_rate,
                    min_cache_hit_ratio=options.min_cache_hit_ratio or None,
                    breaker_open_for=options.breaker_open_for,
                )
            )
        else:
            document = grafana_dashboard(budgets, title=options.title, selector=options.selector)
            text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    except (BudgetError, ValueError) as exc:
        print(f"perfkit-budgets: {exc}", file=sys.stderr)
        return 2
    if options.output:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
