"""
The open-model generator: requests start at their scheduled times whatever the server does,
and each latency counts from the time its request was meant to start.

A closed-loop tool (wrk, Locust) sends the next request when an answer comes back, so a
stalled server also stalls the tool, and the requests that would have been sent meanwhile
are never measured (coordinated omission). Here a stall shows up in full: every request
scheduled during it waits, and its latency says so.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ._schedule import Arrivals, schedule
from ._stats import RouteStats

__all__ = ["Recorder", "Request", "RunResult", "Scenario", "Step", "numbers_used", "run"]

DEFAULT_MAX_LAG_MS: Final = 10.0
MIN_ACHIEVED: Final = 0.95
_SLEEP_BELOW: Final = 0.0005  # closer than this to its time, a request is sent at once
_YIELD_EVERY: Final = 16


@dataclass(frozen=True, slots=True)
class Request:
    """
    One request of a scenario.

    Attributes:
        route: How reports name it: ``"GET /bills/{bill_id}"`` (the method and the route
            template, as budgets and the timing middleware name routes).
        method: The HTTP method.
        path: The path and query sent (``/bills/42``).
        json: A JSON body, or ``None``.

    .. versionadded:: 0.2.0
    """

    route: str
    method: str
    path: str
    json: Any = None


@dataclass(frozen=True, slots=True)
class Step:
    """
    One kind of request in a :class:`Scenario`, and how often it is picked.

    *make* builds the request from the request's number in the run and a seeded random
    generator (so a run can be repeated, and writes can use fresh keys).

    .. versionadded:: 0.2.0
    """

    weight: float
    make: Callable[[int, random.Random], Request]


@dataclass(frozen=True, slots=True)
class Scenario:
    """
    A weighted mix of requests.

    Example::

        Scenario([
            Step(8, lambda i, rng: Request("GET /notes/{note_id}", "GET",
                                           f"/notes/{rng.randint(1, 1000)}")),
            Step(1, lambda i, rng: Request("POST /notes", "POST", "/notes",
                                           json={"text": f"note {i}"})),
        ])

    .. versionadded:: 0.2.0
    """

    steps: Sequence[Step]

    def __post_init__(self) -> None:
        if not self.steps or any(not step.weight > 0 for step in self.steps):
            msg = "a scenario needs at least one step, each with a positive weight"
            raise ValueError(msg)

    def picker(
        self, seed: int, *, process: int = 0, processes: int = 1, first: int = 0
    ) -> Callable[[int], Request]:
        """
        ``pick(i)``: the *i*-th request of a run, the same for the same *seed*. In process
        *process* of *processes*, request *i* is told the number
        ``first + i * processes + process``, so the numbers stay unique across the processes
        of one run, and across runs that start where the last one's numbers ended (fresh
        keys stay fresh).
        """
        rng = random.Random(seed)
        steps = list(self.steps)
        weights = [step.weight for step in steps]

        def pick(i: int) -> Request:
            step = rng.choices(steps, weights)[0]
            return step.make(first + i * processes + process, rng)

        return pick


@dataclass
class RunResult:
    """
    What a run measured, and whether the generator kept to its schedule.

    Attributes:
        rate: The arrival rate asked for (requests per second).
        duration: Seconds measured (warm-up excluded).
        routes: Each route's answers.
        scheduled: Requests the schedule had in the measured window.
        sent: Requests started in it.
        dropped: Requests not sent because *max_in_flight* were already waiting.
        lag: The generator's own lateness (send time minus intended time), as a route.
        problems: Why the run is invalid (empty: valid).

    .. versionadded:: 0.2.0
    """

    rate: float
    duration: float
    routes: dict[str, RouteStats] = field(default_factory=dict)
    scheduled: int = 0
    sent: int = 0
    dropped: int = 0
    lag: RouteStats = field(default_factory=RouteStats)
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.duration if self.duration else 0.0

    def total(self) -> RouteStats:
        """Every route's answers together."""
        merged = RouteStats()
        for stats in self.routes.values():
            merged.merge(stats)
        return merged

    def merge(self, other: RunResult, *, name: str = "") -> None:
        """
        Add *other*, a run over the same window (another process's share of the rate), to
        this one: rates, counts and histograms add up; its problems are kept, prefixed with
        *name*. A run of several processes is valid when each one was.
        """
        self.rate += other.rate
        self.scheduled += other.scheduled
        self.sent += other.sent
        self.dropped += other.dropped
        self.lag.merge(other.lag)
        for route, stats in other.routes.items():
            mine = self.routes.get(route)
            if mine is None:
                mine = self.routes[route] = RouteStats()
            mine.merge(stats)
        self.problems += [f"{name}: {problem}" if name else problem for problem in other.problems]

    def encode(self) -> dict[str, Any]:
        """A JSON-able form (histograms compressed), to send from another process."""
        return {
            "rate": self.rate,
            "duration": self.duration,
            "routes": {route: stats.encode() for route, stats in self.routes.items()},
            "scheduled": self.scheduled,
            "sent": self.sent,
            "dropped": self.dropped,
            "lag": self.lag.encode(),
            "problems": list(self.problems),
        }

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> RunResult:
        """The inverse of :meth:`encode`."""
        return cls(
            rate=float(data["rate"]),
            duration=float(data["duration"]),
            routes={route: RouteStats.decode(stats) for route, stats in data["routes"].items()},
            scheduled=int(data["scheduled"]),
            sent=int(data["sent"]),
            dropped=int(data["dropped"]),
            lag=RouteStats.decode(data["lag"]),
            problems=[str(problem) for problem in data["problems"]],
        )


