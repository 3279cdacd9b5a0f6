"""
Latencies per route in HdrHistograms: exact enough (3 significant figures), mergeable across
processes through their compressed encoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from hdrh.histogram import HdrHistogram

__all__ = ["PERCENTILES", "RouteStats"]

LOWEST_US: Final = 1
HIGHEST_US: Final = 3_600_000_000  # an hour: nothing a run records is longer
FIGURES: Final = 3
PERCENTILES: Final = (50.0, 90.0, 95.0, 99.0, 100.0)


class RouteStats:
    """
    One route's answers in a run: a latency histogram (microseconds), a count of errors.

    An error is a failed send (refused, reset, timed out) or a 5xx answer; 4xx answers
    are the scenario's business and count as answers.

    .. versionadded:: 0.2.0
    """

    __slots__ = ("errors", "histogram", "statuses")

    def __init__(self) -> None:
        self.histogram = HdrHistogram(LOWEST_US, HIGHEST_US, FIGURES)
        self.errors = 0
        self.statuses: dict[str, int] = {}

    @property
    def count(self) -> int:
        return int(self.histogram.get_total_count())

    def record(self, seconds: float, status: int | None) -> None:
        """One answer (*status*; ``None``: the send failed) that took *seconds*."""
        self.histogram.record_value(max(LOWEST_US, min(HIGHEST_US, round(seconds * 1e6))))
        key = "failed" if status is None else str(status)
        self.statuses[key] = self.statuses.get(key, 0) + 1
        if status is None or status >= 500:
            self.errors += 1

    def merge(self, other: RouteStats) -> None:
        """Add *other*'s answers to these."""
        self.histogram.add(other.histogram)
        self.errors += other.errors
        for key, n in other.statuses.items():
            self.statuses[key] = self.statuses.get(key, 0) + n

    def percentiles_ms(self, percentiles: Iterable[float] = PERCENTILES) -> dict[float, float]:
        """Each percentile's latency, in milliseconds (100: the maximum)."""
        found = {}
        for p in percentiles:
            value = (
                self.histogram.get_max_value()
                if p >= 100
                else self.histogram.get_value_at_percentile(p)
            )
            found[p] = value / 1000
        return found

    def encode(self) -> dict[str, Any]:
        """A JSON-able form, to send to another process or keep in a report."""
        histogram = self.histogram.encode()
        return {
            "histogram": histogram.decode("ascii") if isinstance(histogram, bytes) else histogram,
            "errors": self.errors,
            "statuses": dict(self.statuses),
        }

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> RouteStats:
        """The inverse of :meth:`encode`."""
        stats = cls()
        stats.histogram.decode_and_add(data["histogram"])
        stats.errors = int(data["errors"])
        stats.statuses = {str(k): int(v) for k, v in data["statuses"].items()}
        return stats
