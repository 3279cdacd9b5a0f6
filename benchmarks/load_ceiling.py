"""
The load generator's own ceiling: the highest rate ``perfkit.load.run`` keeps on schedule
(valid by its own gate: p99 send lag <= 10 ms, no drops, >= 95 % of the rate) against a
server that is never the bottleneck: the raw ASGI app on uvicorn (httptools + uvloop)
pinned to core 0, the generator (one process, its own HTTPClient) pinned to core 1.

Usage: ``python benchmarks/load_ceiling.py [--seconds N]``
"""

from __future__ import annotations

import argparse
import asyncio
import os

from perfkit.load import HTTPClient, Request, Scenario, Step, run
from servers import Config, serve, uvicorn

RATES = (500, 1000, 2000, 3000, 4000, 6000, 8000, 12000)
SCENARIO = Scenario([Step(1, lambda i, rng: Request("GET /x", "GET", "/x"))])


async def one(port: int, rate: float, seconds: float) -> tuple[bool, float, float, str]:
    async with HTTPClient(f"http://127.0.0.1:{port}") as client:

        async def send(request: Request) -> int:
            return await client.request(request.method, request.path)

        result = await run(send, SCENARIO, rate=rate, duration=seconds, warmup=1.0)
    lag = result.lag.percentiles_ms([99.0])[99.0]
    p99 = result.total().percentiles_ms([99.0])[99.0]
    return result.valid, lag, p99, "; ".join(result.problems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    options = parser.parse_args()
    os.sched_setaffinity(0, {1})  # the generator on core 1, the server on core 0
    config = Config("raw", uvicorn("http_apps:raw", http="httptools", loop="uvloop"), "/x")
    print("| rate req/s | valid | p99 send lag ms | p99 latency ms | problems |")
    print("|--:|---|--:|--:|---|")
    ceiling = 0.0
    with serve(config) as (port, _group):
        for rate in RATES:
            valid, lag, p99, problems = asyncio.run(one(port, rate, options.seconds))
            print(f"| {rate:,} | {valid} | {lag:.2f} | {p99:.2f} | {problems} |", flush=True)
            if not valid:
                break
            ceiling = rate
    print(f"\nceiling: {ceiling:,.0f} req/s on schedule from one generator process")


if __name__ == "__main__":
    main()
