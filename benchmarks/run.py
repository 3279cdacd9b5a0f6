"""
``make bench``: run perfkit's benchmarks one after another and print their Markdown tables.

Each benchmark in :data:`BENCHMARKS` runs once per database target: SQLite
always, PostgreSQL when it answers at ``PERFKIT_TEST_DATABASE_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). The tables go into
``docs/benchmarks.md`` by hand.

Usage::

    PYTHONPATH=examples .venv/bin/python benchmarks/run.py [--only NAME] [--requests N]
        [--no-postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import make_url

import endpoint_baseline
from perfkit.db import create_engine

DEFAULT_POSTGRES_URL: Final = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True, slots=True)
class Target:
    """
    A database a benchmark runs against.

    Attributes:
        name: How tables name it ("SQLite", "PostgreSQL").
        database_url: Its URL, or ``None`` for a fresh SQLite file per run.
    """

    name: str
    database_url: str | None


@dataclass(frozen=True, slots=True)
class Benchmark:
    """
    One entry of ``make bench``.

    Attributes:
        name: Used by ``--only``.
        title: The heading its tables get.
        run: Runs it on a target with the command-line options and returns Markdown.
        databases: Whether it runs once per database target; if not, it runs once
            (for benchmarks of pure-Python parts that touch no database).
    """

    name: str
    title: str
    run: Callable[[Target | None, argparse.Namespace], str]
    databases: bool = True


def _endpoints(*, cache: bool) -> Callable[[Target | None, argparse.Namespace], str]:
    def run(target: Target | None, options: argparse.Namespace) -> str:
        assert target is not None
        report = endpoint_baseline.run(
            database_url=target.database_url,
            requests=options.requests,
            analyze=not options.no_analyze,
            cache=cache,
            progress=lambda message: print(f"  {message}", file=sys.stderr, flush=True),
        )
        return "\n".join(
            [
                f"{report.requests:,} sequential requests per endpoint "
                f"(+{report.warmup} warm-up), one keep-alive client; "
                f"seed took {report.seed_seconds} s"
                + (", then ANALYZE." if report.analyzed else "."),
                "",
                endpoint_baseline.format_markdown(report),
            ]
        )

    return run


def _script(name: str, *args: str) -> Callable[[Target | None, argparse.Namespace], str]:
    def run(_target: Target | None, _options: argparse.Namespace) -> str:
        command = [sys.executable, str(Path(__file__).with_name(name)), *args]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout

    return run


REDIS_URL: Final = os.environ.get("PERFKIT_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
POSTGRES_URL: Final = os.environ.get("PERFKIT_TEST_DATABASE_URL") or DEFAULT_POSTGRES_URL

# Later entries (pagination, retry, breaker, middleware) are appended here.
BENCHMARKS: Final[tuple[Benchmark, ...]] = (
    Benchmark(
        name="endpoint_baseline",
        title="Endpoint latency baseline (no cache)",
        run=_endpoints(cache=False),
    ),
    Benchmark(
        name="endpoint_cached",
        title="Endpoint latency with the in-process cache",
        run=_endpoints(cache=True),
    ),
    Benchmark(
        name="cache_hit",
        title="Cache hit against peers",
        run=_script("cache_hit.py", "--redis", REDIS_URL),
        databases=False,
    ),
    Benchmark(
        name="cache_hit_instructions",
        title="Cache hit against peers, in instructions (callgrind)",
        run=_script("cache_hit.py", "--instructions"),
        databases=False,
    ),
    Benchmark(
        name="tiered_delivery",
        title="Tiered cache: invalidation delivery latency",
        run=_script("tiered_delivery.py", "--redis", REDIS_URL),
        databases=False,
    ),
    Benchmark(
        name="tiered_staleness",
        title="Tiered cache: staleness across processes under load",
        run=_script("tiered_staleness.py", "--redis", REDIS_URL),
        databases=False,
    ),
    Benchmark(
        name="pagination",
        title="Pagination at depth (1,000,000 bills)",
        run=_script("pagination.py", "--postgres", POSTGRES_URL),
        databases=False,
    ),
    Benchmark(
        name="resilience",
        title="Retry and circuit breaker against their peers",
        run=_script("resilience.py"),
        databases=False,
    ),
    Benchmark(
        name="read_retry",
        title="Retried reads: the success path against a bare read and tenacity",
        run=_script("read_retry.py"),
        databases=False,
    ),
    Benchmark(
        name="read_retry_instructions",
        title="Retried reads, in instructions (callgrind)",
        run=_script("read_retry.py", "--instructions"),
        databases=False,
    ),
    Benchmark(
        name="load_ceiling",
        title="The load generator's own ceiling (requests/s it keeps on schedule)",
        run=_script("load_ceiling.py"),
        databases=False,
    ),
    Benchmark(
        name="capacity",
        title="The example API's capacity, naive vs perfkit (open-model load; ~30 min)",
        run=_script("capacity.py"),
        databases=False,
    ),
    Benchmark(
        name="middleware",
        title="Timing middleware under wrk",
        run=_script("middleware.py"),
        databases=False,
    ),
    Benchmark(
        name="middleware_instructions",
        title="Timing middleware in instructions (callgrind)",
        run=_script("middleware_instructions.py", "--server"),
        databases=False,
    ),
    Benchmark(
        name="store_sync_vs_async",
        title="Reference store reads: sync vs async engine",
        run=_script("store_sync_vs_async.py"),
        databases=False,
    ),
    Benchmark(
        name="batch",
        title="Bulk vote casting against cast in a loop",
        run=_script("batch.py", "--postgres", POSTGRES_URL),
        databases=False,
    ),
    Benchmark(
        name="export",
        title="Streamed exports at 1,000,000 rows against loading the listing whole",
        run=_script("export.py", "--postgres", POSTGRES_URL),
        databases=False,
    ),
    Benchmark(
        name="outbox",
        title="Outbox: cost per write (callgrind) and delivery latency",
        run=_script("outbox.py", "--postgres", POSTGRES_URL),
        databases=False,
    ),
    Benchmark(
        name="stale_check_instructions",
        title="The stale-snapshot check's cost per read, in instructions (callgrind)",
        run=_script("stale_check_instructions.py"),
        databases=False,
    ),
    Benchmark(
        name="serialization",
        title="JSON bodies: FastAPI's path against orjson, msgspec and json.dumps",
        run=_script("serialization.py"),
        databases=False,
    ),
    Benchmark(
        name="serialization_instructions",
        title="JSON bodies, in instructions (callgrind)",
        run=_script("serialization.py", "--instructions"),
        databases=False,
    ),
    Benchmark(
        name="servers",
        title="ASGI servers under wrk",
        run=_script("servers.py"),
        databases=False,
    ),
    Benchmark(
        name="http_stack",
        title="The example's HTTP stack under wrk: response cache, 304, compression",
        run=_script("http_stack.py"),
        databases=False,
    ),
    Benchmark(
        name="http_stack_instructions",
        title="Where a cached request of the example goes, in instructions (callgrind)",
        run=_script("http_stack_instructions.py"),
        databases=False,
    ),
    Benchmark(
        name="http_stack_server_instructions",
        title="The HTTP stack's targets in a uvicorn server, in instructions (callgrind + wrk)",
        run=_script("http_stack_instructions.py", "--server"),
        databases=False,
    ),
    Benchmark(
        name="import_time",
        title="Import time against stamina",
        run=_script("import_time.py"),
        databases=False,
    ),
)


def postgres_target(url: str) -> Target | None:
    """
    Return a PostgreSQL target at *url* if it answers, else ``None``.
    """
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        reason = str(exc).splitlines()[0]
        print(f"PostgreSQL not reachable at {shown}, skipped: {reason}", file=sys.stderr)
        return None
    finally:
        engine.dispose()
    return Target("PostgreSQL", url)


def targets(*, postgres: bool) -> list[Target]:
    """
    Return the database targets: SQLite, and PostgreSQL if wanted and reachable.
    """
    found = [Target("SQLite", None)]
    if postgres:
        url = os.environ.get("PERFKIT_TEST_DATABASE_URL") or DEFAULT_POSTGRES_URL
        target = postgres_target(url)
        if target is not None:
            found.append(target)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    names = [benchmark.name for benchmark in BENCHMARKS]
    parser = argparse.ArgumentParser(description="Run perfkit's benchmarks.")
    parser.add_argument(
        "--only", action="append", choices=names, metavar="NAME", help=f"one of {names}"
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=endpoint_baseline.DEFAULT_REQUESTS,
        metavar="N",
        help="measured requests per case (default %(default)s)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="run on SQLite only")
    parser.add_argument(
        "--no-analyze", action="store_true", help="no ANALYZE after seeding PostgreSQL"
    )
    options = parser.parse_args(argv)
    selected = [b for b in BENCHMARKS if not options.only or b.name in options.only]
    database_targets = targets(postgres=not options.no_postgres)

    print(
        f"# perfkit benchmarks, {dt.date.today().isoformat()}: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}\n"
    )
    for benchmark in selected:
        for target in database_targets if benchmark.databases else [None]:
            heading = benchmark.title + (f" — {target.name}" if target else "")
            print(
                f"running {benchmark.name} on {target.name if target else '-'} ...", file=sys.stderr
            )
            body = benchmark.run(target, options)
            print(f"## {heading}\n\n{body}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
