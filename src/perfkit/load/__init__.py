"""
Load tests that measure what users would see (``pip install perfkit[load]``).

:class:`HTTPClient` is the generator's own small HTTP/1.1 keep-alive client: httpx costs
too much CPU per request to keep a high rate on schedule from one process.

An open-model generator: requests start at scheduled times (constant or Poisson
arrivals) whatever the server does, and latency counts from each request's intended
start, so a stalled server shows up in full (no coordinated omission). Latencies go to
HdrHistograms per route, mergeable across processes; a run is reported invalid when the
generator fell behind, dropped sends or missed the rate; each route is judged against
``budgets.json`` (:func:`load_budgets`).
"""

from __future__ import annotations

from perfkit.budgets import Budget, BudgetError, Budgets, Check, load_budgets

from ._client import HTTPClient
from ._plot import percentile_plot
from ._processes import run_in_processes
from ._report import markdown, passed, report
from ._runner import Recorder, Request, RunResult, Scenario, Step, run
from ._schedule import Arrivals, schedule
from ._stats import RouteStats
from ._step import Capacity, capacity_markdown, find_capacity, rates

__all__ = [
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
