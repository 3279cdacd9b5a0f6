"""
When each request of an open-model run is meant to start, fixed before the run begins.
"""

from __future__ import annotations

import random
from typing import Final, Literal

__all__ = ["Arrivals", "schedule"]

Arrivals = Literal["constant", "poisson"]
_KINDS: Final = ("constant", "poisson")


def schedule(
    rate: float, duration: float, *, arrivals: Arrivals = "constant", seed: int = 0
) -> list[float]:
    """
    The intended start times (seconds from the run's start) of every request.

    ``constant``: one every ``1/rate`` s. ``poisson``: exponential gaps of mean ``1/rate``
    (seeded, so a run can be repeated). Either way the times do not depend on how fast
    the server answers: that is the open model.

    .. versionadded:: 0.2.0
    """
    if not rate > 0:
        msg = f"rate must be positive, not {rate!r}"
        raise ValueError(msg)
    if not duration > 0:
        msg = f"duration must be positive, not {duration!r}"
        raise ValueError(msg)
    if arrivals not in _KINDS:
        msg = f"arrivals must be one of {_KINDS}, not {arrivals!r}"
        raise ValueError(msg)
    if arrivals == "constant":
        return [i / rate for i in range(int(duration * rate))]
    rng = random.Random(seed)
    times: list[float] = []
    t = rng.expovariate(rate)
    while t < duration:
        times.append(t)
        t += rng.expovariate(rate)
    return times
