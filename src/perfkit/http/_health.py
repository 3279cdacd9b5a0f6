"""
Liveness and readiness: what a load balancer or an orchestrator asks, answered truthfully.

Liveness (``/healthz``) says the process serves requests at all: restart it if not.
Readiness (``/readyz``) says whether it can do its work now: each dependency is
probed, with a timeout, and the answer is 503 while a critical one is down, so
traffic goes elsewhere until it is back. A non-critical dependency that is down
(a cache that fails open) makes the answer ``degraded`` but still 200: taking
every instance out of service because the cache is away would turn a slower
service into no service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from perfkit.cache import Cache

__all__ = [
    "DEFAULT_PROBE_TIMEOUT",
    "Probe",
    "Readiness",
    "cache_probe",
    "database_probe",
    "drain_on_sigterm",
]

DEFAULT_PROBE_TIMEOUT: Final = 2.0
_PROBE_KEY: Final = "perfkit:readiness-probe"


@dataclass(frozen=True, slots=True)
class Probe:
    """
    One dependency that readiness checks.

    Attributes:
        name: Its name in the report (``"database"``).
        check: Called in a worker thread; raises if the dependency is not usable.
        critical: Whether the service is unready without it (default) or
            only degraded.

    .. versionadded:: 0.2.0
    """

    name: str
    check: Callable[[], object]
    critical: bool = True


def database_probe(
    engine: Engine | Callable[[], Engine], *, name: str = "database", critical: bool = True
) -> Probe:
    """
    A probe that runs ``SELECT 1`` on a connection from *engine*'s pool.

    *engine* may be a callable returning it, for an engine made at startup.
    No retry: readiness reports the database as it is now. A pool that has
    no connection to give within the probe's timeout reports the database
    down too: the instance cannot serve database requests then either.

    .. versionadded:: 0.2.0
    """

    def check() -> None:
        from sqlalchemy import text  # noqa: PLC0415 - perfkit.http loads no SQLAlchemy

        bound = engine() if callable(engine) else engine
        with bound.connect() as conn:
            conn.execute(text("SELECT 1"))

    return Probe(name, check, critical)


def cache_probe(
    cache: Cache | Callable[[], Cache | None], *, name: str = "cache", critical: bool = False
) -> Probe:
    """
    A probe that reads a key from *cache*'s backend (Redis answers, its breaker is closed).

    Not critical by default: a perfkit cache fails open, so the service works
    without it, only slower.

    .. versionadded:: 0.2.0
    """

    def check() -> None:
        found = cache() if callable(cache) else cache
        if found is not None:
            found.backend.get(_PROBE_KEY)

    return Probe(name, check, critical)


class Readiness:
    """
    Runs probes concurrently, each within *timeout*, and says what the service can do.

    Args:
        probes: The dependencies to check.
        timeout: Seconds each probe may take before it counts as down.

    Example::

        readiness = Readiness([database_probe(engine), cache_probe(cache)])
        status, body = await readiness.report()

    .. versionadded:: 0.2.0
    """

    __slots__ = ("_running", "draining", "probes", "timeout")

    def __init__(self, probes: Sequence[Probe], *, timeout: float = DEFAULT_PROBE_TIMEOUT) -> None:
        names = [probe.name for probe in probes]
        if len(set(names)) != len(names):
            msg = f"probe names must be unique, got {names}"
            raise ValueError(msg)
        if timeout <= 0:
            msg = f"timeout must be positive, not {timeout}"
            raise ValueError(msg)
        self.probes = tuple(probes)
        self.timeout = timeout
        self.draining = False
        self._running: set[str] = set()

    def drain(self) -> None:
        """
        Answer 503 ``draining`` from now on, whatever the probes say: the process is about to
        stop, so the balancer should send its traffic elsewhere (:func:`drain_on_sigterm`).

        .. versionadded:: 0.2.0
        """
        self.draining = True

    async def report(self) -> tuple[int, dict[str, Any]]:
        """
        Probe everything; return the HTTP status (200 or 503) and the JSON body.

        The body is ``{"status": "ready" | "degraded" | "unavailable" | "draining", "checks":
        {name: {"status": "ok" | "down", "ms": ..., "error": ...}}}``; ``error``
        names the exception's class only, never its message (or ``timeout``, or
        ``still running`` while the check of an earlier report has not returned:
        at most one thread per probe is ever busy).
        """
        if self.draining:
            return 503, {"status": "draining", "checks": {}}
        results = await asyncio.gather(*(self._run(probe) for probe in self.probes))
        checks = dict(zip((probe.name for probe in self.probes), results, strict=True))
        down = [probe for probe in self.probes if checks[probe.name]["status"] != "ok"]
        if any(probe.critical for probe in down):
            return 503, {"status": "unavailable", "checks": checks}
        return 200, {"status": "degraded" if down else "ready", "checks": checks}

    async def _run(self, probe: Probe) -> Mapping[str, Any]:
        started = time.perf_counter()
        if probe.name in self._running:
            # A thread cannot be stopped: one check that hangs must not become one
            # stuck thread per readiness request, filling the loop's executor.
            return {"status": "down", "ms": 0.0, "error": "still running"}
        self._running.add(probe.name)

        def check() -> None:
            try:
                probe.check()
            finally:
                self._running.discard(probe.name)

        try:
            await asyncio.wait_for(asyncio.to_thread(check), self.timeout)
        except TimeoutError:
            error: str | None = "timeout"
        except Exception as exc:
            error = type(exc).__name__
        else:
            error = None
        ms = round((time.perf_counter() - started) * 1000, 1)
        if error is None:
            return {"status": "ok", "ms": ms}
        return {"status": "down", "ms": ms, "error": error}


def drain_on_sigterm(readiness: Readiness, *, grace: float = 5.0) -> Callable[[], None]:
    """
    On SIGTERM, turn *readiness* to 503 at once, keep serving for *grace* seconds, then hand
    the signal to the server (uvicorn, gunicorn's worker), which stops accepting, finishes
    what is in flight and runs the shutdown.

    A balancer that health-checks ``/readyz`` sees the worker go unready and stops sending it
    requests while it still answers them, so a rolling restart loses none. Give *grace* the
    balancer's detection time (haproxy: ``inter`` x ``fall``); under Kubernetes, whose
    ``preStop`` hook does the waiting, 0 is enough. A second SIGTERM stops at once. Call it
    from the main thread, after the server installed its own handlers (in the app's
    lifespan); the returned function puts the previous handler back.

    Args:
        readiness: What ``/readyz`` answers from (:func:`perfkit.fastapi.health_routes`).
        grace: Seconds between the SIGTERM and the server's shutdown.

    .. versionadded:: 0.2.0
    """
    import logging  # noqa: PLC0415
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    if grace < 0:
        msg = f"grace must not be negative, not {grace!r}"
        raise ValueError(msg)
    if threading.current_thread() is not threading.main_thread():
        msg = "drain_on_sigterm() must be called from the main thread (where signals arrive)"
        raise RuntimeError(msg)
    log = logging.getLogger("perfkit.http")
    previous = signal.getsignal(signal.SIGTERM)

    def hand_over(signum: int, frame: Any) -> None:  # in the main thread
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # SIG_DFL (or unknown): what the signal would do
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        if readiness.draining:  # the second one, or the timer's: now
            hand_over(signum, frame)
            return
        readiness.drain()
        log.warning("SIGTERM: /readyz answers 503; stopping in %g s", grace)
        if grace == 0:
            hand_over(signum, frame)
            return
        # The handler must run in the main thread: the timer sends the signal again.
        timer = threading.Timer(grace, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    return restore
