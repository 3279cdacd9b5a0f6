"""
ASGI servers under wrk on loopback: which setup ``make demo`` should serve on.

Each config is a server command line, a URL path and extra wrk headers. The
server runs pinned to core 0 (``taskset -c 0``), in a session of its own so
that it and any worker processes it forks are stopped together; wrk runs
pinned to core 1: ``wrk -t1 -c16 -d<seconds>s --latency``. A server is
started fresh for every run, answered on its path before it is measured,
warmed with one second of wrk, then measured. Rounds interleave the configs
(a rotating order each round), so a slow stretch of the machine hits all of
them; each figure is the median over the rounds, with requests/s as a ratio
to the first config of its app. Server CPU per request is the user + system
time of the server's whole process group during the measured run (/proc);
times requests/s, it is how busy the server kept its core (well under 100%:
the server waited, on its own threads or on a machine busy elsewhere).

The harness is :func:`measure`; the apps are in ``benchmarks/http_apps.py``:
``raw`` (a bare ASGI app sending a prebuilt 320-byte JSON bill) and
``hello`` (FastAPI, a small dict from a sync route). Servers: uvicorn on
h11 + asyncio (what ``make demo`` runs when uvloop and httptools are not
installed), uvicorn on httptools + uvloop (``uvicorn[standard]``), granian
(``--interface asgi``) and hypercorn, when installed; one worker each, access
log off.

Needs ``wrk`` (Debian: ``apt-get install wrk``).
Usage: ``python benchmarks/servers.py [--seconds N] [--rounds N] [--apps raw,hello]``
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Server and load generator on a core each, so they do not steal from each other.
_PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
PIN_SERVER = ("taskset", "-c", "0") if _PIN else ()
PIN_LOAD = ("taskset", "-c", "1") if _PIN else ()
PYTHONPATH = os.pathsep.join(
    [
        str(ROOT / "benchmarks"),
        str(ROOT / "examples"),
        *filter(None, [os.environ.get("EXTRA_PYTHONPATH")]),
    ]
)


@dataclass(frozen=True, slots=True)
class Config:
    """
    One thing to measure.

    Attributes:
        label: How tables name it.
        argv: The server's command line; ``{port}`` in any argument is replaced
            by a free port on 127.0.0.1. Runs pinned, with ``benchmarks/`` and
            ``examples/`` on ``PYTHONPATH``.
        path: The URL path wrk requests (it must answer 200).
        headers: Extra request headers, as ``wrk -H`` takes them (``"Name: value"``).
        env: Extra environment variables for the server.
        status: The status every answer must have (304 for a revalidation).
    """

    label: str
    argv: Sequence[str]
    path: str
    headers: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    status: int = 200


@dataclass(frozen=True, slots=True)
class Run:
    """One measured wrk run: throughput, latency percentiles, and the server's CPU cost."""

    requests_per_second: float
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    server_cpu_us: float  # per request, the server's whole process group

    @property
    def busy(self) -> float:
        """The share of its core the server used: below ~0.9, something else held it back."""
        return self.server_cpu_us * self.requests_per_second / 1e6


@dataclass(frozen=True, slots=True)
class Result:
    """A config's runs, one per round, and their medians."""

    config: Config
    runs: tuple[Run, ...]

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(run, attribute) for run in self.runs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in group *pgid* (Linux /proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _answers(port: int, config: Config) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    headers = dict(h.split(":", 1) for h in config.headers)
    try:
        connection.request("GET", config.path, headers={k: v.strip() for k, v in headers.items()})
        response = connection.getresponse()
        response.read()
        return response.status == config.status
    except OSError:
        return False
    finally:
        connection.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL to what is left after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; its workers may not be.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return


@contextmanager
def serve(config: Config, *, timeout: float = 60) -> Iterator[tuple[int, int]]:
    """Start *config*'s server, wait until its path answers 200; yield (port, process group)."""
    port = free_port()
    argv = [*PIN_SERVER, *(arg.replace("{port}", str(port)) for arg in config.argv)]
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, **config.env}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout
            while not _answers(port, config):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-2000:]
                    raise SystemExit(f"{config.label}: server did not answer:\n{tail}")
                time.sleep(0.1)
            yield port, process.pid
        finally:
            _stop(process)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(url: str, seconds: int, headers: Sequence[str] = (), connections: int = 16) -> Run:
    """One ``wrk -t1 -c<connections> --latency`` run against *url* (server CPU left at 0)."""
    extra = [arg for header in headers for arg in ("-H", header)]
    out = subprocess.run(
        [*PIN_LOAD, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *extra, url],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    percentiles = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.MULTILINE))
    if rate is None or count is None or len(percentiles) != 3:
        raise SystemExit(f"could not read wrk's output:\n{out}")
    if "Non-2xx" in out or "Socket errors" in out:  # wrk counts statuses over 399
        raise SystemExit(f"wrk reported errors:\n{out}")
    return Run(
        requests_per_second=float(rate.group(1)),
        requests=int(count.group(1)),
        p50_ms=_ms(percentiles["50"]),
        p90_ms=_ms(percentiles["90"]),
        p99_ms=_ms(percentiles["99"]),
        server_cpu_us=0.0,
    )


