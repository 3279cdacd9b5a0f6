"""
One run from several generator processes: each sends its share of the rate on a common
clock, and their histograms merge into one result (the same way results from several
machines would).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Final

from ._client import HTTPClient
from ._runner import DEFAULT_MAX_LAG_MS, Request, RunResult, Scenario, run
from ._schedule import Arrivals

__all__ = ["run_in_processes"]

_START_SLACK: Final = 0.5  # seconds for the processes to start before the schedule does


def run_in_processes(
    target: str,
    scenario: Scenario,
    *,
    processes: int,
    rate: float,
    duration: float,
    warmup: float = 0.0,
    arrivals: Arrivals = "constant",
    seed: int = 0,
    max_in_flight: int = 1000,
    max_lag_ms: float = DEFAULT_MAX_LAG_MS,
    timeout: float = 30.0,
    progress: Callable[[str], None] | None = None,
    first: int = 0,
) -> RunResult:
    """
    Run *scenario* against *target* (``http://host:port``) at *rate* requests per second,
    sent by *processes* forked generator processes, each with its own :class:`HTTPClient`
    and ``rate / processes`` of the arrivals (Poisson arrivals: independent streams, which
    add up to a Poisson stream of the whole rate; constant: interleaved evenly).

    All of them start on one wall-clock instant, each applies the validity gate to itself,
    and the merged result is invalid when any process was (its problems name the
    process). *max_in_flight* is the whole run's, shared out. *progress* hears from the
    first process. POSIX only: the scenario reaches the processes by ``fork`` (so its steps
    may be closures); call it from a process that runs no other threads, as ``fork`` copies
    only the calling one. A process that dies makes the run an error, and the others are
    stopped. *first* is as :func:`run` takes it.

    Raises:
        ValueError: *processes* is below 1.
        RuntimeError: a process failed; the message carries its traceback.

    .. versionadded:: 0.2.0
    """
    if processes < 1:
        msg = f"processes must be at least 1, not {processes}"
        raise ValueError(msg)
    context = multiprocessing.get_context("fork")
    begin = time.time() + _START_SLACK + 0.05 * processes
    options: dict[str, Any] = {
        "rate": rate / processes,
        "duration": duration,
        "warmup": warmup,
        "arrivals": arrivals,
        "max_in_flight": max(1, max_in_flight // processes),
        "max_lag_ms": max_lag_ms,
        "begin": begin,
        "processes": processes,
        "first": first,
    }
    children = []
    for process in range(processes):
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(
            target=_child,
            args=(sender, target, scenario, timeout, progress if process == 0 else None),
            kwargs={**options, "process": process, "seed": seed + process},
            name=f"perfkit-load-{process}",
            daemon=True,
        )
        child.start()
        sender.close()
        children.append((child, receiver))
    merged = RunResult(rate=0.0, duration=duration)
    failures = []
    wait = _START_SLACK + warmup + duration + timeout + 30
    try:
        for process, (child, receiver) in enumerate(children):
            answer: dict[str, Any] | None = None
            try:
                if receiver.poll(max(1.0, begin + wait - time.time())):
                    answer = receiver.recv()
            except (EOFError, OSError):  # the process died without a word
                answer = None
            receiver.close()
            child.join(timeout=10)
            if answer is None:
                failures.append(f"process {process} sent no result (exit code {child.exitcode})")
            elif "error" in answer:
                failures.append(f"process {process} failed:\n{answer['error']}")
            else:
                merged.merge(RunResult.decode(answer["result"]), name=f"process {process}")
    finally:  # whatever happened here (Ctrl-C too), no process goes on sending
        for child, receiver in children:
            receiver.close()
            if child.is_alive():
                child.kill()
            child.join()
    if failures:
        raise RuntimeError("\n".join(failures))
    return merged


def _child(
    sender: Connection,
    target: str,
    scenario: Scenario,
    timeout: float,
    progress: Callable[[str], None] | None,
    **options: Any,
) -> None:
    try:
        result = asyncio.run(_send_all(target, scenario, timeout, progress, options))
        sender.send({"result": result.encode()})
    except BaseException:
        sender.send({"error": traceback.format_exc()})
    finally:
        sender.close()


async def _send_all(
    target: str,
    scenario: Scenario,
    timeout: float,
    progress: Callable[[str], None] | None,
    options: dict[str, Any],
) -> RunResult:
    async with HTTPClient(target, timeout=timeout) as client:

        async def send(request: Request) -> int:
            return await client.request(request.method, request.path, json=request.json)

        return await run(send, scenario, progress=progress, **options)
