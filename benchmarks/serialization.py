"""
JSON bodies of the example API's hot routes: FastAPI's own path against orjson, msgspec and json.

Two bodies as the routes build them: one ``BillRecord`` (``GET /bills/{id}``)
and a page of 20 and of 100 ``VoteRecord`` (``GET /bills/{id}/votes``).
Each variant turns a record (or a ``Page`` of them) into the bytes of the body:

* ``fastapi``: what FastAPI does today with a route's ``-> dict[str, Any]``
  return: ``to_dict()``, then ``fastapi.routing.serialize_response`` with the
  route's own response field and options (pydantic validates the dict against
  ``dict[str, Any]`` and dumps it to JSON in Rust: its ``dump_json`` path). The
  denominator of every ratio;
* ``fastapi, no annotation``: the same route without a return annotation:
  ``jsonable_encoder`` then ``JSONResponse.render`` (``json.dumps``);
* ``json.dumps``: ``to_dict()`` then ``JSONResponse.render``'s ``json.dumps``;
* ``orjson``: ``orjson.dumps`` of the record itself (dataclass, datetimes and
  enums natively); ``orjson, to_dict()`` of the dict, to show what
  ``to_dict()`` costs;
* ``msgspec``: a ``msgspec.json.Encoder().encode`` of the record itself.

Before timing, every body is checked against the ``fastapi`` one: valid JSON,
the same value, the same bytes. Times are ns per body, the median of
REPEATS rounds with the variants interleaved (a rotating order each round).
The sync route row runs FastAPI's path as it runs for the example's sync
routes, validation in a worker thread (``is_coroutine=False``), on an event
loop. ``--instructions`` counts instructions per body with callgrind instead.

Usage: ``python benchmarks/serialization.py [--number N] [--instructions]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import orjson

from perfkit.pagination import Page
from perfkit.reference.models import BillStatus, VoteChoice
from perfkit.reference.records import BillRecord, VoteRecord

REPEATS = 9
BASE = "fastapi"
VARIANTS = [
    "fastapi",
    "fastapi, no annotation",
    "json.dumps",
    "orjson",
    "orjson, to_dict()",
    "msgspec",
]
# Body -> divisor of --number: calls per timing run and per callgrind child.
PAYLOADS = {"bill": 1, "20 votes": 10, "100 votes": 50}
START = datetime(2026, 11, 21, 9, 30, 15, 250_000, tzinfo=UTC)


def bill() -> BillRecord:
    """A bill like the seed's: a ~300-byte body."""
    return BillRecord(
        id=4242,
        title="Clean Water Infrastructure Modernization Act of 2026 (No. 4242)",
        summary="A bill to provide for clean water infrastructure modernization, "
        "and for other purposes.",
        status=BillStatus.INTRODUCED,
        sponsor_id=317,
        created_at=START,
        updated_at=START + timedelta(hours=37, microseconds=1),
    )


def votes(n: int) -> Page[VoteRecord]:
    """Page 1 of a bill's votes, *n* to a page."""
    choices = list(VoteChoice)
    items = tuple(
        VoteRecord(
            id=10_000 + i,
            bill_id=4242,
            user_id=1 + 37 * i % 1000,
            choice=choices[i % 3],
            created_at=START + timedelta(seconds=97 * i, microseconds=1_337 * i),
        )
        for i in range(n)
    )
    return Page(items, page=1, limit=n, total=5 * n, pages=5, has_next=True, has_prev=False)


def page_fields(page: Page[Any], items: object) -> dict[str, Any]:
    """The example API's page body (``perfkit.fastapi.page_body``) with *items* as given."""
    return {
        "items": items,
        "page": page.page,
        "limit": page.limit,
        "total": page.total,
        "pages": page.pages,
        "has_next": page.has_next,
        "has_prev": page.has_prev,
    }


@dataclass(frozen=True, slots=True)
class Payload:
    """A body two ways: as the routes return it today (a dict) and with the records left in."""

    as_dict: Callable[[], dict[str, Any]]
    as_records: Callable[[], object]


