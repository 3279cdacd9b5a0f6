"""
perfkit.load: budgets validated, schedules, histograms merged across processes, the
coordinated-omission correction, the validity gate, and a real run against a server
that stalls.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from perfkit.load import (
    BudgetError,
    HTTPClient,
    Recorder,
    Request,
    RouteStats,
    RunResult,
    Scenario,
    Step,
    load_budgets,
    markdown,
    passed,
    report,
    run,
    run_in_processes,
    schedule,
)

ROOT = Path(__file__).resolve().parents[1]

BUDGETS: dict[str, Any] = {
    "version": 1,
    "defaults": {"p95_ms": 100, "max_error_rate": 0.01, "rate": 100},
    "routes": [
        {"method": "GET", "route": "/bills/{bill_id}", "p50_ms": 2, "p95_ms": 10, "p99_ms": 25},
        {"method": "POST", "route": "/bills/{bill_id}/votes", "max_error_rate": 0.0},
    ],
}


# -- budgets -----------------------------------------------------------------------


def test_budgets_take_their_defaults() -> None:
    budgets = load_budgets(BUDGETS)
    bill = budgets.get("GET", "/bills/{bill_id}")
    vote = budgets.get("POST", "/bills/{bill_id}/votes")
    assert bill is not None
    assert vote is not None
    assert (bill.p50_ms, bill.p95_ms, bill.p99_ms, bill.max_error_rate) == (2, 10, 25, 0.01)
    assert (vote.p95_ms, vote.max_error_rate, vote.rate) == (100, 0.0, 100)
    assert budgets.get("GET", "/nowhere") is None
    assert budgets.thresholds_seconds() == [0.002, 0.01, 0.025, 0.1]


@pytest.mark.parametrize(("change", "message"), [
    ({"version": 2}, "version: must be 1"),
    ({"routes": []}, "routes: must be a non-empty list"),
    ({"extra": 1}, "extra: unknown field"),
    ({"defaults": {"p95_ms": "fast"}}, 'defaults.p95_ms: must be a number, not \'fast\''),
    ({"defaults": {"p95_ms": -1}}, "defaults.p95_ms: must be a positive number of milliseconds"),
    ({"defaults": {"max_error_rate": 2}}, "max_error_rate: must be a fraction from 0 to 1"),
    ({"routes": [{"method": "GRAB", "route": "/x", "p95_ms": 1}]}, "routes[0].method: must be"),
    ({"routes": [{"method": "GET", "route": "x", "p95_ms": 1}]}, "routes[0].route: must be"),
    ({"routes": [{"method": "GET", "route": "/x", "p50_ms": 9, "p95_ms": 1}]},
     "routes[0]: p50_ms <= p95_ms <= p99_ms"),
    ({"routes": [{"method": "GET", "route": "/x", "p95_ms": 1}] * 2}, "listed twice"),
    ({"defaults": {}, "routes": [{"method": "GET", "route": "/x"}]}, "no latency budget"),
    ({"defaults": {"p95_ms": 5}, "routes": [{"method": "GET", "route": "/x"}]},
     "routes[0].max_error_rate: missing"),
])  # fmt: skip
def test_bad_budgets_say_what_and_where(change: dict[str, Any], message: str) -> None:
    with pytest.raises(BudgetError) as caught:
        load_budgets({**BUDGETS, **change})
    assert message in str(caught.value)


def test_the_committed_budgets_file_is_valid() -> None:
    """budgets.json at the repository root loads."""
    budgets = load_budgets(ROOT / "budgets.json")
    assert all(budget.route.startswith("/") for budget in budgets)


def test_a_missing_or_broken_file_is_a_budget_error(tmp_path: Path) -> None:
    with pytest.raises(BudgetError, match="no such file"):
        load_budgets(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(BudgetError, match="not JSON"):
        load_budgets(broken)


# -- schedules -------------------------------------------------------------------


def test_constant_and_poisson_schedules() -> None:
    """Constant: evenly spaced; Poisson: the rate on average, the same for the same seed."""
    assert schedule(4, 1) == [0, 0.25, 0.5, 0.75]
    times = schedule(1000, 10, arrivals="poisson", seed=7)
    assert times == schedule(1000, 10, arrivals="poisson", seed=7)
    assert times != schedule(1000, 10, arrivals="poisson", seed=8)
    assert 9_700 < len(times) < 10_300
    assert times == sorted(times)
    assert all(0 <= t < 10 for t in times)
    with pytest.raises(ValueError, match="rate"):
        schedule(0, 1)
    with pytest.raises(ValueError, match="arrivals"):
        schedule(1, 1, arrivals="bursty")  # type: ignore[arg-type]


# -- histograms -----------------------------------------------------------------------


def _worker_stats(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    stats = RouteStats()
    for _ in range(10_000):
        stats.record(rng.expovariate(100), 200 if rng.random() > 0.01 else 503)
    return stats.encode()


def test_histograms_merge_across_processes_as_if_recorded_in_one() -> None:
    """Four processes' encoded histograms merge into what one would have recorded."""
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        encoded = pool.map(_worker_stats, range(4))
    merged = RouteStats()
    for data in json.loads(json.dumps(encoded)):  # through JSON, as a report carries them
        merged.merge(RouteStats.decode(data))
    alone = RouteStats()
    for seed in range(4):
        alone.merge(RouteStats.decode(_worker_stats(seed)))
    assert merged.count == 40_000
    assert merged.percentiles_ms() == alone.percentiles_ms()
    assert merged.errors == alone.errors == sum(s["statuses"].get("503", 0) for s in encoded)


