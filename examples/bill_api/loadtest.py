"""
``make loadtest``: the example API under an open-model load, judged against budgets.json.

Starts the API as ``make demo`` does (the embedded default: the SQLite demo file and
the in-process cache; ``PERFKIT_DATABASE_URL`` / ``PERFKIT_REDIS_URL`` to use
PostgreSQL and Redis), makes fresh bills for the vote casts, reads every record once
(:func:`prime`: the steady state the budgets describe), runs :func:`scenario`
at ``PERFKIT_LOAD_RATE`` requests per second (default: the budgets' rate) for
``PERFKIT_LOAD_SECONDS`` (default 20) after ``PERFKIT_LOAD_WARMUP`` seconds (default 20:
the caches start cold) from
``PERFKIT_LOAD_PROCESSES`` generator processes (default 1), writes
``var/load/report.json``, ``var/load/report.md`` and ``var/load/latency.png``, and exits
with the verdict: 0 valid and within budget, 1 a budget broken or the run invalid.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import httpx

from perfkit.load import HTTPClient, Request, Scenario, Step, load_budgets
from perfkit.load._cli import main as load_main

ROOT: Final = Path(__file__).resolve().parents[2]
BUDGETS: Final = ROOT / "budgets.json"
OUT: Final = ROOT / "var" / "load"
SEEDED_USERS: Final = 1_000
SEEDED_BILLS: Final = 10_000
FRESH_BILLS: Final = 200


def scenario(fresh_bills: list[int] | None = None, *, first: int = 0) -> Scenario:
    """
    The example API's mix: mostly reads (a bill, its vote counts, offset pages, the first
    keyset page, a user), plus user creations and vote casts on fresh (bill, user) pairs:
    request *i*, a cast, goes to ``fresh_bills[i % len]`` from user ``i // len + 1``, which
    no seeded vote and no other request of the run has used (request numbers are unique
    across generator processes too). Several runs against one database each need their
    own *first* request number (its casts and user names are then new too).
    """
    bills = fresh_bills or []

    def bill(_i: int, rng: random.Random) -> Request:
        return Request("GET /bills/{bill_id}", "GET", f"/bills/{_pick(rng, SEEDED_BILLS)}")

    def counts(_i: int, rng: random.Random) -> Request:
        path = f"/bills/{_pick(rng, SEEDED_BILLS)}/votes/counts"
        return Request("GET /bills/{bill_id}/votes/counts", "GET", path)

    def page(_i: int, rng: random.Random) -> Request:
        return Request("GET /bills", "GET", f"/bills?page={_pick(rng, 50)}&limit=20")

    def first_keyset_page(_i: int, _rng: random.Random) -> Request:
        return Request("GET /bills", "GET", "/bills?cursor=&limit=20")

    def user(_i: int, rng: random.Random) -> Request:
        return Request("GET /users/{user_id}", "GET", f"/users/{_pick(rng, SEEDED_USERS)}")

    def new_user(i: int, _rng: random.Random) -> Request:
        name = f"load{os.getpid()}x{first + i}"
        body = {"username": name, "email": f"{name}@example.org"}
        return Request("POST /users", "POST", "/users", json=body)

    def vote(i: int, _rng: random.Random) -> Request:
        n = first + i
        bill_id = bills[n % len(bills)]
        user_id = n // len(bills) % SEEDED_USERS + 1
        path = f"/bills/{bill_id}/votes"
        return Request(
            "POST /bills/{bill_id}/votes", "POST", path, json={"user_id": user_id, "choice": "yes"}
        )

    steps = [Step(30, bill), Step(20, counts), Step(12, page), Step(3, first_keyset_page),
             Step(25, user), Step(5, new_user)]  # fmt: skip
    if bills:
        steps.append(Step(5, vote))
    return Scenario(steps)


async def prime(base_url: str, *, concurrency: int = 16) -> int:
    """
    Read every seeded bill, vote count and user and every listing page of the scenario once,
    *concurrency* at a time: the steady state of a service that has been up a while, which
    is what the budgets are about (a cold cache is its own, shorter story). Returns the
    number of requests sent.
    """
    paths = [f"/bills/{i}" for i in range(1, SEEDED_BILLS + 1)]
    paths += [f"/bills/{i}/votes/counts" for i in range(1, SEEDED_BILLS + 1)]
    paths += [f"/users/{i}" for i in range(1, SEEDED_USERS + 1)]
    paths += [f"/bills?page={i}&limit=20" for i in range(1, 51)] + ["/bills?cursor=&limit=20"]
    queue = iter(paths)
    async with HTTPClient(base_url, timeout=30) as client:

        async def worker() -> None:
            for path in queue:
                await client.request("GET", path)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(paths)


def _pick(rng: random.Random, n: int) -> int:
    return rng.randint(1, n)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    rate = float(os.environ.get("PERFKIT_LOAD_RATE") or max(b.rate for b in load_budgets(BUDGETS)))
    seconds = os.environ.get("PERFKIT_LOAD_SECONDS", "20")
    port = _free_port()
    env = {**os.environ, "PERFKIT_PORT": str(port), "PYTHONPATH": str(ROOT / "examples")}
    OUT.mkdir(parents=True, exist_ok=True)
    log = (OUT / "server.log").open("w")  # the API's request log
    server = subprocess.Popen(
        [sys.executable, "-m", "bill_api"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a first run seeds the demo database
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print("loadtest: the API did not start", file=sys.stderr)
                return 1
            time.sleep(0.2)
        fresh = [
            httpx.post(
                f"{base}/bills", json={"title": f"load test bill {i}", "sponsor_id": 1}
            ).json()["id"]
            for i in range(FRESH_BILLS)
        ]
        started = time.monotonic()
        primed = asyncio.run(prime(base))
        print(f"loadtest: primed with {primed:,} reads in {time.monotonic() - started:.0f} s",
              file=sys.stderr)  # fmt: skip
        return load_main([
            base, "--rate", str(rate),
            "--duration", seconds, "--warmup", os.environ.get("PERFKIT_LOAD_WARMUP", "20"),
            "--budgets", str(BUDGETS),
            "--json", str(OUT / "report.json"), "--markdown", str(OUT / "report.md"),
            "--png", str(OUT / "latency.png"),
            "--processes", os.environ.get("PERFKIT_LOAD_PROCESSES", "1"),
        ], scenario=scenario(fresh))  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    raise SystemExit(main())
