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

__all__ = ["DEFAULT_PROBE_TIMEOUT", "Probe", "Readiness", "cache_probe", "database_probe"]

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

    __slots__ = ("_running", "probes", "timeout")

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
        self._running: set[str] = set()

    async def report(self) -> tuple[int, dict[str, Any]]:
        """
        Probe everything; return the HTTP status (200 or 503) and the JSON body.

        The body is ``{"status": "ready" | "degraded" | "unavailable", "checks":
        {name: {"status": "ok" | "down", "ms": ..., "error": ...}}}``; ``error``
        names the exception's class only, never its message (or ``timeout``, or
        ``still running`` while the check of an earlier report has not returned:
        at most one thread per probe is ever busy).
        """
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