def payload(name: str) -> Payload:
    if name == "bill":
        record = bill()
        return Payload(record.to_dict, lambda: record)
    page = votes(int(name.split(maxsplit=1)[0]))
    return Payload(
        lambda: page_fields(page, [item.to_dict() for item in page.items]),
        lambda: page_fields(page, page.items),
    )


def _route() -> Any:
    """The ``APIRoute`` FastAPI builds for a route annotated ``-> dict[str, Any]``."""
    from fastapi import FastAPI  # noqa: PLC0415 - the json/orjson/msgspec children skip it
    from fastapi.routing import APIRoute  # noqa: PLC0415

    app = FastAPI()

    @app.get("/bills/{bill_id}")
    def get_bill(bill_id: int) -> dict[str, Any]:
        raise NotImplementedError

    (route,) = [r for r in app.routes if isinstance(r, APIRoute)]
    assert route.response_field is not None, "FastAPI built no response field"
    return route


def _finish(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (``serialize_response`` with ``is_coroutine=True``)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the coroutine suspended")


def fastapi_serializer(*, annotated: bool, in_thread: bool = False) -> Callable[..., Any]:
    """
    FastAPI's own serialization of a route's return value, as ``get_request_handler`` calls it.

    With *in_thread* the returned callable is a coroutine function (a sync route's path).
    """
    from fastapi.routing import serialize_response  # noqa: PLC0415
    from starlette.responses import JSONResponse  # noqa: PLC0415

    route = _route()
    options = {
        "field": route.response_field if annotated else None,
        "include": route.response_model_include,
        "exclude": route.response_model_exclude,
        "by_alias": route.response_model_by_alias,
        "exclude_unset": route.response_model_exclude_unset,
        "exclude_defaults": route.response_model_exclude_defaults,
        "exclude_none": route.response_model_exclude_none,
        # The default response class: FastAPI dumps with pydantic straight to bytes.
        "dump_json": annotated,
    }
    if in_thread:

        async def threaded(content: Any) -> bytes:
            body: bytes = await serialize_response(
                response_content=content, is_coroutine=False, **options
            )
            return body

        return threaded
    if annotated:
        return lambda content: _finish(
            serialize_response(response_content=content, is_coroutine=True, **options)
        )
    render = JSONResponse.__new__(JSONResponse).render  # render() reads nothing of the instance
    return lambda content: render(
        _finish(serialize_response(response_content=content, is_coroutine=True, **options))
    )


def stdlib_dumps(content: Any) -> bytes:
    """``JSONResponse.render``: compact, UTF-8, no NaN."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def variant(name: str, body: Payload) -> Callable[[], bytes]:
    """One call of *name*: *body* to JSON bytes, everything it needs prepared."""
    as_dict, as_records = body.as_dict, body.as_records
    if name == "fastapi":
        fastapi_dump = fastapi_serializer(annotated=True)
        return lambda: fastapi_dump(as_dict())
    if name == "fastapi, no annotation":
        fastapi_plain = fastapi_serializer(annotated=False)
        return lambda: fastapi_plain(as_dict())
    if name == "json.dumps":
        return lambda: stdlib_dumps(as_dict())
    if name == "orjson":
        dumps = orjson.dumps
        return lambda: dumps(as_records())
    if name == "orjson, to_dict()":
        dumps = orjson.dumps
        return lambda: dumps(as_dict())
    if name == "msgspec":
        encode = msgspec.json.Encoder().encode
        return lambda: encode(as_records())
    raise ValueError(name)


def _differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        if list(expected) != list(actual):
            return [f"{path or 'body'}: keys {list(expected)} vs {list(actual)}"]
        return [d for k in expected for d in _differences(expected[k], actual[k], f"{path}.{k}")]
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [d for i, (e, a) in enumerate(zip(expected, actual, strict=True))
                for d in _differences(e, a, f"{path}[{i}]")]  # fmt: skip
    return [] if expected == actual else [f"{path}: {expected!r} vs {actual!r}"]


def check() -> None:
    """Print, per body and variant, whether it is the ``fastapi`` body, byte for byte."""
    print("| body | variant | bytes | same bytes as fastapi | same JSON value | first difference |")
    print("|---|---|--:|---|---|---|")
    for name in PAYLOADS:
        body = payload(name)
        expected = variant(BASE, body)()
        for v in VARIANTS[1:]:
            actual = variant(v, body)()
            found = _differences(json.loads(expected), json.loads(actual))
            first = f"{found[0]} ({len(found)} values)" if found else ""
            print(f"| {name} | {v} | {len(actual):,} | {'yes' if actual == expected else 'no'} "
                  f"| {'no' if found else 'yes'} | {first} |")  # fmt: skip
        print(f"| {name} | {BASE} | {len(expected):,} | | | |")


def interleaved(runs: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Median ns per call of each variant over REPEATS rounds, in a rotating order."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for round_ in range(REPEATS):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            samples[name].append(runs[name]())
    return {name: statistics.median(v) for name, v in samples.items()}


def timed(fn: Callable[[], object], number: int) -> Callable[[], float]:
    timer = timeit.Timer(fn)
    return lambda: timer.timeit(number) / number * 1e9


def in_thread_run(body: Payload, number: int) -> Callable[[], float]:
    """ns per body of FastAPI's path for a sync route (validation hops to a worker thread)."""
    dump = fastapi_serializer(annotated=True, in_thread=True)
    loop = asyncio.new_event_loop()

    async def run() -> float:
        start = time.perf_counter()
        for _ in range(number):
            await dump(body.as_dict())
        return (time.perf_counter() - start) / number * 1e9

    loop.run_until_complete(run())
    return lambda: loop.run_until_complete(run())


def timings(number: int) -> None:
    print(f"ns per body, median of {REPEATS} interleaved rounds, and its ratio to {BASE}\n")
    results: dict[str, dict[str, float]] = {}
    for name, scale in PAYLOADS.items():
        body = payload(name)
        n = max(1, number // scale)
        runs = {v: timed(variant(v, body), n) for v in VARIANTS}
        runs["fastapi, sync route"] = in_thread_run(body, max(1, n // 4))
        results[name] = interleaved(runs)
    table(results, "ns", [*VARIANTS, "fastapi, sync route"])


def table(results: dict[str, dict[str, float]], unit: str, variants: list[str]) -> None:
    """One row per variant: per body, its figure in *unit* and the ratio to ``fastapi``."""
    print(f"| variant | {' | '.join(f'{p} ({unit}) | / {BASE}' for p in PAYLOADS)} |")
    print(f"|---|{'--:|' * 2 * len(PAYLOADS)}")
    for v in variants:
        cells = [f"{results[p][v]:,.0f} | {results[p][v] / results[p][BASE]:.2f}" for p in PAYLOADS]
        print(f"| {v} | {' | '.join(cells)} |")


def _child(spec: str, count: int) -> None:
    """Set up one body and variant, then make *count* bodies (the body of one callgrind run)."""
    name, _, v = spec.partition(":")
    make = variant(v, payload(name))
    for _ in range(count + 1):
        make()


def instructions(number: int) -> None:
    import callgrind  # noqa: PLC0415 - the benchmarks directory is on sys.path

    counts: dict[str, dict[str, float]] = {}
    for name, scale in PAYLOADS.items():
        n = max(1, number // scale)
        found = callgrind.per_iteration(__file__, [f"{name}:{v}" for v in VARIANTS], n)
        counts[name] = {v: found[f"{name}:{v}"] for v in VARIANTS}
    print("instructions per body (callgrind, (count at 3N - count at N) / 2N, "
          f"N = {number:,} bills, {number // 10:,} and {number // 50:,} pages)\n")  # fmt: skip
    table(counts, "instructions", VARIANTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=20_000, help="bills per run (pages: fewer)")
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("BODY:VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return
    import fastapi  # noqa: PLC0415
    import pydantic  # noqa: PLC0415

    print(f"FastAPI {fastapi.__version__}, pydantic {pydantic.VERSION}, "
          f"orjson {orjson.__version__}, msgspec {msgspec.__version__}, "
          f"Python {sys.version.split()[0]}\n")  # fmt: skip
    check()
    print()
    if args.instructions:
        instructions(min(args.number, 1_000))
    else:
        timings(args.number)


if __name__ == "__main__":
    main()