# -- coordinated omission and the validity gate -----------------------------------------


def _stalled_run(*, corrected: bool) -> RouteStats:
    """100 req/s for 10 s against a server answering in 1 ms, except that it stalls from
    t=5 s to t=6 s: every request meant to start in the stall is answered at t=6 s."""
    recorder = Recorder(rate=100, duration=10, warmup=0)
    for i in range(1000):
        intended = i / 100
        ended = 6.0 + 0.001 if 5.0 <= intended < 6.0 else intended + 0.001
        # A closed-loop tool would have sent these after the stall: its "intended" is
        # when it finally sent, so it sees 1 ms.
        start = intended if corrected else (6.0 if 5.0 <= intended < 6.0 else intended)
        recorder.answered("GET /x", intended, start, start, ended, 200)
    return recorder.finish(max_lag_ms=10_000).routes["GET /x"]


def test_latency_counts_from_the_intended_start() -> None:
    """A 1 s stall in 10 s is 10 % of the requests: p95 must show it, as open models do."""
    corrected = _stalled_run(corrected=True).percentiles_ms()
    naive = _stalled_run(corrected=False).percentiles_ms()
    assert corrected[95.0] > 450  # half a second on average in the stall
    assert corrected[100.0] == pytest.approx(1000, rel=0.01)
    assert naive[95.0] < 2  # what the closed-loop view reports: the stall hidden
    assert corrected[50.0] == pytest.approx(1, rel=0.01)


def test_a_run_that_fell_behind_or_dropped_or_missed_the_rate_is_invalid() -> None:
    recorder = Recorder(rate=100, duration=1, warmup=0)
    for i in range(100):
        recorder.scheduled(i / 100)
        if i < 50:
            recorder.answered("GET /x", i / 100, i / 100, i / 100 + 0.050, i / 100 + 0.06, 200)
        else:
            recorder.dropped(i / 100)
    result = recorder.finish(max_lag_ms=10)
    assert not result.valid
    problems = " ".join(result.problems)
    assert "50 requests dropped" in problems
    assert "fell behind its schedule" in problems
    assert "rate not reached" in problems


def test_warm_up_is_left_out() -> None:
    recorder = Recorder(rate=10, duration=1, warmup=1)
    for i in range(20):
        recorder.scheduled(i / 10)
        recorder.answered("GET /x", i / 10, i / 10, i / 10, i / 10 + 0.001, 200)
    result = recorder.finish()
    assert (result.scheduled, result.sent, result.routes["GET /x"].count) == (10, 10, 10)
    assert result.valid


def test_reports_judge_each_route_against_its_budget() -> None:
    recorder = Recorder(rate=100, duration=1, warmup=0)
    for i in range(100):
        recorder.scheduled(i / 100)
        fast = 0.001 if i % 10 else 0.030  # 10 % at 30 ms: p95 breaks a 10 ms budget
        recorder.answered("GET /bills/{bill_id}", i / 100, i / 100, i / 100, i / 100 + fast, 200)
    document = report(recorder.finish(), load_budgets(BUDGETS))
    route = document["routes"]["GET /bills/{bill_id}"]
    assert route["count"] == 100
    assert route["budget"]["p50_ms"]["ok"]
    assert not route["budget"]["p95_ms"]["ok"]
    assert not passed(document)
    assert "BROKEN: p95_ms" in markdown(document)


# -- a real run ---------------------------------------------------------------------------