@dataclass(frozen=True, slots=True)
class Count:
    """
    What :func:`count_instructions` counted.

    Attributes:
        per_request: Instructions per request, the idle server's share taken out.
        idle_per_second: What the server runs per second with no request at all (timer
            threads: a relay's poll, a worker's, a log flusher's wake-up).
        idle_per_request: That idle share as it fell on each counted request under
            valgrind, for comparison (it is not in *per_request*).
        requests: The requests wrk made while counting.
    """

    per_request: float
    idle_per_second: float
    idle_per_request: float
    requests: int


def count_instructions(config: Config, seconds: int = 10, *, warmup: int = 5) -> Count:
    """
    Instructions per request of *config*'s server under valgrind's callgrind and wrk.

    Wall-clock ratios on a shared two-core host move by a fifth from run to run; counts
    repeat. The server starts under callgrind (fixed hash seed, a count per thread), takes
    a *warmup* of wrk, then is counted twice: *seconds* idle, then *seconds* of wrk. A
    thread's idle rate times the loaded phase's length is taken from its loaded count,
    and the rest, summed over threads, is divided by the requests wrk made.

    The idle share is taken out because valgrind slows the serving thread ~50x while
    timers keep the wall clock's pace: a relay polling its outbox five times a second
    costs a request ~40 times its real share at the ~400 requests/s a server manages
    under valgrind. It is reported beside (:class:`Count`). Counts are of user space only
    (the kernel's share of each request, the same for every config, is not in them), so
    a ratio of two counts is stricter than the wall-clock ratio of the same configs.
    """
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "callgrind.out"
        counted = replace(
            config,
            argv=[
                "valgrind", "--tool=callgrind", "--separate-threads=yes",
                f"--callgrind-out-file={dump}", *config.argv,
            ],
            env={**config.env, "PYTHONHASHSEED": "0"},
        )  # fmt: skip
        with serve(counted, timeout=600) as (port, pid):
            url = f"http://127.0.0.1:{port}{config.path}"
            wrk(url, warmup, config.headers)
            time.sleep(1)  # the warm-up's last requests and log lines out of the idle count
            # Each window ends before its dump is asked for: writing a dump takes wall-clock
            # time (longer for the loaded one) in which the server runs nothing.
            _callgrind_control("--zero", pid)
            started = time.monotonic()
            time.sleep(seconds)
            idle_seconds = time.monotonic() - started
            _callgrind_control("--dump", pid)
            idle = _thread_counts(dump, 1, config.label)
            _callgrind_control("--zero", pid)
            started = time.monotonic()
            requests = wrk(url, seconds, config.headers).requests
            loaded_seconds = time.monotonic() - started
            _callgrind_control("--dump", pid)
            loaded = _thread_counts(dump, 2, config.label)
    scale = loaded_seconds / idle_seconds
    # Not clamped at zero: a timer thread that ran less under load than idle shows as less.
    work = sum(count - idle.get(thread, 0) * scale for thread, count in loaded.items())
    idle_rate = sum(idle.values()) / idle_seconds
    return Count(
        per_request=work / requests,
        idle_per_second=idle_rate,
        idle_per_request=idle_rate * loaded_seconds / requests,
        requests=requests,
    )


def _callgrind_control(action: str, pid: int) -> None:
    subprocess.run(["callgrind_control", action, str(pid)], check=True, capture_output=True)


def _thread_counts(dump: Path, number: int, label: str) -> dict[str, int]:
    """Each thread's total in callgrind's dump *number* (``<dump>.<number>-<thread>``)."""
    deadline = time.monotonic() + 60
    while True:
        counts: dict[str, int] = {}
        for part in sorted(dump.parent.glob(f"{dump.name}.{number}-*")):
            text = part.read_text()
            summary = re.search(r"^summary:\s+(\d+)", text, re.MULTILINE)
            if summary is not None and re.search(r"^totals:", text, re.MULTILINE):  # written
                counts[part.name.rsplit("-", 1)[1]] = int(summary.group(1))
        parts = len(list(dump.parent.glob(f"{dump.name}.{number}-*")))
        if counts and len(counts) == parts:
            return counts
        if time.monotonic() > deadline:
            raise SystemExit(f"{label}: callgrind wrote no whole dump {number}")
        time.sleep(0.5)


