"""
InstanceMetrics: one scrape of any worker counts every worker, exactly; dead workers' sums
are kept and their files removed; the example API under `uvicorn --workers 3`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from helpers import free_port, wait_until
from perfkit.observability import InstanceMetrics

ROOT = Path(__file__).resolve().parents[1]

_WORKER = """
import sys, time
from prometheus_client import Counter, Gauge
from perfkit.observability import InstanceMetrics

directory, jobs, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
done = Counter("jobs", "Jobs done", ["kind"])
depth = Gauge("queue_depth", "Jobs waiting")
metrics = InstanceMetrics(directory=directory, interval=30)  # answers when asked, else rarely
metrics.start()
done.labels("mail").inc(jobs)
depth.set(jobs)
metrics.snapshot()  # what its timer does every interval (1 s by default)
print("ready", flush=True)
if mode == "linger":
    time.sleep(120)
else:
    print(metrics.exposition().decode(), flush=True)
"""


def _start(directory: Path, jobs: int, mode: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(directory), str(jobs), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    return process


def _value(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match, f"{sample} not in the exposition"
    return float(match.group(1))


def test_a_scrape_counts_every_live_worker_at_once(tmp_path: Path) -> None:
    """Three workers count 5, 7 and 11 jobs and snapshot only every 30 s: a scrape of a fourth
    asks them, and sums 5 + 7 + 11 + 1 at once; gauges stay per worker."""
    lingering = [_start(tmp_path, jobs, "linger") for jobs in (5, 7, 11)]
    try:
        scraper = _start(tmp_path, 1, "scrape")
        text = scraper.communicate(timeout=30)[0]
    finally:
        for process in lingering:
            process.kill()
            process.communicate()
    assert _value(text, 'jobs_total{kind="mail"}') == 24
    depths = sorted(float(v) for v in re.findall(r"^queue_depth\{worker=\"[^\"]+\"\} (\S+)$",
                                                  text, re.MULTILINE))  # fmt: skip
    assert depths == [1.0, 5.0, 7.0, 11.0]


def test_killed_workers_sums_stay_and_their_files_go(tmp_path: Path) -> None:
    """Workers killed with SIGKILL (no goodbye) after a snapshot: the next scrape folds their
    counters into the archive and deletes their files; the total never goes back; their gauges
    are gone."""
    killed = [_start(tmp_path, jobs, "linger") for jobs in (3, 4)]
    for process in killed:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    first = _start(tmp_path, 10, "scrape").communicate(timeout=30)[0]
    assert _value(first, 'jobs_total{kind="mail"}') == 17
    assert len(re.findall(r"^queue_depth", first, re.MULTILINE)) == 1  # the scraper's own
    second = _start(tmp_path, 100, "scrape").communicate(timeout=30)[0]
    assert _value(second, 'jobs_total{kind="mail"}') == 117  # the first scraper died too
    left = sorted(p.suffix for p in tmp_path.iterdir() if not p.name.startswith("archive"))
    assert left == [".json", ".lock", ".sock"]  # the second scraper's, dead now: next time


def test_fifty_restarts_leave_one_archive(tmp_path: Path) -> None:
    """50 short-lived workers (forked, each counting one job, then gone) and a scrape: every
    job counted, one archive file and the scraper's own files, whatever the number of dead."""
    for _ in range(50):
        pid = os.fork()
        if pid == 0:  # the child: a worker that counts one job and exits
            code = 0
            try:
                from prometheus_client import CollectorRegistry, Counter  # noqa: PLC0415

                registry = CollectorRegistry()
                Counter("jobs", "Jobs done", registry=registry).inc()
                metrics = InstanceMetrics(directory=tmp_path, registry=registry, interval=30)
                metrics.start()
                metrics.stop()
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        assert os.waitpid(pid, 0)[1] == 0
    from prometheus_client import CollectorRegistry, Counter  # noqa: PLC0415

    registry = CollectorRegistry()
    Counter("jobs", "Jobs done", registry=registry)
    metrics = InstanceMetrics(directory=tmp_path, registry=registry)
    metrics.start()
    try:
        text = metrics.exposition().decode()
    finally:
        metrics.stop()
    assert _value(text, "jobs_total") == 50
    left = sorted(p.suffix for p in tmp_path.iterdir())
    assert left == [".json", ".json", ".lock", ".lock", ".sock"]
    archive = json.loads((tmp_path / "archive.json").read_text())
    assert archive["folded"] == []


