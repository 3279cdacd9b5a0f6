"""
The latency-percentile plot: each curve's latency against the percentile, on the
"number of nines" scale HdrHistogram uses, so the tail (99 %, 99.9 %) gets as much room
as the median. Budgets are drawn as markers at their percentile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from perfkit.budgets import Budgets

from ._stats import RouteStats

__all__ = ["percentile_plot"]

# Percentiles 0, 50, 75, 87.5, ... approaching 100: ten points per nine.
_STEPS_PER_NINE: Final = 10
_TICKS: Final = (0.0, 50.0, 90.0, 99.0, 99.9, 99.99, 99.999)


def percentile_plot(
    curves: Mapping[str, RouteStats],
    path: str | Path,
    *,
    budgets: Budgets | None = None,
    title: str = "Latency by percentile",
) -> Path:
    """
    Write a PNG of each curve's latency (ms, log scale) by percentile (0 to 99.999 %,
    one decade per nine) to *path*, and return the path.

    *curves* maps a label to its answers: a run's routes (``"GET /bills/{bill_id}"``:
    their budget limits are drawn as markers), or a capacity search's rates. Needs
    matplotlib (in ``perfkit[load]``); it draws off-screen and touches no pyplot state.

    .. versionadded:: 0.2.0
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - heavy
    from matplotlib.figure import Figure  # noqa: PLC0415

    figure = Figure(figsize=(9, 5.5), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    deepest = 1.0
    for label, stats in curves.items():
        if not stats.count:
            continue
        nines = _nines(stats.count)
        deepest = max(deepest, nines)
        xs, ys = _curve(stats, nines)
        (line,) = axes.plot(xs, ys, label=f"{label} ({stats.count:,})", linewidth=1.6)
        method, _, route = label.partition(" ")
        budget = budgets.get(method, route) if budgets is not None else None
        if budget is not None:
            for percentile, limit in budget.limits().items():
                axes.plot([_x(percentile)], [limit], marker="v", markersize=8,
                          color=line.get_color(), linestyle="none")  # fmt: skip
    ticks = [t for t in _TICKS if _x(t) <= deepest + 1e-9]
    axes.set_xticks([_x(t) for t in ticks], [f"{t:g}%" for t in ticks])
    axes.set_xlim(0, max(1.0, deepest))
    axes.set_yscale("log")
    axes.set_xlabel("percentile")
    axes.set_ylabel("latency from the intended start (ms)")
    axes.set_title(title + ("   (▼ budget)" if budgets is not None else ""))
    axes.grid(True, which="both", alpha=0.3)
    if any(stats.count for stats in curves.values()):
        axes.legend(fontsize="small", loc="upper left")
    figure.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png")
    return out


def _x(percentile: float) -> float:
    """Nines of *percentile*: 0 -> 0, 90 -> 1, 99 -> 2, 99.9 -> 3."""
    return -math.log10(1 - percentile / 100) if percentile < 100 else math.inf


def _nines(count: int) -> float:
    """As deep as *count* answers say anything about (1,000 answers: up to 99.9 %)."""
    return max(1.0, min(5.0, math.log10(count)))


def _curve(stats: RouteStats, nines: float) -> tuple[list[float], list[float]]:
    histogram = stats.histogram
    xs, ys = [], []
    for step in range(int(nines * _STEPS_PER_NINE) + 1):
        x = step / _STEPS_PER_NINE
        percentile = 100 * (1 - 10**-x)
        xs.append(x)
        ys.append(max(0.001, histogram.get_value_at_percentile(percentile) / 1000))
    return xs, ys
