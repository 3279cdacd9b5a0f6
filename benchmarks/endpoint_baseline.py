"""
Baseline latency of every endpoint of the example API (issue 2: no cache yet).

Starts ``python -m bill_api`` (uvicorn) in a subprocess on a free loopback port
against a fresh database, which the app seeds on start (1,000 users, 10,000
bills, 100,000 votes), then sends each endpoint ``--requests`` sequential
requests over one keep-alive ``httpx.Client`` and reports the median, p90 and
p99 latency in milliseconds and the requests per second of that sequential
loop. Every response status is checked; an unexpected one aborts the run.

The database is a fresh SQLite file in a temporary directory unless
``--database-url`` names another; for PostgreSQL a schema of its own is
created for the run (the app is pointed at it with ``search_path``) and
dropped afterwards. The server is always terminated at the end.

On PostgreSQL the tables are ``ANALYZE``d after seeding (``--no-analyze``
skips it): the seed does not do it, and with autovacuum off (as on the test
service) or within the first minute of a fresh database the planner has no
statistics and sorts the whole bills table for every ``GET /bills`` page.

Usage::

    PYTHONPATH=examples .venv/bin/python benchmarks/endpoint_baseline.py --markdown
    .venv/bin/python benchmarks/endpoint_baseline.py \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from perfkit.db import create_engine
from perfkit.reference import Bill, User, Vote, open_stores

__all__ = ["BenchmarkError", "Endpoint", "Report", "Result", "format_markdown", "main", "run"]

ROOT: Final = Path(__file__).resolve().parents[1]
EXAMPLES: Final = ROOT / "examples"

# What python -m bill_api seeds into an empty database (perfkit.reference.seed defaults).
SEED_USERS: Final = 1_000
SEED_BILLS: Final = 10_000
SEED_VOTES: Final = 100_000

RANDOM_SEED: Final = 2
DEFAULT_REQUESTS: Final = 1_000
DEFAULT_WARMUP: Final = 20
STARTUP_TIMEOUT: Final = 300.0
REQUEST_TIMEOUT: Final = 30.0
PAGE_SIZE: Final = 20

_SEEDED_RE: Final = re.compile(r"^seeded .* in (?P<seconds>[0-9.]+) s$", re.MULTILINE)

Body = dict[str, Any] | None
MakeRequest = Callable[[random.Random, int], tuple[str, Body]]


class BenchmarkError(RuntimeError):
    """
    The benchmark could not run, or the API answered something unexpected.
    """


@dataclass(frozen=True, slots=True)
class Endpoint:
    """
    One endpoint to measure: how to build its *i*-th request and the status it must return.
    """

    name: str
    method: str
    status: int
    make: MakeRequest


@dataclass(frozen=True, slots=True)
class Result:
    """
    Latencies of one endpoint, in milliseconds, and the sequential request rate.
    """

    name: str
    requests: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    requests_per_second: float


@dataclass(frozen=True, slots=True)
class Report:
    """
    Everything one run measured.
    """

    database: str
    database_url: str
    requests: int
    warmup: int
    analyzed: bool
    seed_seconds: float | None
    results: tuple[Result, ...]


def endpoints(*, voters: Sequence[int], token: str) -> list[Endpoint]:
    """
    Return the endpoints to measure, in order.

    Ids are drawn from the seeded ranges. ``POST /users`` uses a new username
    per request (*token* keeps them apart from any other run's) and
    ``POST /bills/{id}/votes`` has the *i*-th request cast by ``voters[i]``, a
    user created for the run who has not voted yet, so every vote is new.
    """

    def user_id(rng: random.Random) -> int:
        return rng.randint(1, SEED_USERS)

    def bill_id(rng: random.Random) -> int:
        return rng.randint(1, SEED_BILLS)

    def username(rng: random.Random) -> str:
        return f"user{user_id(rng):05d}"

    pages = SEED_BILLS // PAGE_SIZE
    statuses = ("draft", "introduced", "passed", "failed")
    choices = ("yes", "no", "abstain")
    return [
        Endpoint("GET /users/{id}", "GET", 200, lambda r, _i: (f"/users/{user_id(r)}", None)),
        Endpoint(
            "GET /users?username=…",
            "GET",
            200,
            lambda r, _i: (f"/users?username={username(r)}", None),
        ),
        Endpoint(
            "GET /users?email=…",
            "GET",
            200,
            lambda r, _i: (f"/users?email={username(r)}@example.org", None),
        ),
        Endpoint(
            "POST /users",
            "POST",
            201,
            lambda _r, i: (
                "/users",
                {"username": f"bench{token}_{i}", "email": f"bench{token}_{i}@example.org"},
            ),
        ),
        Endpoint(
            f"GET /bills?page=…&limit={PAGE_SIZE}",
            "GET",
            200,
            lambda r, _i: (f"/bills?page={r.randint(1, pages)}&limit={PAGE_SIZE}", None),
        ),
        Endpoint("GET /bills/{id}", "GET", 200, lambda r, _i: (f"/bills/{bill_id(r)}", None)),
        Endpoint(
            "POST /bills",
            "POST",
            201,
            lambda r, i: (
                "/bills",
                {
                    "title": f"Benchmark Act No. {i}",
                    "sponsor_id": user_id(r),
                    "summary": "A bill to measure the bill/vote API.",
                },
            ),
        ),
        Endpoint(
            "PATCH /bills/{id}",
            "PATCH",
            200,
            lambda r, i: (
                f"/bills/{bill_id(r)}",
                {"title": f"Amended Act No. {i}", "status": r.choice(statuses)},
            ),
        ),
        Endpoint(
            f"GET /bills/{{id}}/votes?page=1&limit={PAGE_SIZE}",
            "GET",
            200,
            lambda r, _i: (f"/bills/{bill_id(r)}/votes?page=1&limit={PAGE_SIZE}", None),
        ),
        Endpoint(
            "GET /bills/{id}/votes/counts",
            "GET",
            200,
            lambda r, _i: (f"/bills/{bill_id(r)}/votes/counts", None),
        ),
        Endpoint(
            "POST /bills/{id}/votes",
            "POST",
            201,
            lambda r, i: (
                f"/bills/{bill_id(r)}/votes",
                {"user_id": voters[i], "choice": r.choice(choices)},
            ),
        ),
        Endpoint(
            "GET /users/{id}/votes",
            "GET",
            200,
            lambda r, _i: (f"/users/{user_id(r)}/votes", None),
        ),
        Endpoint("GET /healthz", "GET", 200, lambda _r, _i: ("/healthz", None)),
    ]


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """
    Return the nearest-rank *p*-th percentile of *sorted_values* (ascending).
    """
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def measure(client: httpx.Client, endpoint: Endpoint, *, requests: int, warmup: int) -> Result:
    """
    Send *warmup* unmeasured then *requests* measured requests to *endpoint*, one at a time.

    Raises:
        BenchmarkError: a response had another status than the expected one.
    """
    rng = random.Random(f"{RANDOM_SEED}:{endpoint.name}")

    def send(i: int) -> int:
        url, body = endpoint.make(rng, i)
        started = time.perf_counter_ns()
        response = client.request(endpoint.method, url, json=body)
        elapsed = time.perf_counter_ns() - started
        if response.status_code != endpoint.status:
            msg = (
                f"{endpoint.method} {url} returned {response.status_code}, "
                f"expected {endpoint.status}: {response.text[:500]}"
            )
            raise BenchmarkError(msg)
        return elapsed

    for i in range(warmup):
        send(i)
    started = time.perf_counter()
    latencies = sorted(send(i) / 1e6 for i in range(warmup, warmup + requests))
    wall = time.perf_counter() - started
    return Result(
        name=endpoint.name,
        requests=requests,
        median_ms=statistics.median(latencies),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        requests_per_second=requests / wall,
    )


def free_port() -> int:
    """
    Return a TCP port that is free on 127.0.0.1 right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True, slots=True)