class Recorder:
    """
    Turns timings into a :class:`RunResult`: pure, so the tests can feed it recorded
    timings (a server that stalls) without a clock.

    Each request is told with its *intended* start, when it was really *sent*, and when
    its answer *ended*; latency is ``ended - intended``.

    .. versionadded:: 0.2.0
    """

    def __init__(self, *, rate: float, duration: float, warmup: float) -> None:
        self.result = RunResult(rate=rate, duration=duration)
        self.warmup = warmup

    def measured(self, offset: float) -> bool:
        """Whether a request meant to start *offset* s into the run counts (after warm-up)."""
        return offset >= self.warmup

    def scheduled(self, offset: float) -> None:
        if self.measured(offset):
            self.result.scheduled += 1

    def dropped(self, offset: float) -> None:
        if self.measured(offset):
            self.result.dropped += 1

    def answered(  # noqa: PLR0917 - called once per request with what it knows
        self,
        route: str,
        offset: float,
        intended: float,
        sent: float,
        ended: float,
        status: int | None,
    ) -> None:
        if not self.measured(offset):
            return
        result = self.result
        result.sent += 1
        result.lag.record(max(0.0, sent - intended), 200)
        stats = result.routes.get(route)
        if stats is None:
            stats = result.routes[route] = RouteStats()
        stats.record(ended - intended, status)

    def finish(self, *, max_lag_ms: float = DEFAULT_MAX_LAG_MS) -> RunResult:
        """The result, with the validity gate applied."""
        result = self.result
        if result.dropped:
            result.problems.append(
                f"{result.dropped} requests dropped: max_in_flight requests were already waiting"
            )
        lag_p99 = result.lag.percentiles_ms([99.0])[99.0] if result.lag.count else 0.0
        if lag_p99 > max_lag_ms:
            result.problems.append(
                f"the generator fell behind its schedule: p99 lag {lag_p99:.1f} ms "
                f"> {max_lag_ms:g} ms"
            )
        if result.scheduled and result.sent < MIN_ACHIEVED * result.scheduled:
            result.problems.append(
                f"rate not reached: {result.achieved_rate:,.0f} of {result.rate:,.0f} req/s"
            )
        return result


Send = Callable[[Request], Awaitable[int | None]]


