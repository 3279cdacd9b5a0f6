"""
Readiness probes: ready, degraded, unavailable; timeouts; at most one check thread per probe.
"""

from __future__ import annotations

import threading

import pytest

from perfkit.http import Probe, Readiness

pytestmark = pytest.mark.anyio


def _down() -> None:
    raise ConnectionError("password=hunter2 refused")


async def test_ready_degraded_and_unavailable() -> None:
    """Critical failures make 503 unavailable; others only degrade; the error is a class name."""
    ok = Probe("database", lambda: None)
    assert (await Readiness([ok]).report())[0] == 200
    status, body = await Readiness([ok, Probe("cache", _down, critical=False)]).report()
    assert (status, body["status"]) == (200, "degraded")
    assert body["checks"]["cache"] == {"status": "down", "ms": body["checks"]["cache"]["ms"],
                                       "error": "ConnectionError"}  # fmt: skip
    status, body = await Readiness([Probe("database", _down)]).report()
    assert (status, body["status"]) == (503, "unavailable")
    assert "hunter2" not in repr(body)


async def test_a_hanging_check_times_out_and_is_not_started_again_while_it_hangs() -> None:
    """A check stuck past the timeout reports down; while it stays stuck, later reports do
    not start a second thread for it."""
    release = threading.Event()
    calls: list[int] = []

    def hang() -> None:
        calls.append(1)
        release.wait(10)

    readiness = Readiness([Probe("database", hang)], timeout=0.05)
    try:
        first = await readiness.report()
        second = await readiness.report()
    finally:
        release.set()
    assert first[1]["checks"]["database"]["error"] == "timeout"
    assert second[1]["checks"]["database"]["error"] == "still running"
    assert (first[0], second[0], calls) == (503, 503, [1])


def test_probe_names_are_unique_and_the_timeout_positive() -> None:
    with pytest.raises(ValueError, match="unique"):
        Readiness([Probe("db", lambda: None), Probe("db", lambda: None)])
    with pytest.raises(ValueError, match="timeout"):
        Readiness([], timeout=0)
