"""
``perfkit-load``: run a scenario against a URL, judge it against a budgets file.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from perfkit.budgets import BudgetError, load_budgets

from ._client import HTTPClient
from ._plot import percentile_plot
from ._processes import run_in_processes
from ._report import markdown, passed, report
from ._runner import DEFAULT_MAX_LAG_MS, Request, RunResult, Scenario, numbers_used, run
from ._stats import RouteStats
from ._step import Capacity, capacity_markdown, find_capacity, rates

__all__ = ["main"]


def _scenario(spec: str) -> Scenario:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"--scenario must be module:attribute, not {spec!r}")
    found: Any = getattr(importlib.import_module(module_name), attribute)
    scenario = found() if callable(found) and not isinstance(found, Scenario) else found
    if not isinstance(scenario, Scenario):
        raise SystemExit(f"{spec} is not a perfkit.load.Scenario (or a function returning one)")
    return scenario


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def _common(options: argparse.Namespace) -> dict[str, Any]:
    return {
        "duration": options.duration,
        "warmup": options.warmup,
        "arrivals": options.arrivals,
        "seed": options.seed,
        "max_in_flight": options.max_in_flight,
        "max_lag_ms": options.max_lag_ms,
        "progress": _progress,
    }


Curves = dict[str, RouteStats]


async def _run(options: argparse.Namespace, scenario: Scenario) -> tuple[dict[str, Any], Curves]:
    """One generator process: the run or the capacity search on this event loop."""
    async with HTTPClient(options.target, timeout=options.timeout) as client:

        async def send(request: Request) -> int:
            return await client.request(request.method, request.path, json=request.json)

        if options.step:
            found = await find_capacity(
                send, scenario, budgets=load_budgets(options.budgets), rates=options.step,
                **_common(options),
            )  # fmt: skip
            return _capacity_document(found), _step_curves(found)
        result = await run(send, scenario, rate=options.rate, **_common(options))
    return _report(options, result)


def _report(options: argparse.Namespace, result: RunResult) -> tuple[dict[str, Any], Curves]:
    budgets = load_budgets(options.budgets) if options.budgets else None
    return report(result, budgets), dict(sorted(result.routes.items()))


def _step_curves(found: Capacity) -> Curves:
    return {f"{rate:,.0f} req/s": result.total() for rate, result in found.results}


def _run_processes(
    options: argparse.Namespace, scenario: Scenario
) -> tuple[dict[str, Any], Curves]:
    """Several generator processes (no event loop here: they are forked)."""

    def at(rate: float, first: int = 0) -> RunResult:
        return run_in_processes(
            options.target, scenario, processes=options.processes, rate=rate,
            timeout=options.timeout, first=first, **_common(options),
        )  # fmt: skip

    if options.step:
        budgets = load_budgets(options.budgets)
        found = Capacity()
        first = 0
        for rate in options.step:
            _progress(f"step: {rate:,.0f} req/s from {options.processes} processes")
            result = at(rate, first)
            first += numbers_used(rate, options.warmup + options.duration)
            if not found.add(rate, result, budgets):
                break
        return _capacity_document(found), _step_curves(found)
    return _report(options, at(options.rate))


def _capacity_document(found: Capacity) -> dict[str, Any]:
    return {
        "capacity": found.capacity,
        "broke_at": found.broke_at,
        "reason": found.reason,
        "steps": [{"rate": rate, "report": document} for rate, document in found.steps],
        "markdown": capacity_markdown(found),
    }


def main(argv: list[str] | None = None, *, scenario: Scenario | None = None) -> int:
    """
    Entry point of ``perfkit-load``: 0 when the run is valid and every budget held, 1
    when not, 2 for a bad budgets file. *scenario* stands in for ``--scenario`` (a
    script that builds its scenario from data it made first).
    """
    parser = argparse.ArgumentParser(
        prog="perfkit-load",
        description="Open-model load test: requests start on schedule, latency counts from "
        "each request's intended start; the run is judged against a budgets file.",
    )
    parser.add_argument("target", help="base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--scenario", required=scenario is None, help="module:attribute of a Scenario"
    )
    parser.add_argument("--rate", type=float, help="requests per second")
    parser.add_argument(
        "--step",
        type=_steps,
        metavar="START:STOP:FACTOR",
        help="step mode: raise the rate from START by FACTOR up to STOP until a budget "
        "breaks, and report the capacity (needs --budgets)",
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--arrivals", choices=["constant", "poisson"], default="poisson")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-in-flight", type=int, default=1000)
    parser.add_argument("--max-lag-ms", type=float, default=DEFAULT_MAX_LAG_MS)
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument(
        "--processes", type=int, default=1, help="generator processes sharing the rate"
    )
    parser.add_argument("--budgets", type=Path, help="budgets.json to judge the run by")
    parser.add_argument("--json", type=Path, help="write the JSON report here")
    parser.add_argument("--markdown", type=Path, help="write the Markdown table here")
    parser.add_argument(
        "--png",
        type=Path,
        help="write the latency-percentile plot here (a curve per route, or per rate in step mode)",
    )
    options = parser.parse_args(argv)
    if (options.rate is None) == (options.step is None):
        parser.error("give exactly one of --rate or --step")
    if options.step and not options.budgets:
        parser.error("--step needs --budgets")
    if options.processes < 1:
        parser.error("--processes must be at least 1")
    if options.png:
        try:
            import matplotlib  # noqa: F401, PLC0415 - fail before the run, not after it
        except ImportError:
            parser.error("--png needs matplotlib: pip install 'perfkit[load]'")
    try:
        if options.budgets:
            load_budgets(options.budgets)  # a bad file fails before the run, not after
        chosen = scenario if scenario is not None else _scenario(options.scenario)
        if options.processes > 1:
            document, curves = _run_processes(options, chosen)
        else:
            document, curves = asyncio.run(_run(options, chosen))
    except BudgetError as exc:
        print(f"perfkit-load: {exc}", file=sys.stderr)
        return 2
    _write(options, document, curves)
    if options.step:
        return 0 if document["capacity"] is not None else 1
    return 0 if passed(document) else 1


def _write(options: argparse.Namespace, document: dict[str, Any], curves: Curves) -> None:
    """Print the table; write the JSON, Markdown and PNG asked for."""
    table = document.pop("markdown") if options.step else markdown(document)
    print(table)
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if options.markdown:
        options.markdown.parent.mkdir(parents=True, exist_ok=True)
        options.markdown.write_text(table + "\n", encoding="utf-8")
    if options.png:
        percentile_plot(
            curves,
            options.png,
            budgets=load_budgets(options.budgets) if options.budgets and not options.step else None,
            title=f"{options.target}: " + ("capacity search" if options.step else
                                           f"{options.rate:,.0f} req/s"),
        )  # fmt: skip


def _steps(text: str) -> list[float]:
    try:
        start, stop, factor = (float(part) for part in text.split(":"))
        return rates(start, stop, factor)
    except ValueError as exc:
        msg = f"expected START:STOP:FACTOR (e.g. 100:3200:2), got {text!r}: {exc}"
        raise argparse.ArgumentTypeError(msg) from None


if __name__ == "__main__":
    raise SystemExit(main())
