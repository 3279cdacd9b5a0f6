"""
The example API's capacity under open-model load: naive vs perfkit with everything on.

For each backend (SQLite; PostgreSQL + Redis) and each setup, the database starts from the
same seeded state (10,000 bills, 1,000 users, 100,000 votes), the server starts fresh
pinned to core 0 (with PostgreSQL's and Redis's processes, when used, so the server
"machine" is one core), 2,000 fresh bills are made for the vote casts, and the generator
(one process, pinned to core 1) runs the make-loadtest scenario (bill, counts, offset
and keyset pages, users, user creations, vote casts) at rising rates: a 3 s warm-up, then
``--seconds`` measured (first, the steady state of a service that has been up a while:
every bill, vote count, user and listing page read once, then ``--warm`` seconds of the
mix at the start rate), each step ``--factor`` times the last, until a route's p95 passes
100 ms, its 5xx/failed share passes 1 %, or the run is invalid by the runner's own gate.

Setups:
  naive    every perfkit cache off (``PERFKIT_CACHE=off``), uvicorn on h11 + asyncio
           (the server setup before the HTTP-layer issue); timing middleware on.
  perfkit  data cache + response cache on (Redis L2 for PostgreSQL), uvicorn on
           httptools + uvloop; timing middleware on.

Reported per setup: the highest rate at which every route held p95 <= 100 ms, and the
highest at which every route held p95 <= 10 ms (every step below it too), with the worst
route's p95 and p99 and the error share at that step.

Usage: ``python benchmarks/capacity.py [--backends sqlite,postgres] [--seconds 10]``
(needs the loopback PostgreSQL and Redis for ``postgres``; ``taskset``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bill_api.loadtest import SEEDED_USERS, prime, scenario
from perfkit import db, migrations
from perfkit.load import HTTPClient, Request, load_budgets, report, run
from perfkit.reference import open_stores, seed
from servers import PIN_SERVER, Config, serve, uvicorn

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PG_DATABASE = "perfkit_capacity"
REDIS_URL = "redis://127.0.0.1:6379/3"
FRESH_BILLS = 2_000  # x 1,000 users: 2 million fresh (bill, user) pairs for the casts
ROUTES = ("GET /bills/{bill_id}", "GET /bills/{bill_id}/votes/counts", "GET /bills",
          "GET /users/{user_id}", "POST /users", "POST /bills/{bill_id}/votes")  # fmt: skip


def budgets(p95_ms: float) -> Any:
    return load_budgets({
        "version": 1,
        "defaults": {"p95_ms": p95_ms, "max_error_rate": 0.01, "rate": 1},
        "routes": [{"method": r.split()[0], "route": r.split()[1]} for r in ROUTES],
    })  # fmt: skip


LOOSE, TIGHT = budgets(100), budgets(10)


@dataclass
class Step:
    rate: float
    valid: bool
    problems: list[str]
    worst_p95: float
    worst_p99: float
    error_share: float
    loose_ok: bool
    tight_ok: bool


def sqlite_url(directory: Path) -> str:
    """A fresh copy of the seeded database (seeded once): every setup starts from the same."""
    pristine = directory / "capacity-seeded.sqlite3"
    if not pristine.exists():
        with open_stores(f"sqlite:///{pristine}") as stores:
            seed(stores.engine)
    path = directory / "capacity.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(pristine, path)
    return f"sqlite:///{path}"


def postgres_url() -> str:
    """A freshly seeded database: every setup starts from the same."""
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {PG_DATABASE}"))
    admin.dispose()
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_DATABASE}"
    engine = db.create_engine(url)
    migrations.upgrade(engine, "perfkit", "perfkit_reference")  # once, as a deploy would
    engine.dispose()
    with open_stores(url) as stores:
        seed(stores.engine)
    return url


@contextmanager
def pinned_services(names: tuple[str, ...]) -> Iterator[None]:
    """Pin every running process named *names* (and their future children) to core 0."""
    pids = []
    for name in names:
        found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False)
        pids += found.stdout.split()
    for pid in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", "0", pid], capture_output=True, check=False)
    try:
        yield
    finally:
        cores = f"0-{(os.cpu_count() or 1) - 1}"
        for pid in pids:
            subprocess.run(["taskset", "-a", "-p", "-c", cores, pid], capture_output=True,
                           check=False)  # fmt: skip


async def step(
    port: int, bills: list[int], rate: float, seconds: float, first: int, warmup: float = 3.0
) -> Step:
    mix = scenario(bills, first=first)
    async with HTTPClient(f"http://127.0.0.1:{port}", timeout=10) as client:

        async def send(request: Request) -> int:
            return await client.request(request.method, request.path, json=request.json)

        result = await run(send, mix, rate=rate, duration=seconds, warmup=warmup,
                           arrivals="poisson", seed=int(rate))  # fmt: skip
    loose, tight = report(result, LOOSE), report(result, TIGHT)
    routes = loose["routes"].values()
    errors = sum(r["errors"] for r in routes)
    count = sum(r["count"] for r in routes)

    def held(document: dict[str, Any]) -> bool:
        return document["valid"] and all(
            check["ok"] for r in document["routes"].values() for check in r["budget"].values()
        )

    return Step(
        rate=rate, valid=result.valid, problems=list(result.problems),
        worst_p95=max(r["p95_ms"] for r in routes), worst_p99=max(r["p99_ms"] for r in routes),
        error_share=errors / count if count else 0.0, loose_ok=held(loose), tight_ok=held(tight),
    )  # fmt: skip


def search(
    config: Config, start: float, factor: float, stop: float, seconds: float, warm: float
) -> list[Step]:
    steps: list[Step] = []
    with serve(config) as (port, _group):
        base = f"http://127.0.0.1:{port}"
        bills = [
            httpx.post(f"{base}/bills", json={"title": f"capacity {i}", "sponsor_id": 1},
                       timeout=10).json()["id"]
            for i in range(FRESH_BILLS)
        ]  # fmt: skip
        assert FRESH_BILLS * SEEDED_USERS >= 2_000_000
        # Steady state, as a long-running service is in: every record read once (the
        # caches and the database's pages start cold), then the mix for a while.
        asyncio.run(prime(base))
        asyncio.run(step(port, bills, start, 1.0, 0, warmup=warm))
        first = int(start * (warm + 1) * 1.2) + 1000
        rate = start
        while rate <= stop:
            found = asyncio.run(step(port, bills, rate, seconds, first))
            first += int(rate * (seconds + 3) * 1.2) + 1000  # more than this step can send
            steps.append(found)
            print(f"  {config.label}: {rate:7,.0f} req/s  valid={found.valid}  "
                  f"p95 {found.worst_p95:8.2f} ms  p99 {found.worst_p99:8.2f} ms  "
                  f"errors {found.error_share:.2%}  {'; '.join(found.problems)}",
                  file=sys.stderr, flush=True)  # fmt: skip
            if not found.loose_ok:
                break
            rate = round(rate * factor, -1)
    return steps


def capacity(steps: list[Step], attribute: str) -> Step | None:
    held = None
    for found in steps:
        if not getattr(found, attribute):
            break
        held = found
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--setups", default="naive,perfkit")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--start", type=float, default=400.0)
    parser.add_argument("--factor", type=float, default=1.25)
    parser.add_argument("--stop", type=float, default=20000.0)
    parser.add_argument("--warm", type=float, default=20.0, help="seconds at START first")
    parser.add_argument("--json", type=Path, default=ROOT / "var" / "capacity.json")
    options = parser.parse_args()
    if PIN_SERVER:
        os.sched_setaffinity(0, {1})  # the generator on core 1
    workdir = ROOT / "var"
    workdir.mkdir(exist_ok=True)
    app = "bill_api.app:create_app"
    results: dict[str, Any] = {}
    for backend in options.backends.split(","):
        services = () if backend == "sqlite" else ("postgres", "redis-server")
        for setup in options.setups.split(","):
            url = sqlite_url(workdir) if backend == "sqlite" else postgres_url()
            env = {"PERFKIT_DATABASE_URL": url}
            if setup == "naive":
                env["PERFKIT_CACHE"] = "off"
                argv = [*uvicorn(app, http="h11", loop="asyncio"), "--factory"]
            else:
                if backend == "postgres":
                    env["PERFKIT_REDIS_URL"] = REDIS_URL
                argv = [*uvicorn(app, http="httptools", loop="uvloop"), "--factory"]
            config = Config(f"{backend} {setup}", argv, "/readyz", env=env)
            with pinned_services(services):
                steps = search(config, options.start, options.factor, options.stop,
                               options.seconds, options.warm)  # fmt: skip
            results[config.label] = {
                "steps": [vars(s) for s in steps],
                "p95_100ms": vars(held) if (held := capacity(steps, "loose_ok")) else None,
                "p95_10ms": vars(held) if (held := capacity(steps, "tight_ok")) else None,
            }
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table(results))


def table(results: dict[str, Any]) -> str:
    lines = ["| backend, setup | rate at p95 <= 100 ms (p95 / p99, errors) "
             "| rate at p95 <= 10 ms (p95 / p99, errors) |", "|---|--:|--:|"]  # fmt: skip

    def cell(found: dict[str, Any] | None) -> str:
        if found is None:
            return "none"
        return (f"{found['rate']:,.0f} ({found['worst_p95']:.1f} / {found['worst_p99']:.1f} ms, "
                f"{found['error_share']:.2%})")  # fmt: skip

    for label, entry in results.items():
        lines.append(f"| {label} | {cell(entry['p95_100ms'])} | {cell(entry['p95_10ms'])} |")
    for backend in sorted({label.split()[0] for label in results}):
        naive = results.get(f"{backend} naive", {}).get("p95_100ms")
        fast = results.get(f"{backend} perfkit", {}).get("p95_10ms")
        if naive and fast:
            lines.append(f"\n{backend}: perfkit at p95 <= 10 ms / naive at p95 <= 100 ms = "
                         f"{fast['rate'] / naive['rate']:.2f}x")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