async def _stalling_server() -> tuple[asyncio.Server, list[float]]:
    """A minimal HTTP/1.1 server answering 200 at once, except during one 0.4 s stall."""
    stall: list[float] = []  # [start, end] in loop time, set by the test
    loop = asyncio.get_running_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                if stall and stall[0] <= loop.time() < stall[1]:
                    await asyncio.sleep(stall[1] - loop.time())
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, stall


@pytest.mark.anyio
async def test_a_real_run_shows_a_server_stall_in_full() -> None:
    """200 req/s for 1.5 s with a 0.4 s stall in the middle, through the generator's client:
    about a quarter of the requests wait for the stall, so p90 is hundreds of ms; nothing
    dropped."""
    server, stall = await _stalling_server()
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    stall += [loop.time() + 0.6, loop.time() + 1.0]
    scenario = Scenario([Step(1, lambda i, rng: Request("GET /x", "GET", "/x"))])
    async with HTTPClient(f"http://127.0.0.1:{port}") as client:

        async def send(request: Request) -> int:
            return await client.request(request.method, request.path)

        # The lag gate is tested above; here a loaded CI machine must not fail the run.
        result = await run(send, scenario, rate=200, duration=1.5, max_lag_ms=1000)
    server.close()
    await server.wait_closed()
    stats = result.routes["GET /x"]
    assert result.valid, result.problems
    assert stats.count == 300
    assert stats.errors == 0
    assert stats.percentiles_ms()[90.0] > 100  # the stall is measured, not omitted
    assert stats.percentiles_ms()[100.0] > 300


# -- the command line -------------------------------------------------------------------


@contextmanager
def _serving(body: bytes) -> Iterator[tuple[str, list[str]]]:
    """A threaded HTTP/1.1 server answering every GET 200 with *body*; the paths it saw."""
    import http.server  # noqa: PLC0415
    import threading  # noqa: PLC0415

    paths: list[str] = []

    class Answer(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            paths.append(self.path)
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", paths
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hello_server() -> Iterator[str]:
    with _serving(b"hi") as (url, _paths):
        yield url


def _budgets_file(tmp_path: Path, p95_ms: float) -> Path:
    path = tmp_path / "budgets.json"
    path.write_text(json.dumps({
        "version": 1,
        "defaults": {"max_error_rate": 0, "rate": 50},
        "routes": [{"method": "GET", "route": "/hello", "p95_ms": p95_ms}],
    }), encoding="utf-8")  # fmt: skip
    return path


def test_the_command_line_writes_reports_and_exits_with_the_verdict(
    hello_server: str, tmp_path: Path
) -> None:
    """perfkit-load: 0 when the budget holds (and the run is valid), 1 when it breaks,
    2 for a bad budgets file; the JSON and Markdown reports are written."""
    from perfkit.load._cli import main  # noqa: PLC0415

    common = [hello_server, "--scenario", "load_scenarios:hello", "--rate", "50",
              "--duration", "0.6", "--warmup", "0.2", "--max-lag-ms", "1000",
              "--arrivals", "constant"]  # fmt: skip
    out = tmp_path / "report.json"
    held = main([*common, "--budgets", str(_budgets_file(tmp_path, 5_000)), "--json", str(out),
                 "--markdown", str(tmp_path / "report.md")])  # fmt: skip
    document = json.loads(out.read_text(encoding="utf-8"))
    assert held == 0, document
    assert document["routes"]["GET /hello"]["count"] == 30
    assert document["routes"]["GET /hello"]["budget"]["p95_ms"]["ok"]
    assert "| GET /hello | 30 |" in (tmp_path / "report.md").read_text(encoding="utf-8")
    assert main([*common, "--budgets", str(_budgets_file(tmp_path, 0.001))]) == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "routes": []}', encoding="utf-8")
    assert main([*common, "--budgets", str(bad)]) == 2


# -- step mode ------------------------------------------------------------------------------


def test_rates_are_geometric() -> None:
    from perfkit.load import rates  # noqa: PLC0415

    assert rates(100, 1000, 2) == [100, 200, 400, 800]
    assert rates(100, 400, 2) == [100, 200, 400]
    with pytest.raises(ValueError, match="factor"):
        rates(100, 1000, 1)