def numbers_used(rate: float, seconds: float) -> int:
    """
    More request numbers than a run of *seconds* (warm-up included) at *rate* can use,
    whatever its arrivals: where the next run against the same data should start.
    """
    expected = rate * seconds
    return int(expected + 10 * expected**0.5) + 100  # Poisson: ten standard deviations


async def run(
    send: Send,
    scenario: Scenario,
    *,
    rate: float,
    duration: float,
    warmup: float = 0.0,
    arrivals: Arrivals = "constant",
    seed: int = 0,
    max_in_flight: int = 1000,
    max_lag_ms: float = DEFAULT_MAX_LAG_MS,
    progress: Callable[[str], None] | None = None,
    begin: float | None = None,
    process: int = 0,
    processes: int = 1,
    first: int = 0,
) -> RunResult:
    """
    Run *scenario* at *rate* requests per second for *warmup* + *duration* seconds.

    *send* sends one request and returns its status (``None`` if it failed). Requests
    start on schedule whether or not earlier ones have answered, up to *max_in_flight*
    waiting at once; one scheduled beyond that is dropped, which makes the run invalid,
    as does a generator more than *max_lag_ms* late at the 99th percentile or one that
    started fewer than 95 % of the requests it scheduled.

    *begin*, *process* and *processes* make this run one process's share of a larger one
    (:func:`run_in_processes` sets them): the schedule starts at the wall-clock time
    *begin* (``time.time()``; default: now), and *rate* is this process's part; constant
    arrivals are shifted by ``process / (rate * processes)`` so that the processes' sends
    interleave evenly, and request numbers are made unique across processes
    (:meth:`Scenario.picker`). *first* is the number of the run's first request: runs
    against one database (the steps of a capacity search) each start past the last.

    .. versionadded:: 0.2.0
    """
    if max_in_flight < 1:
        msg = f"max_in_flight must be at least 1, not {max_in_flight}"
        raise ValueError(msg)
    if not 0 <= process < processes:
        msg = f"need 0 <= process < processes, got {process} of {processes}"
        raise ValueError(msg)
    plan = schedule(rate, warmup + duration, arrivals=arrivals, seed=seed)
    if arrivals == "constant" and process:
        shift = process / (rate * processes)
        plan = [offset + shift for offset in plan if offset + shift < warmup + duration]
    pick = scenario.picker(seed, process=process, processes=processes, first=first)
    recorder = Recorder(rate=rate, duration=duration, warmup=warmup)
    clock = time.perf_counter
    waiting: set[asyncio.Task[None]] = set()

    async def one(request: Request, offset: float, intended: float) -> None:
        sent = clock()
        try:
            status = await send(request)
        except Exception:
            status = None
        recorder.answered(request.route, offset, intended, sent, clock(), status)

    late = 0.0 if begin is None else time.time() - begin
    start = clock() + (0.01 if begin is None else max(0.0, -late))
    next_report = 1.0
    for i, offset in enumerate(plan):
        intended = start + offset
        delay = intended - clock()
        if delay > _SLEEP_BELOW:
            await asyncio.sleep(delay)
        elif i % _YIELD_EVERY == 0:
            await asyncio.sleep(0)  # behind or at a high rate: let started requests run
        recorder.scheduled(offset)
        if len(waiting) >= max_in_flight:
            recorder.dropped(offset)
            continue
        task = asyncio.create_task(one(pick(i), offset, intended))
        waiting.add(task)
        task.add_done_callback(waiting.discard)
        if progress is not None and offset >= next_report:
            next_report += 1.0
            phase = "warm-up" if offset < warmup else "measuring"
            who = f"[{process}] " if processes > 1 else ""
            progress(f"{who}{offset:5.1f} s {phase}: {i + 1:,} sent, {len(waiting):,} waiting")
    if waiting:
        await asyncio.wait(waiting)
    result = recorder.finish(max_lag_ms=max_lag_ms)
    if late * 1000 > max_lag_ms:  # its schedule started after the others'
        result.problems.append(f"this process started {late * 1000:.0f} ms after the run began")
    return result
