"""
Draining on SIGTERM: the example API under uvicorn turns /readyz 503 at once, keeps
answering everything else for the grace period, then shuts down cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from helpers import free_port, wait_until
from perfkit.http import Probe, Readiness, drain_on_sigterm

ROOT = Path(__file__).resolve().parents[1]


def test_sigterm_turns_readiness_503_serves_through_the_grace_then_exits(tmp_path: Path) -> None:
    """PERFKIT_DRAIN_SECONDS=2: right after SIGTERM /readyz is 503 draining while /healthz
    and a listing are 200; the process then exits by itself, having run its shutdown."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "examples"), "PERFKIT_DRAIN_SECONDS": "2",
           "PERFKIT_DATABASE_URL": f"sqlite:///{tmp_path / 'api.sqlite3'}"}  # fmt: skip
    command = [sys.executable, "-m", "uvicorn", "bill_api.app:create_app", "--factory",
               "--port", str(port), "--ws", "none", "--log-level", "info"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _status(base, "/readyz") == 200, timeout=60)
        server.send_signal(signal.SIGTERM)
        wait_until(lambda: _status(base, "/readyz") == 503, timeout=5)
        during = [_status(base, path) for path in ("/healthz", "/bills?limit=2", "/readyz")]
        body = httpx.get(f"{base}/readyz", timeout=5).json()
        code = server.wait(timeout=30)
        log = server.stderr.read() if server.stderr else ""
    finally:
        server.kill()
        server.communicate()
    assert during == [200, 200, 503]
    assert body == {"status": "draining", "checks": {}}
    assert code in (0, -signal.SIGTERM), log[-800:]  # uvicorn re-raises the signal it caught
    assert "stopping in 2 s" in log
    assert "Application shutdown complete" in log


def _status(base: str, path: str) -> int:
    try:
        return httpx.get(f"{base}{path}", timeout=5).status_code
    except httpx.TransportError:
        return 0


@pytest.mark.anyio
async def test_a_draining_readiness_answers_503_without_probing() -> None:
    """After drain(), report() says draining and runs no probe."""
    ran: list[str] = []
    readiness = Readiness([Probe("database", lambda: ran.append("database"))])
    assert (await readiness.report())[0] == 200
    readiness.drain()
    assert await readiness.report() == (503, {"status": "draining", "checks": {}})
    assert ran == ["database"]  # the first report's only


def test_drain_on_sigterm_refuses_other_threads_and_bad_grace() -> None:
    """Off the main thread, a RuntimeError (signals arrive there); a negative grace, ValueError."""
    import threading  # noqa: PLC0415

    errors: list[BaseException] = []

    def install() -> None:
        try:
            drain_on_sigterm(Readiness([]))
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()
    assert [type(e) for e in errors] == [RuntimeError]
    with pytest.raises(ValueError, match="grace"):
        drain_on_sigterm(Readiness([]), grace=-1)
    before = signal.getsignal(signal.SIGTERM)
    restore = drain_on_sigterm(Readiness([]), grace=0)
    assert signal.getsignal(signal.SIGTERM) is not before
    restore()
    assert signal.getsignal(signal.SIGTERM) is before


_DEFAULT_HANDLER = """
import signal, sys, time
from perfkit.http import Readiness, drain_on_sigterm

signal.signal(signal.SIGTERM, signal.SIG_DFL)  # no server handler: the default action
readiness = Readiness([])
drain_on_sigterm(readiness, grace=0.3)
print("ready", flush=True)
time.sleep(60)
"""


def test_with_the_default_action_the_process_ends_after_the_grace() -> None:
    """No handler of a server's (SIG_DFL): after SIGTERM and the grace, the process ends by
    SIGTERM, as it would have at once (the timer re-sends it to the main thread)."""
    process = subprocess.Popen([sys.executable, "-c", _DEFAULT_HANDLER], stdout=subprocess.PIPE,
                               text=True)  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGTERM
