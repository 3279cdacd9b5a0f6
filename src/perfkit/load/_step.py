"""
Step mode: raise the arrival rate until a budget breaks (or the run turns invalid), and
report the highest rate at which everything held: the capacity under those budgets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from perfkit.budgets import Budgets

from ._report import passed, report
from ._runner import DEFAULT_MAX_LAG_MS, RunResult, Scenario, Send, numbers_used, run
from ._schedule import Arrivals

__all__ = ["Capacity", "capacity_markdown", "find_capacity", "rates"]


def rates(start: float, stop: float, factor: float) -> list[float]:
    """``start, start*factor, ...`` up to *stop* (included when it falls on the way)."""
    if not (start > 0 and stop >= start and factor > 1):
        msg = f"need 0 < start <= stop and factor > 1, got {start}, {stop}, {factor}"
        raise ValueError(msg)
    found = []
    rate = start
    while rate <= stop * (1 + 1e-9):
        found.append(round(rate, 3))
        rate *= factor
    return found


@dataclass
class Capacity:
    """
    The steps a capacity search ran (each step's JSON report) and what they say.

    Attributes:
        steps: ``(rate, report)`` in the order run.
        capacity: The highest rate whose run was valid and within every budget
            (``None``: not even the first).
        broke_at: The first rate that failed (``None``: none did).
        reason: Why it failed: the run's problems or the budget lines broken.
        results: ``(rate, result)`` of each step, histograms and all.

    .. versionadded:: 0.2.0
    """

    steps: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    results: list[tuple[float, RunResult]] = field(default_factory=list)
    capacity: float | None = None
    broke_at: float | None = None
    reason: str = ""

    def add(self, rate: float, result: RunResult, budgets: Budgets) -> bool:
        """Judge the run at *rate*; ``True`` when it held (so the search goes on)."""
        document = report(result, budgets)
        self.steps.append((rate, document))
        self.results.append((rate, result))
        if passed(document):
            self.capacity = rate
            return True
        self.broke_at = rate
        broken = [
            f"{name} {line}"
            for name, route in document["routes"].items()
            for line, check in route.get("budget", {}).items()
            if not check["ok"]
        ]
        self.reason = "; ".join(document["problems"] + broken)
        return False


async def find_capacity(
    send: Send,
    scenario: Scenario,
    *,
    budgets: Budgets,
    rates: Sequence[float],
    duration: float,
    warmup: float = 0.0,
    arrivals: Arrivals = "constant",
    seed: int = 0,
    max_in_flight: int = 1000,
    max_lag_ms: float = DEFAULT_MAX_LAG_MS,
    progress: Callable[[str], None] | None = None,
) -> Capacity:
    """
    Run *scenario* at each of *rates* in turn until one fails its budgets or its validity
    gate (an invalid run says the generator, not the server, gave out first: the rate
    before it is still reported, with the reason). Each step numbers its requests past
    the last step's, so a scenario's fresh keys stay fresh across steps.

    .. versionadded:: 0.2.0
    """
    found = Capacity()
    first = 0
    for rate in rates:
        if progress is not None:
            progress(f"step: {rate:,.0f} req/s")
        number_from, first = first, first + numbers_used(rate, warmup + duration)
        result = await run(
            send,
            scenario,
            rate=rate,
            duration=duration,
            warmup=warmup,
            arrivals=arrivals,
            seed=seed,
            max_in_flight=max_in_flight,
            max_lag_ms=max_lag_ms,
            progress=progress,
            first=number_from,
        )
        if not found.add(rate, result, budgets):
            break
    return found


def capacity_markdown(found: Capacity) -> str:
    """The search as a Markdown table: rate, validity, the slowest route's p95 and p99."""
    lines = ["| rate req/s | achieved | valid | worst p95 ms | worst p99 ms | errors | verdict |",
             "|--:|--:|---|--:|--:|--:|---|"]  # fmt: skip
    for rate, document in found.steps:
        routes = document["routes"].values()
        p95 = max((r["p95_ms"] for r in routes), default=0.0)
        p99 = max((r["p99_ms"] for r in routes), default=0.0)
        errors = sum(r["errors"] for r in routes)
        verdict = "held" if passed(document) else "broke"
        lines.append(
            f"| {rate:,.0f} | {document['achieved_rate']:,.0f} | {document['valid']} "
            f"| {p95:.2f} | {p99:.2f} | {errors} | {verdict} |"
        )
    summary = (
        f"capacity: {found.capacity:,.0f} req/s" if found.capacity is not None else "capacity: none"
    )
    if found.broke_at is not None:
        summary += f"; broke at {found.broke_at:,.0f} req/s: {found.reason}"
    return "\n".join([summary, "", *lines])