def test_exposition_before_start_is_a_clear_error(tmp_path: Path) -> None:
    """A scrape through an InstanceMetrics that was never started says so."""
    with pytest.raises(RuntimeError, match="start"):
        InstanceMetrics(directory=tmp_path).exposition()
    with pytest.raises(ValueError, match="interval"):
        InstanceMetrics(directory=tmp_path, interval=0)


# -- the example API under uvicorn --workers ------------------------------------------------------


def _route_count(text: str, route: str) -> float:
    series = "http_server_request_duration_seconds_count"
    pattern = rf'^{series}\{{[^}}]*http_route="{re.escape(route)}"[^}}]*\}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


@pytest.mark.slow
def test_every_scrape_of_the_example_counts_every_workers_requests(tmp_path: Path) -> None:
    """`uvicorn --workers 3`, 150 requests spread over the workers (each on a new connection):
    six scrapes, whichever worker each reaches, all count 150 (0.1, with 600: 259, 216, 259,
    125...)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "examples"),
           "PERFKIT_DATABASE_URL": f"sqlite:///{tmp_path / 'api.sqlite3'}",
           "PERFKIT_METRICS_DIR": str(tmp_path / "metrics")}  # fmt: skip
    command = [sys.executable, "-m", "uvicorn", "bill_api.app:create_app", "--factory",
               "--workers", "3", "--port", str(port), "--ws", "none",
               "--log-level", "warning"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(base, 3, tmp_path / "metrics"), timeout=90)
        for n in range(150):
            with httpx.Client(base_url=base) as client:  # a new connection: any worker
                assert client.get(f"/users/{n + 1}").status_code == 404
        counts = []
        for _ in range(6):
            with httpx.Client(base_url=base) as client:
                counts.append(_route_count(client.get("/metrics").text, "/users/{user_id}"))
        served = [
            _route_count_json(path, "/users/{user_id}")
            for path in (tmp_path / "metrics").glob("*-*.json")
        ]
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=60)
    assert counts == [150.0] * 6
    assert sum(served) == 150
    assert len([n for n in served if n > 0]) >= 2  # the requests did spread


def _ready(base: str, workers: int, directory: Path) -> bool:
    try:
        httpx.get(f"{base}/healthz", timeout=2)
    except httpx.TransportError:
        return False
    return len(list(directory.glob("*.lock"))) >= workers


def _route_count_json(path: Path, route: str) -> float:
    families = json.loads(path.read_text())["families"]
    _, _, _, samples = families.get("http_server_request_duration_seconds", ["", "", "", []])
    return sum(
        value
        for name, labels, value in samples
        if name.endswith("_count") and dict(labels).get("http_route") == route
    )


def test_a_slow_worker_does_not_hold_the_scrape(tmp_path: Path) -> None:
    """A worker that does not answer (stopped with SIGSTOP) costs the scrape at most half a
    second; its last snapshot counts."""
    stuck = _start(tmp_path, 9, "linger")
    stuck.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        text = _start(tmp_path, 1, "scrape").communicate(timeout=30)[0]
        took = time.monotonic() - started
    finally:
        stuck.send_signal(signal.SIGCONT)
        stuck.kill()
        stuck.communicate()
    assert _value(text, 'jobs_total{kind="mail"}') == 10
    assert took < 30  # a hang guard, not a timing assertion


def test_a_worker_that_stopped_reading_does_not_hold_scrapes(tmp_path: Path) -> None:
    """A live worker that stopped reading (SIGSTOP) with its socket's queue full: scrapes do
    not block on it, and count its last snapshot."""
    import socket  # noqa: PLC0415

    stuck = _start(tmp_path, 9, "linger")
    stuck.send_signal(signal.SIGSTOP)
    try:
        (inbox,) = tmp_path.glob(f"{stuck.pid}-*.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as filler:
            full = False
            for _ in range(10_000):  # fill its queue, as unanswered scrapes would
                try:
                    filler.sendto(b"snap", socket.MSG_DONTWAIT, str(inbox))
                except BlockingIOError:
                    full = True
                    break
        assert full
        from prometheus_client import CollectorRegistry  # noqa: PLC0415

        metrics = InstanceMetrics(directory=tmp_path, registry=CollectorRegistry())
        metrics.start()
        try:
            texts = [metrics.exposition().decode() for _ in range(3)]
        finally:
            metrics.stop()
    finally:
        stuck.send_signal(signal.SIGCONT)
        stuck.kill()
        stuck.communicate()
    assert [_value(text, 'jobs_total{kind="mail"}') for text in texts] == [9.0] * 3