class Server:
    """
    A running example API.
    """

    base_url: str
    log: Path

    def seed_seconds(self) -> float | None:
        """
        Return how long the app said seeding took, or ``None`` if it did not seed.
        """
        match = _SEEDED_RE.search(self.log.read_text(errors="replace"))
        return None if match is None else float(match["seconds"])


def _wait_until_up(
    process: subprocess.Popen[bytes], base_url: str, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=2.0, trust_env=False) as client:
        while True:
            if process.poll() is not None:
                msg = f"the API exited with status {process.returncode}:\n{_tail(log)}"
                raise BenchmarkError(msg)
            with contextlib.suppress(httpx.TransportError):
                if client.get("/healthz").status_code == 200:
                    return
            if time.monotonic() > deadline:
                msg = f"the API was not up after {timeout:.0f} s:\n{_tail(log)}"
                raise BenchmarkError(msg)
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


@contextlib.contextmanager
def serve(
    database_url: str, log: Path, *, timeout: float = STARTUP_TIMEOUT, cache: bool = False
) -> Iterator[Server]:
    """
    Run ``python -m bill_api`` on a free 127.0.0.1 port until the block ends.

    The app seeds *database_url* if it is empty; its output goes to *log*.

    Raises:
        BenchmarkError: the API exited or did not answer ``GET /healthz`` in *timeout* s.
    """
    port = free_port()
    env = dict(os.environ)
    env.pop("PERFKIT_REDIS_URL", None)  # in-process cache or none
    env.update(
        PERFKIT_CACHE="memory" if cache else "off",
        PERFKIT_DATABASE_URL=database_url,
        PERFKIT_HOST="127.0.0.1",
        PERFKIT_PORT=str(port),
        PYTHONPATH=os.pathsep.join(p for p in (str(EXAMPLES), env.get("PYTHONPATH")) if p),
        PYTHONUNBUFFERED="1",
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bill_api"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        _wait_until_up(process, base_url, log, timeout)
        yield Server(base_url=base_url, log=log)
    finally:
        _stop(process)


def with_search_path(url: str, schema: str) -> str:
    """
    Return PostgreSQL *url* with a connection option that sets ``search_path`` to *schema*.
    """
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """
    Create a schema of its own for one run and yield *url* pointed at it; drop it afterwards.
    """
    schema = f"perfkit_bench_{secrets.token_hex(4)}"
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        try:
            yield with_search_path(url, schema)
        finally:
            with engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        engine.dispose()


def prepare(database_url: str, *, voters: int, token: str, analyze: bool) -> list[int]:
    """
    Check the database holds exactly the seed and create *voters* users who have not voted.

    With *analyze*, PostgreSQL's planner statistics of the three tables are
    refreshed afterwards (what autovacuum would do on a live server).

    Returns:
        The new users' ids.
    """
    with open_stores(database_url, schema="none") as stores:
        with stores.engine.connect() as conn:
            counts = {
                model.__tablename__: conn.execute(
                    sa.select(sa.func.count()).select_from(model)
                ).scalar_one()
                for model in (User, Bill, Vote)
            }
        expected = {"users": SEED_USERS, "bills": SEED_BILLS, "votes": SEED_VOTES}
        if counts != expected:
            msg = f"the database must hold just the app's seed {expected}, it holds {counts}"
            raise BenchmarkError(msg)
        ids = [
            stores.users.create(
                username=f"voter{token}_{i}", email=f"voter{token}_{i}@example.org"
            ).id
            for i in range(voters)
        ]
        if analyze and stores.engine.dialect.name == "postgresql":
            with stores.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE users, bills, votes")
        return ids


def _display_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def run(
    *,
    database_url: str | None = None,
    requests: int = DEFAULT_REQUESTS,
    warmup: int = DEFAULT_WARMUP,
    timeout: float = STARTUP_TIMEOUT,
    analyze: bool = True,
    cache: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """
    Start the API on *database_url* (default: a fresh SQLite file) and measure every endpoint.
    """
    if requests < 1 or warmup < 0:
        msg = "requests must be at least 1 and warmup at least 0"
        raise ValueError(msg)
    say = progress or (lambda _message: None)
    token = secrets.token_hex(3)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="perfkit-bench-")))
        if database_url is None:
            url = f"sqlite:///{tmp / 'bench.sqlite3'}"
        elif make_url(database_url).get_backend_name() == "postgresql":
            url = stack.enter_context(postgres_schema(database_url))
        else:
            url = database_url
        backend = make_url(url).get_backend_name()
        label = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}.get(backend, backend)
        say(f"starting the API on {_display_url(url)} (seeding it) ...")
        server = stack.enter_context(serve(url, tmp / "server.log", timeout=timeout, cache=cache))
        seed_seconds = server.seed_seconds()
        say(f"up at {server.base_url}; seeding took {seed_seconds} s; creating voters ...")
        voters = prepare(url, voters=warmup + requests, token=token, analyze=analyze)
        results = []
        with httpx.Client(
            base_url=server.base_url, timeout=REQUEST_TIMEOUT, trust_env=False
        ) as client:
            for endpoint in endpoints(voters=voters, token=token):
                result = measure(client, endpoint, requests=requests, warmup=warmup)
                say(f"{label}: {_row(result)}")
                results.append(result)
    return Report(
        database=label,
        database_url=_display_url(database_url) if database_url else "a fresh SQLite file",
        requests=requests,
        warmup=warmup,
        analyzed=analyze and backend == "postgresql",
        seed_seconds=seed_seconds,
        results=tuple(results),
    )