@pytest.mark.anyio
async def test_step_mode_finds_the_rate_a_one_at_a_time_server_can_hold() -> None:
    """A server serving one request at a time in ~1 ms holds 100-400 req/s and drowns at
    1,600: the capacity under a 50 ms p95 budget is 400."""
    from perfkit.load import capacity_markdown, find_capacity  # noqa: PLC0415

    one_at_a_time = asyncio.Lock()

    async def send(request: Request) -> int:
        async with one_at_a_time:
            await asyncio.sleep(0.001)
        return 200

    budgets = load_budgets({
        "version": 1,
        "defaults": {"max_error_rate": 0, "rate": 100},
        "routes": [{"method": "GET", "route": "/x", "p95_ms": 50}],
    })  # fmt: skip
    scenario = Scenario([Step(1, lambda i, rng: Request("GET /x", "GET", "/x"))])
    found = await find_capacity(
        send, scenario, budgets=budgets, rates=[100, 400, 1600], duration=1.0, max_lag_ms=1000
    )
    assert (found.capacity, found.broke_at) == (400, 1600), capacity_markdown(found)
    assert [rate for rate, _ in found.steps] == [100, 400, 1600]
    assert "capacity: 400 req/s; broke at 1,600 req/s" in capacity_markdown(found)


def test_the_command_line_step_mode_reports_the_capacity(hello_server: str, tmp_path: Path) -> None:
    """--step runs rate after rate and writes the capacity search."""
    from perfkit.load._cli import main  # noqa: PLC0415

    out = tmp_path / "capacity.json"
    code = main([hello_server, "--scenario", "load_scenarios:hello", "--step", "20:40:2",
                 "--duration", "0.5", "--warmup", "0", "--max-lag-ms", "1000",
                 "--budgets", str(_budgets_file(tmp_path, 5_000)), "--json", str(out)])  # fmt: skip
    document = json.loads(out.read_text(encoding="utf-8"))
    assert code == 0
    assert (document["capacity"], document["broke_at"]) == (40, None)
    assert [step["rate"] for step in document["steps"]] == [20, 40]
    with pytest.raises(SystemExit):
        main([hello_server, "--scenario", "load_scenarios:hello", "--step", "20:40:2"])


# -- the generator's HTTP client --------------------------------------------------------------