def measure(
    configs: Sequence[Config], rounds: int = 3, seconds: int = 5, *, warmup: int = 1
) -> list[Result]:
    """
    Measure every config *rounds* times, interleaved, a fresh server per run.

    Args:
        configs: What to measure; labels must be unique.
        rounds: Runs per config. Round *r* starts at config ``r % len(configs)``.
        seconds: Length of each measured wrk run.
        warmup: Seconds of unmeasured wrk before each measured run.

    Returns:
        One :class:`Result` per config, in the order given.
    """
    if len({c.label for c in configs}) != len(configs):
        raise ValueError("config labels must be unique")
    runs: dict[str, list[Run]] = {c.label: [] for c in configs}
    for round_ in range(rounds):
        shift = round_ % len(configs)
        for config in [*configs[shift:], *configs[:shift]]:
            print(f"  round {round_ + 1}/{rounds}: {config.label}", file=sys.stderr, flush=True)
            with serve(config) as (port, pgid):
                url = f"http://127.0.0.1:{port}{config.path}"
                if warmup:
                    wrk(url, warmup, config.headers)
                before = group_cpu_seconds(pgid)
                run = wrk(url, seconds, config.headers)
                cpu = (group_cpu_seconds(pgid) - before) / run.requests * 1e6
            runs[config.label].append(replace(run, server_cpu_us=cpu))
    return [Result(c, tuple(runs[c.label])) for c in configs]


def uvicorn(app: str, *, http: str, loop: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "{port}",
            "--http", http, "--loop", loop, "--workers", "1",
            "--no-access-log", "--log-level", "warning"]  # fmt: skip


def granian(app: str, *, loop: str = "uvloop") -> list[str]:
    return [sys.executable, "-m", "granian", app, "--interface", "asgi", "--host", "127.0.0.1",
            "--port", "{port}", "--workers", "1", "--loop", loop,
            "--no-access-log", "--log-level", "warning"]  # fmt: skip


def hypercorn(app: str, *, worker_class: str = "uvloop") -> list[str]:
    return [sys.executable, "-m", "hypercorn", app, "--bind", "127.0.0.1:{port}",
            "--workers", "1", "--worker-class", worker_class, "--log-level", "warning"]  # fmt: skip


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def servers(app: str) -> list[tuple[str, list[str]]]:
    """(label, argv) of each server setup installed here, for ``http_apps:<app>``."""
    target = f"http_apps:{app}"
    found = [("uvicorn, h11 + asyncio", uvicorn(target, http="h11", loop="asyncio"))]
    if installed("httptools") and installed("uvloop"):
        found.append(
            ("uvicorn, httptools + uvloop", uvicorn(target, http="httptools", loop="uvloop"))
        )
    if installed("granian"):
        found.append(("granian, asgi + uvloop", granian(target)))
    if installed("hypercorn"):
        found.append(("hypercorn, uvloop", hypercorn(target)))
    return found


APP_PATHS = {"raw": "/bills/4242", "hello": "/hello", "hello_async": "/hello"}


def table(results: Sequence[Result]) -> str:
    """Markdown: one row per result; requests/s as a ratio to the first row."""
    base = results[0].median("requests_per_second")
    lines = [
        f"| server | requests/s | / {results[0].config.label} | p50 ms | p99 ms "
        "| server CPU per request | server core busy | requests/s of each round |",
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for result in results:
        rate = result.median("requests_per_second")
        each = ", ".join(f"{run.requests_per_second:,.0f}" for run in result.runs)
        lines.append(
            f"| {result.config.label} | {rate:,.0f} | {rate / base:.2f} "
            f"| {result.median('p50_ms'):.2f} | {result.median('p99_ms'):.2f} "
            f"| {result.median('server_cpu_us'):.0f} µs | {result.median('busy'):.0%} | {each} |"
        )
    return "\n".join(lines)


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    found = []
    for name in ("uvicorn", "httptools", "uvloop", "h11", "granian", "hypercorn", "fastapi"):
        with suppress(PackageNotFoundError):
            found.append(f"{name} {version(name)}")
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--apps", default="raw,hello", help="from: " + ", ".join(APP_PATHS))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("\n(skipped: wrk is not installed; Debian: apt-get install wrk)")
        return
    apps = args.apps.split(",")
    configs = [
        Config(f"{app}: {label}", argv, APP_PATHS[app])
        for app in apps
        for label, argv in servers(app)
    ]
    results = measure(configs, args.rounds, args.seconds)
    print(f"wrk -t1 -c16 -d{args.seconds}s, median of {args.rounds} interleaved rounds, "
          f"a fresh server per run; {versions()}")  # fmt: skip
    for app in apps:
        mine = [r for r in results if r.config.label.startswith(f"{app}: ")]
        renamed = [Result(Config(r.config.label.split(": ", 1)[1], r.config.argv,
                                 r.config.path), r.runs) for r in mine]  # fmt: skip
        print(f"\n### `http_apps:{app}` (`GET {APP_PATHS[app]}`)\n")
        print(table(renamed))


if __name__ == "__main__":
    main()