def _row(result: Result) -> str:
    return (
        f"{result.name:<38} {result.median_ms:8.2f} {result.p90_ms:8.2f} "
        f"{result.p99_ms:8.2f} {result.requests_per_second:8.0f}"
    )


def format_text(report: Report) -> str:
    """
    Return *report* as an aligned plain-text table.
    """
    header = f"{'endpoint':<38} {'median':>8} {'p90':>8} {'p99':>8} {'req/s':>8}"
    lines = [
        f"{report.database}: {report.requests} sequential requests per endpoint "
        f"(+{report.warmup} warm-up), latency in ms",
        header,
        "-" * len(header),
        *(_row(result) for result in report.results),
    ]
    return "\n".join(lines)


def format_markdown(report: Report) -> str:
    """
    Return *report* as a Markdown table.
    """
    lines = [
        "| Endpoint | Median (ms) | p90 (ms) | p99 (ms) | Requests/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| `{r.name}` | {r.median_ms:.2f} | {r.p90_ms:.2f} | {r.p99_ms:.2f} "
        f"| {r.requests_per_second:,.0f} |"
        for r in report.results
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--requests",
        type=int,
        default=DEFAULT_REQUESTS,
        metavar="N",
        help=f"measured requests per endpoint (default {DEFAULT_REQUESTS})",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=DEFAULT_WARMUP,
        metavar="N",
        help=f"unmeasured requests per endpoint first (default {DEFAULT_WARMUP})",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="database to run against (default: a fresh SQLite file); "
        "for PostgreSQL a schema is created for the run and dropped after it",
    )
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="on PostgreSQL, measure without running ANALYZE after the seed",
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    options = parser.parse_args(argv)
    report = run(
        database_url=options.database_url,
        requests=options.requests,
        warmup=options.warmup,
        analyze=not options.no_analyze,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    analyzed = ", ANALYZE after seeding" if report.analyzed else ""
    print(f"{report.database_url}: seeded in {report.seed_seconds} s{analyzed}")
    print(format_markdown(report) if options.markdown else format_text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