async def _scripted_server(answers: list[bytes]) -> tuple[asyncio.Server, list[bytes]]:
    """Answers each request with the next of *answers*; records what it received."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: (\d+)", head)
                body = await reader.readexactly(int(length.group(1))) if length else b""
                received.append(head + body)
                answer = answers.pop(0)
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), received


@pytest.mark.anyio
async def test_the_client_reads_every_kind_of_answer_and_keeps_connections_alive() -> None:
    """Content-Length, chunked, 204, HEAD, a JSON body sent; one connection reused until the
    server says close."""
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",  # HEAD: no body follows
        b"HTTP/1.1 503 Unavailable\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
    ]
    server, received = await _scripted_server(answers)
    port = server.sockets[0].getsockname()[1]
    async with HTTPClient(f"http://127.0.0.1:{port}") as client:
        statuses = [
            await client.request("GET", "/a"),
            await client.request("POST", "/b", json={"n": 1}),
            await client.request("DELETE", "/c"),
            await client.request("HEAD", "/d"),
            await client.request("GET", "/e"),
        ]
    server.close()
    await server.wait_closed()
    assert statuses == [200, 201, 204, 200, 503]
    assert received[1].endswith(b'\r\n\r\n{"n":1}')
    assert b"content-type: application/json" in received[1].lower()
    assert all(request.startswith(b"%s /" % method.encode()) for request, method in
               zip(received, ["GET", "POST", "DELETE", "HEAD", "GET"], strict=True))  # fmt: skip


@pytest.mark.anyio
async def test_the_client_raises_when_the_server_hangs_up_or_is_not_there() -> None:
    server, _ = await _scripted_server([b"HTTP/1.1 200 OK\r\nContent-Len"])  # cut short
    port = server.sockets[0].getsockname()[1]
    async with HTTPClient(f"http://127.0.0.1:{port}", timeout=2) as client:
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await client.request("GET", "/")
    server.close()
    await server.wait_closed()
    with pytest.raises(ValueError, match="http://"):
        HTTPClient("https://example.org")


async def _hanging_up_server(answered_per_connection: int) -> tuple[asyncio.Server, list[int]]:
    """Answers *answered_per_connection* requests per connection, then reads the next one
    and closes without a word (a server closing a kept-alive connection as a request
    arrives); keeps how many requests each connection carried."""
    carried: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        carried.append(0)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: (\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                carried[-1] += 1
                if carried[-1] > answered_per_connection:
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), carried


@pytest.mark.anyio
async def test_a_get_on_a_connection_closed_as_it_went_out_is_sent_again() -> None:
    """
    The server closes the kept-alive connection as the second request arrives: a GET goes
    again on a new connection and succeeds; a POST fails (the server may have acted on it).
    """
    server, carried = await _hanging_up_server(answered_per_connection=1)
    port = server.sockets[0].getsockname()[1]
    async with HTTPClient(f"http://127.0.0.1:{port}", timeout=5) as client:
        assert await client.request("GET", "/one") == 200
        assert await client.request("GET", "/two") == 200  # retried on a new connection
        with pytest.raises(ConnectionError, match="kept-alive"):
            await client.request("POST", "/three", json={})
    server.close()
    await server.wait_closed()
    assert carried == [2, 2]  # /one + /two refused; /two + /three refused


@pytest.mark.anyio
async def test_connections_closed_by_the_server_or_idle_too_long_are_not_reused() -> None:
    server, carried = await _hanging_up_server(answered_per_connection=100)
    port = server.sockets[0].getsockname()[1]
    async with HTTPClient(f"http://127.0.0.1:{port}", idle_timeout=0.5) as client:
        assert await client.request("POST", "/a", json={}) == 200
        await asyncio.sleep(0.6)  # idle past idle_timeout: a new connection
        assert await client.request("POST", "/b", json={}) == 200
        assert await client.request("POST", "/c", json={}) == 200  # reused at once
    server.close()
    await server.wait_closed()
    assert carried == [1, 2]


# -- several generator processes ----------------------------------------------------------


@pytest.fixture
def recording_server() -> Iterator[tuple[str, list[str]]]:
    """Answers 200 to every GET and keeps each path it was sent."""
    with _serving(b"ok") as served:
        yield served


NUMBERED = Scenario([Step(1, lambda i, rng: Request("GET /n", "GET", f"/n?i={i}"))])


def test_several_processes_share_the_rate_and_merge_into_one_run(recording_server: Any) -> None:
    """
    Three processes at 150 req/s for 1 s: 150 requests in one merged result, each request
    number sent once (fresh keys stay fresh across processes), the run valid.
    """
    url, paths = recording_server
    result = run_in_processes(url, NUMBERED, processes=3, rate=150, duration=1.0, max_lag_ms=1000)
    assert result.valid, result.problems
    assert result.rate == 150
    assert (result.scheduled, result.sent, result.routes["GET /n"].count) == (150, 150, 150)
    assert sorted(int(path.split("=")[1]) for path in paths) == list(range(150))


def test_a_failing_process_is_an_error_with_its_traceback() -> None:
    with pytest.raises(RuntimeError, match=r"(?s)process 0 failed:.*base_url must be http"):
        run_in_processes("ftp://x", NUMBERED, processes=2, rate=10, duration=0.2)
    with pytest.raises(ValueError, match="at least 1"):
        run_in_processes("http://127.0.0.1:1", NUMBERED, processes=0, rate=10, duration=0.2)


def test_run_results_travel_between_processes_and_merge() -> None:
    """encode/decode round-trips; merge adds counts, rates and histograms, keeps problems."""
    one = Recorder(rate=10, duration=1, warmup=0)
    two = Recorder(rate=20, duration=1, warmup=0)
    for i in range(10):
        one.scheduled(0.1 * i)
        one.answered("GET /a", 0.1 * i, 0.0, 0.001, 0.010, 200)
    for i in range(25):
        two.scheduled(0.04 * i)
    for i in range(20):  # five never sent: that process missed its rate
        two.answered("GET /a", 0.05 * i, 0.0, 0.0, 0.100, 503 if i < 2 else 200)
    first, second = one.finish(), two.finish()
    merged = RunResult.decode(json.loads(json.dumps(first.encode())))
    merged.merge(RunResult.decode(json.loads(json.dumps(second.encode()))), name="process 1")
    stats = merged.routes["GET /a"]
    assert (merged.rate, merged.scheduled, merged.sent, stats.count, stats.errors) == (
        30,
        35,
        30,
        30,
        2,
    )
    assert stats.statuses == {"200": 28, "503": 2}
    assert first.valid
    assert merged.problems == ["process 1: rate not reached: 20 of 20 req/s"]
    assert not merged.valid
    assert 99 <= stats.percentiles_ms([100.0])[100.0] <= 101


def test_the_command_line_runs_several_processes(recording_server: Any, tmp_path: Path) -> None:
    from perfkit.load._cli import main  # noqa: PLC0415

    url, paths = recording_server
    out = tmp_path / "report.json"
    code = main([url, "--scenario", "test_load:NUMBERED", "--rate", "60", "--duration", "0.5",
                 "--warmup", "0", "--max-lag-ms", "1000", "--processes", "2",
                 "--arrivals", "constant", "--json", str(out)])  # fmt: skip
    document = json.loads(out.read_text(encoding="utf-8"))
    assert code == 0
    assert document["routes"]["GET /n"]["count"] == 30
    assert len(set(paths)) == 30


# -- the percentile plot -----------------------------------------------------------------


def test_the_percentile_plot_is_a_png_with_a_curve_per_route(tmp_path: Path) -> None:
    from perfkit.load import percentile_plot  # noqa: PLC0415

    rng = random.Random(3)
    fast, slow = RouteStats(), RouteStats()
    for _ in range(5_000):
        fast.record(rng.lognormvariate(-6, 0.5), 200)
        slow.record(rng.lognormvariate(-3, 1.0), 200)
    out = percentile_plot(
        {
            "GET /bills/{bill_id}": fast,
            "POST /bills/{bill_id}/votes": slow,
            "GET /none": RouteStats(),
        },
        tmp_path / "plots" / "latency.png",
        budgets=load_budgets(BUDGETS),
    )
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (990, 605)


def test_the_command_line_writes_the_plot(hello_server: str, tmp_path: Path) -> None:
    from perfkit.load._cli import main  # noqa: PLC0415

    png = tmp_path / "latency.png"
    code = main([hello_server, "--scenario", "load_scenarios:hello", "--rate", "40",
                 "--duration", "0.5", "--warmup", "0", "--max-lag-ms", "1000",
                 "--budgets", str(_budgets_file(tmp_path, 5_000)), "--png", str(png)])  # fmt: skip
    assert code == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    steps = tmp_path / "steps.png"
    budgets = str(_budgets_file(tmp_path, 5_000))
    code = main([hello_server, "--scenario", "load_scenarios:hello", "--step", "20:40:2",
                 "--duration", "0.5", "--warmup", "0", "--max-lag-ms", "1000",
                 "--budgets", budgets, "--png", str(steps)])  # fmt: skip
    assert code == 0
    assert steps.read_bytes().startswith(b"\x89PNG")


def test_a_process_that_dies_is_an_error_and_stops_the_others(recording_server: Any) -> None:
    """One process exits without a word: RuntimeError naming it, and no process left sending."""
    import multiprocessing  # noqa: PLC0415
    import os  # noqa: PLC0415

    url, _paths = recording_server

    def die_in_process_0(i: int, rng: random.Random) -> Request:
        if i % 2 == 0:  # process 0 of 2 numbers its requests 0, 2, 4...
            os._exit(3)
        return Request("GET /n", "GET", f"/n?i={i}")

    with pytest.raises(RuntimeError, match=r"process 0 sent no result \(exit code 3\)"):
        run_in_processes(
            url, Scenario([Step(1, die_in_process_0)]), processes=2, rate=20, duration=1.0
        )
    assert not multiprocessing.active_children()


@pytest.mark.anyio
async def test_capacity_steps_number_their_requests_past_the_last_step() -> None:
    """A step search never hands a scenario the same request number twice."""
    seen: list[int] = []

    def numbered(i: int, rng: random.Random) -> Request:
        seen.append(i)
        return Request("GET /n", "GET", "/n")

    async def send(request: Request) -> int:
        return 200

    budgets = load_budgets({
        "version": 1, "defaults": {"p95_ms": 1000, "max_error_rate": 0.01, "rate": 1},
        "routes": [{"method": "GET", "route": "/n"}],
    })  # fmt: skip
    from perfkit.load import find_capacity  # noqa: PLC0415

    found = await find_capacity(send, Scenario([Step(1, numbered)]), budgets=budgets,
                                rates=[50, 100], duration=0.3, max_lag_ms=1000)  # fmt: skip
    assert found.capacity == 100
    assert len(seen) == len(set(seen)) == 15 + 30


@pytest.mark.anyio
async def test_a_process_that_starts_after_the_run_began_says_so() -> None:
    import time  # noqa: PLC0415

    async def send(request: Request) -> int:
        return 200

    result = await run(send, NUMBERED, rate=20, duration=0.2, begin=time.time() - 0.5,
                       process=1, processes=2)  # fmt: skip
    assert any("started 5" in problem for problem in result.problems), result.problems
