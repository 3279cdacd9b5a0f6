"""
TimingMiddleware, WSGITimingMiddleware and instrument_engine, read back through the OTel SDK.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import string
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from helpers import run_switching_often
from perfkit import (
    Cache,
    CircuitBreaker,
    CircuitOpenError,
    MemoryBackend,
    TimingMiddleware,
    WSGITimingMiddleware,
    db,
    instrument_engine,
)
from perfkit.observability import HTTP_DURATION_BUCKETS, _metrics, current_timing, instrument
from perfkit.testing import FakeClock

pytestmark = pytest.mark.anyio

SERVER_TIMING = re.compile(
    r'app;dur=(?P<app>[\d.]+), db;dur=(?P<db>[\d.]+);desc="(?P<queries>\d+) queries", '
    r'cache;desc="(?P<hits>\d+) hits/(?P<misses>\d+) misses"'
)


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


@pytest.fixture
def engine(tmp_path: Path, provider: MeterProvider) -> Iterator[sa.Engine]:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'obs.sqlite3'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.exec_driver_sql("INSERT INTO items VALUES (1, 'one'), (2, 'two')")
    instrument_engine(engine, meter_provider=provider)
    yield engine
    engine.dispose()


def _app(engine: sa.Engine) -> Starlette:
    cache = Cache(MemoryBackend(), namespace="obs")

    @cache.cached(key="item:{item_id}")
    def load(item_id: int) -> str | None:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT name FROM items WHERE id = ?", (item_id,)).scalar()

    def item(request: Request) -> JSONResponse:
        item_id = int(request.path_params["item_id"])
        return JSONResponse({"name": load(item_id), "again": load(item_id)})

    def many(request: Request) -> PlainTextResponse:
        with engine.connect() as conn:
            for _ in range(25):
                conn.exec_driver_sql("SELECT 1")
        return PlainTextResponse("n+1")

    def boom(request: Request) -> PlainTextResponse:
        raise RuntimeError("password=hunter2")

    async def stream(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first,"
            await asyncio.sleep(0)
            with engine.connect() as conn:  # a query after the headers went out
                conn.exec_driver_sql("SELECT 1")
            yield b"second"

        return StreamingResponse(body())

    def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/many", many),
            Route("/boom", boom),
            Route("/stream", stream),
            Route("/healthz", healthz),
        ]
    )


def _client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://obs")


def _points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def _log_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        json.loads(record.getMessage())
        for record in caplog.records
        if record.name == "perfkit.request"
    ]


async def test_server_timing_counts_queries_and_cache(
    engine: sa.Engine, provider: MeterProvider
) -> None:
    """Server-Timing says how long, how many queries and how the cache did."""
    app = TimingMiddleware(_app(engine), meter_provider=provider)
    async with _client(app) as client:
        response = await client.get("/items/1")

    timing = SERVER_TIMING.fullmatch(response.headers["server-timing"])
    assert timing is not None, response.headers["server-timing"]
    assert (timing["queries"], timing["hits"], timing["misses"]) == ("1", "1", "1")
    assert float(timing["app"]) >= float(timing["db"]) > 0


async def test_server_timing_without_database_time_reads_the_same() -> None:
    """Requests with no database time (their counts' part is made once) read as any other."""
    hits = iter(range(1, 4))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        timing = current_timing()
        assert timing is not None
        timing.cache_hits = next(hits) % 2  # 1, 0, 1: the first part is made, then reused
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async with _client(TimingMiddleware(app, metrics=False, log=False)) as client:
        values = [(await client.get("/")).headers["server-timing"] for _ in range(3)]

    found = [SERVER_TIMING.fullmatch(value) for value in values]
    assert all(found), values
    counts = [(m["db"], m["queries"], m["hits"], m["misses"]) for m in found if m]
    assert counts == [("0.00", "0", "1", "0"), ("0.00", "0", "0", "0"), ("0.00", "0", "1", "0")]


async def test_duration_histogram_uses_route_templates_and_semconv_attributes(
    engine: sa.Engine, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """http.server.request.duration: seconds, semconv buckets, the route template, status."""
    app = TimingMiddleware(_app(engine), meter_provider=provider)
    async with _client(app) as client:
        await client.get("/items/1")
        await client.get("/items/2")
        await client.request("BREW", "/items/1")

    points = _points(reader, "http.server.request.duration")
    by_method = {p.attributes["http.request.method"]: p for p in points}
    get = by_method["GET"]
    assert dict(get.attributes) == {
        "http.request.method": "GET",
        "http.route": "/items/{item_id}",
        "http.response.status_code": 200,
        "url.scheme": "http",
    }
    assert get.count == 2
    assert tuple(get.explicit_bounds) == HTTP_DURATION_BUCKETS
    assert by_method["_OTHER"].attributes["http.response.status_code"] == 405


async def test_duration_buckets_are_the_ones_given(
    engine: sa.Engine, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """duration_buckets reach the SDK: a budget's 30 ms threshold gets a boundary."""
    buckets = (0.002, 0.03, 0.1, 1.0)
    app = TimingMiddleware(_app(engine), meter_provider=provider, duration_buckets=buckets)
    async with _client(app) as client:
        await client.get("/items/1")

    (point,) = _points(reader, "http.server.request.duration")
    assert tuple(point.explicit_bounds) == buckets


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ((), "at least one"),
        ((0.1, 0.05), "increasing"),
        ((0.1, 0.1), "increasing"),
        ((0.0, 0.1), "positive"),
        ((float("inf"),), "positive"),
        ((True,), "positive"),
    ],
)
def test_bad_duration_buckets_are_refused(buckets: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TimingMiddleware(_app_stub, duration_buckets=buckets)
    with pytest.raises(ValueError, match=message):
        WSGITimingMiddleware(_wsgi_stub, duration_buckets=buckets)


async def _app_stub(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not called")


def _wsgi_stub(environ: Any, start_response: Any) -> list[bytes]:
    raise AssertionError("not called")


async def test_ten_thousand_random_urls_make_a_bounded_number_of_series(
    engine: sa.Engine, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Random ids and random unknown paths: series per route and status, not per path."""
    app = TimingMiddleware(_app(engine), meter_provider=provider, log=False)
    rng = random.Random(7)
    async with _client(app) as client:
        for _ in range(10_000):
            if rng.random() < 0.5:
                path = f"/items/{rng.randint(1, 10**9)}"
            else:
                path = "/" + "".join(rng.choices(string.ascii_lowercase, k=12))
            await client.get(path)

    points = _points(reader, "http.server.request.duration")
    series = {tuple(sorted(p.attributes.items())) for p in points}
    assert len(series) <= 3  # /items/{item_id} 200, unmatched 404, nothing else
    assert sum(p.count for p in points) == 10_000


async def test_one_json_log_line_per_request_without_secrets(
    engine: sa.Engine, provider: MeterProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """The log line has the fields; Authorization, cookies and query strings never appear."""
    app = TimingMiddleware(_app(engine), meter_provider=provider)
    with caplog.at_level(logging.INFO, logger="perfkit.request"):
        async with _client(app) as client:
            await client.get(
                "/items/1?token=s3cret-query",
                headers={"authorization": "Bearer s3cret-auth", "cookie": "session=s3cret-cookie",
                         "x-request-id": "req-123"},
            )  # fmt: skip

    (line,) = _log_lines(caplog)
    assert line["event"] == "request"
    assert (line["method"], line["route"], line["status"]) == ("GET", "/items/{item_id}", 200)
    assert (line["db_queries"], line["cache_hits"], line["cache_misses"]) == (1, 1, 1)
    assert line["request_id"] == "req-123"
    assert line["duration_ms"] >= line["db_ms"] > 0
    assert "s3cret" not in caplog.text


class _OddRoute:
    path = '/odd/%s/100%/"quoted"/{id}'


async def test_log_lines_of_odd_routes_methods_and_errors_stay_json(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """
    A route with % and quotes, a method outside HTTP's, an error: each series' line
    template is made once, and every line still parses to exactly what happened.
    """

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["route"] = _OddRoute()
        if scope["method"] == "DELETE":
            raise LookupError("gone")
        await send({"type": "http.response.start", "status": 207, "headers": []})
        await send({"type": "http.response.body", "body": b"%d %s"})

    timed = TimingMiddleware(app, metrics=False)
    with caplog.at_level(logging.INFO, logger="perfkit.request"):
        async with _client(timed) as client:
            for method in ("BREW", "BREW", "DELETE"):
                await client.request(method, "/odd/1")

    lines = _log_lines(caplog)
    expected = [("_OTHER", 207, None), ("_OTHER", 207, None), ("DELETE", 500, "LookupError")]
    assert [(line["method"], line["status"], line.get("error")) for line in lines] == expected
    assert {line["route"] for line in lines} == {_OddRoute.path}
    assert lines[0]["request_id"] != lines[1]["request_id"]


def test_the_exchange_starts_as_a_request_timing_does() -> None:
    """The ASGI middleware's exchange sets RequestTiming's fields itself: they must not drift."""
    from perfkit._context import RequestTiming  # noqa: PLC0415
    from perfkit.observability._middleware import _Exchange  # noqa: PLC0415

    async def send(_message: Any) -> None:
        return None

    shared = TimingMiddleware(send, metrics=False)._timing  # type: ignore[arg-type]
    exchange, fresh = _Exchange("an-id", send, shared), RequestTiming("an-id")
    assert {name: getattr(exchange, name) for name in RequestTiming.__slots__} == {
        name: getattr(fresh, name) for name in RequestTiming.__slots__
    }


async def test_request_ids_are_echoed_or_made_up(
    engine: sa.Engine, provider: MeterProvider
) -> None:
    """A valid X-Request-ID comes back as is; a missing or malformed one is replaced."""
    app = TimingMiddleware(_app(engine), meter_provider=provider, log=False)
    async with _client(app) as client:
        kept = await client.get("/items/1", headers={"x-request-id": "abc-123"})
        replaced = await client.get("/items/1", headers={"x-request-id": "bad id\n<script>"})
        made = await client.get("/items/1")

    assert kept.headers["x-request-id"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{24,}", replaced.headers["x-request-id"])
    assert made.headers["x-request-id"] != replaced.headers["x-request-id"]


async def test_exceptions_are_timed_logged_and_counted_as_errors(
    engine: sa.Engine,
    provider: MeterProvider,
    reader: InMemoryMetricReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception inside the app is a 500 in metrics and logs, with error.type, and propagates."""
    app = TimingMiddleware(_app(engine), meter_provider=provider)
    with caplog.at_level(logging.INFO, logger="perfkit.request"):
        async with _client(app) as client:
            response = await client.get("/boom")

    assert response.status_code == 500
    (line,) = _log_lines(caplog)
    assert (line["status"], line["error"], line["route"]) == (500, "RuntimeError", "/boom")
    (point,) = _points(reader, "http.server.request.duration")
    assert point.attributes["error.type"] == "RuntimeError"
    assert "hunter2" not in caplog.text


async def test_streamed_bodies_are_timed_to_the_end(
    engine: sa.Engine, provider: MeterProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Work done while streaming counts in the log line, after the header was sent."""
    app = TimingMiddleware(_app(engine), meter_provider=provider)
    with caplog.at_level(logging.INFO, logger="perfkit.request"):
        async with _client(app) as client:
            response = await client.get("/stream")

    assert response.text == "first,second"
    header = SERVER_TIMING.fullmatch(response.headers["server-timing"])
    assert header is not None
    assert header["queries"] == "0"  # headers went out before the query
    (line,) = _log_lines(caplog)
    assert line["db_queries"] == 1  # the log line saw the whole body


async def test_excluded_paths_get_neither_logs_nor_metrics(
    engine: sa.Engine,
    provider: MeterProvider,
    reader: InMemoryMetricReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """/healthz is excluded from logs and metrics alike (but still answered)."""
    app = TimingMiddleware(_app(engine), meter_provider=provider)
    with caplog.at_level(logging.INFO, logger="perfkit.request"):
        async with _client(app) as client:
            assert (await client.get("/healthz")).text == "ok"

    assert _log_lines(caplog) == []
    assert _points(reader, "http.server.request.duration") == []


async def test_too_many_queries_warns(
    engine: sa.Engine, provider: MeterProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """A request above the query threshold logs a too_many_queries warning (N+1)."""
    app = TimingMiddleware(_app(engine), meter_provider=provider, query_warning=20)
    with caplog.at_level(logging.INFO, logger="perfkit.request"):
        async with _client(app) as client:
            await client.get("/many")

    warnings = [json.loads(r.getMessage()) for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        {"event": "too_many_queries", "route": "/many", "db_queries": 25, "threshold": 20,
         "request_id": warnings[0]["request_id"]},
    ]  # fmt: skip


async def test_db_histogram_and_observable_counters(
    engine: sa.Engine, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Queries land in db.client.operation.duration; cache, breaker, retry counts observed."""
    instrument(provider)
    cache = Cache(MemoryBackend(), namespace="observed")

    @cache.cached()
    def double(n: int) -> int:
        return n * 2

    double(1), double(1)
    breaker = CircuitBreaker(name="observed", fail_max=1, clock=FakeClock())
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: 1)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")

    db_points = _points(reader, "db.client.operation.duration")
    select = next(p for p in db_points if p.attributes["db.operation.name"] == "SELECT")
    assert select.attributes["db.system.name"] == "sqlite"
    cache_points = {
        p.attributes["perfkit.cache.result"]: p.value
        for p in _points(reader, "perfkit.cache.operations")
        if p.attributes["perfkit.cache.namespace"] == "observed"
    }
    assert (cache_points["hit"], cache_points["miss"]) == (1, 1)
    states = {
        p.attributes["perfkit.breaker.name"]: p.value
        for p in _points(reader, "perfkit.breaker.state")
    }
    assert states["observed"] == 2
    rejections = {
        p.attributes["perfkit.breaker.name"]: p.value
        for p in _points(reader, "perfkit.breaker.rejections")
    }
    assert rejections["observed"] == 1
    assert {
        p.attributes["perfkit.retry.outcome"] for p in _points(reader, "perfkit.retry.attempts")
    } == {"retried", "gave_up", "denied"}


async def test_queued_measurements_keep_their_trace_context_for_exemplars(
    engine: sa.Engine,
) -> None:
    """A duration recorded in a batch later still carries its own request's span as exemplar."""
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])  # default: trace-based exemplars
    tracer = TracerProvider().get_tracer("test")
    app = TimingMiddleware(_app(engine), meter_provider=provider, log=False)
    trace_ids = set()
    try:
        async with _client(app) as client:
            for _ in range(3):
                with tracer.start_as_current_span("request") as span:
                    trace_ids.add(span.get_span_context().trace_id)
                    await client.get("/items/1")
        # Collected outside any span: the exemplars must still name the requests' traces.
        (point,) = _points(reader, "http.server.request.duration")
    finally:
        provider.shutdown()

    assert point.count == 3
    assert {exemplar.trace_id for exemplar in point.exemplars} <= trace_ids
    assert point.exemplars


async def test_measurement_queue_stays_bounded_and_loses_nothing(
    engine: sa.Engine, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Without a collection the queue is handed over in batches; a collection gets every one."""
    app = TimingMiddleware(_app(engine), meter_provider=provider, log=False)
    async with _client(app) as client:
        for _ in range(_metrics.BATCH * 3 + 5):
            await client.get("/items/1")
            assert len(_metrics._PENDING) < _metrics.BATCH * _metrics._FIELDS

    (point,) = _points(reader, "http.server.request.duration")
    assert point.count == _metrics.BATCH * 3 + 5
    assert not _metrics._PENDING
    assert _points(reader, _metrics.FLUSH_GAUGE) == []  # the flushing gauge exports nothing


async def test_send_after_the_app_returned_is_refused(provider: MeterProvider) -> None:
    """The wrapped send lets go of the server's once the app is done, and says so if used."""
    kept: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        kept.append(send)

    async with _client(TimingMiddleware(app, meter_provider=provider, log=False)) as client:
        response = await client.get("/")

    assert response.status_code == 204
    with pytest.raises(RuntimeError, match="after the app returned"):
        await kept[0]({"type": "http.response.body", "body": b"late"})


def test_measurements_from_many_threads_all_arrive(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Eight threads queueing at once, batches handed over meanwhile: every one counted once."""
    bind = _metrics.histogram(provider.get_meter("threads"), "threads.duration", "test", (1.0,))
    recorders = [bind({"thread": n}) for n in range(8)]
    start = threading.Barrier(8)

    def work(n: int) -> None:
        start.wait()
        for _ in range(2_000):
            recorders[n](0.5)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    run_switching_often(threads)

    counts = {p.attributes["thread"]: p.count for p in _points(reader, "threads.duration")}
    assert counts == dict.fromkeys(range(8), 2_000)


async def test_async_engines_report_into_the_request(
    tmp_path: Path, provider: MeterProvider
) -> None:
    """instrument_engine works on an AsyncEngine; its queries count in the request."""
    engine = db.create_async_engine(f"sqlite:///{tmp_path / 'aobs.sqlite3'}")
    instrument_engine(engine, meter_provider=provider)

    async def endpoint(request: Request) -> JSONResponse:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
            await conn.exec_driver_sql("SELECT 2")
        timing = current_timing()
        assert timing is not None
        return JSONResponse({"queries": timing.db_queries})

    app = TimingMiddleware(Starlette(routes=[Route("/q", endpoint)]), meter_provider=provider)
    try:
        async with _client(app) as client:
            response = await client.get("/q")
    finally:
        await engine.dispose()

    assert response.json() == {"queries": 2}


# -- WSGI ----------------------------------------------------------------------------------


def test_wsgi_middleware_on_a_plain_wsgi_app(
    engine: sa.Engine,
    provider: MeterProvider,
    reader: InMemoryMetricReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Header, log line and metric on a bare WSGI app, with a streamed body and a crash."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        path = environ["PATH_INFO"]
        if path == "/crash":
            raise ValueError("nope")
        start_response("200 OK", [("content-type", "text/plain")])

        def body() -> Iterator[bytes]:
            yield b"a"
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            yield b"b"

        return body()

    def route(environ: dict[str, Any]) -> str | None:
        return "/things/{id}" if environ["PATH_INFO"].startswith("/things/") else None

    wrapped = WSGITimingMiddleware(app, route=route, meter_provider=provider)
    transport = httpx.WSGITransport(app=wrapped, raise_app_exceptions=False)
    with caplog.at_level(logging.INFO, logger="perfkit.request"):
        with httpx.Client(transport=transport, base_url="http://wsgi") as client:
            response = client.get("/things/42?secret=x", headers={"x-request-id": "w-1"})
        with (
            pytest.raises(ValueError, match="nope"),
            httpx.Client(
                transport=httpx.WSGITransport(app=wrapped), base_url="http://wsgi"
            ) as client,
        ):
            client.get("/crash")

    assert response.text == "ab"
    assert response.headers["x-request-id"] == "w-1"
    assert SERVER_TIMING.fullmatch(response.headers["server-timing"])
    ok, crash = _log_lines(caplog)
    assert (ok["route"], ok["status"], ok["db_queries"]) == ("/things/{id}", 200, 1)
    assert (crash["error"], crash["status"]) == ("ValueError", 500)
    assert "secret" not in caplog.text
    routes = {
        p.attributes.get("http.route") for p in _points(reader, "http.server.request.duration")
    }
    assert routes == {"/things/{id}", None}
