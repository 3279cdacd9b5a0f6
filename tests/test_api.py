"""
The example bill/vote API through its ASGI app, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bill_api import create_app
from perfkit import CircuitBreaker
from perfkit.reference import Stores, Vote, open_stores, seed
from perfkit.testing import FakeClock


@pytest.fixture
def stores(engine: Engine) -> Iterator[Stores]:
    seed(engine, users=20, bills=30, votes=100, random_seed=1)
    with open_stores(engine) as opened:
        yield opened


pytestmark = pytest.mark.anyio

Client = httpx.AsyncClient


def _client(stores: Stores) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(stores=stores), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def client(stores: Stores) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(stores) as test_client:
        yield test_client


def _votes(stores: Stores) -> int:
    with stores.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(Vote)).scalar_one())


def _fresh_pair(stores: Stores) -> tuple[int, int]:
    """A (bill, user) pair with no vote yet."""
    with stores.engine.connect() as conn:
        voted = {(b, u) for b, u in conn.execute(sa.select(Vote.bill_id, Vote.user_id))}
    return next((b, u) for b in range(1, 31) for u in range(1, 21) if (b, u) not in voted)


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert status == response.status_code, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert code == body["error"]["code"], body
    assert body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


# -- happy paths ---------------------------------------------------------------


async def test_health(client: Client) -> None:
    """/healthz: the process answers; /readyz: the database and the cache answer."""
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["checks"]["database"]["status"] == "ok"


async def test_users(client: Client) -> None:
    """A user is created and then found by id, username and email."""
    created = await client.post("/users", json={"username": "Ada", "email": "ada@example.org"})

    assert created.status_code == 201
    user = created.json()
    assert user["username"] == "ada"
    assert user == (await client.get(f"/users/{user['id']}")).json()
    assert user == (await client.get("/users", params={"username": "ADA"})).json()
    assert user == (await client.get("/users", params={"email": "ada@example.org"})).json()


async def test_bills_list_has_pagination_metadata(client: Client) -> None:
    """GET /bills pages newest first and reports total, pages and neighbours."""
    body = (await client.get("/bills", params={"page": 2, "limit": 7})).json()

    assert {
        key: body[key] for key in ("page", "limit", "total", "pages", "has_next", "has_prev")
    } == {"page": 2, "limit": 7, "total": 30, "pages": 5, "has_next": True, "has_prev": True}
    assert [bill["id"] for bill in body["items"]] == [23, 22, 21, 20, 19, 18, 17]


async def test_bill_lifecycle(client: Client) -> None:
    """A bill is created, read, patched and listed first."""
    created = await client.post(
        "/bills", json={"title": "Clean Air Act", "sponsor_id": 3, "summary": "Air."}
    )
    assert created.status_code == 201
    bill = created.json()

    patched = await client.patch(f"/bills/{bill['id']}", json={"status": "introduced"})

    assert patched.status_code == 200
    assert (patched.json()["status"], patched.json()["title"]) == ("introduced", "Clean Air Act")
    assert patched.json() == (await client.get(f"/bills/{bill['id']}")).json()
    assert bill["id"] == (await client.get("/bills", params={"limit": 1})).json()["items"][0]["id"]


async def test_votes(client: Client, stores: Stores) -> None:
    """A cast vote shows in the bill's votes, the user's votes and the counts."""
    bill_id, user_id = _fresh_pair(stores)
    before = (await client.get(f"/bills/{bill_id}/votes/counts")).json()

    cast = await client.post(f"/bills/{bill_id}/votes", json={"user_id": user_id, "choice": "no"})

    assert cast.status_code == 201
    vote = cast.json()
    after = (await client.get(f"/bills/{bill_id}/votes/counts")).json()
    assert before["no"] + 1 == after["no"]
    assert before["total"] + 1 == after["total"]
    bill_votes = (await client.get(f"/bills/{bill_id}/votes", params={"limit": 100})).json()
    user_votes = (await client.get(f"/users/{user_id}/votes", params={"limit": 100})).json()
    assert vote in bill_votes["items"]
    assert vote in user_votes["items"]
    assert after["total"] == bill_votes["total"]


# -- bad input: a clear 4xx JSON body, never a 500 -------------------------------

BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("GET", "/users/abc", {}, 422, "validation_error"),
    ("GET", "/users/-1", {}, 422, "validation_error"),
    ("GET", "/users/0", {}, 422, "validation_error"),
    ("GET", "/users/1.5", {}, 422, "validation_error"),
    ("GET", "/users/99999999999999999999999", {}, 422, "validation_error"),
    ("GET", "/users/9999", {}, 404, "not_found"),
    ("GET", "/users", {}, 422, "invalid_input"),
    ("GET", "/users?username=a&email=a@example.org", {}, 422, "invalid_input"),
    ("GET", "/users?username=no", {}, 422, "invalid_input"),
    ("GET", "/users?username=nobody_here", {}, 404, "not_found"),
    ("GET", "/users?email=not-an-email", {}, 422, "invalid_input"),
    ("GET", "/bills?page=0", {}, 422, "validation_error"),
    ("GET", "/bills?page=-1", {}, 422, "validation_error"),
    ("GET", "/bills?page=abc", {}, 422, "validation_error"),
    ("GET", "/bills?page=99999999999999999999", {}, 422, "validation_error"),
    ("GET", "/bills?limit=0", {}, 422, "validation_error"),
    ("GET", "/bills?limit=1000000", {}, 422, "validation_error"),
    ("GET", "/bills?status=vetoed", {}, 422, "invalid_input"),
    ("GET", "/bills/abc", {}, 422, "validation_error"),
    ("GET", "/bills/9999", {}, 404, "not_found"),
    ("GET", "/bills/9999/votes", {}, 404, "not_found"),
    ("GET", "/bills/1/votes?page=0", {}, 422, "validation_error"),
    ("GET", "/bills/1/votes?limit=1000000", {}, 422, "validation_error"),
    ("GET", "/bills/9999/votes/counts", {}, 404, "not_found"),
    ("GET", "/bills/-5/votes/counts", {}, 422, "validation_error"),
    ("GET", "/users/9999/votes", {}, 404, "not_found"),
    ("GET", "/users/1/votes?limit=abc", {}, 422, "validation_error"),
    ("GET", "/nowhere", {}, 404, "not_found"),
    ("DELETE", "/bills/1", {}, 405, "method_not_allowed"),
    ("POST", "/users", {"content": b"{bad json", "headers": {"content-type": "application/json"}},
     400, "malformed_json"),
    ("POST", "/users", {"content": b"{bad json"}, 415, "unsupported_media_type"),
    ("POST", "/users", {"json": {"username": "ada"}}, 422, "validation_error"),
    ("POST", "/users", {"json": {"username": 5, "email": "x@example.org"}}, 422,
     "validation_error"),
    ("POST", "/users", {"json": {"username": "ada", "email": "a@example.org", "admin": True}},
     422, "validation_error"),
    ("POST", "/users", {"json": ["ada", "ada@example.org"]}, 422, "validation_error"),
    ("POST", "/users", {"json": {"username": "user00001", "email": "new@example.org"}}, 409,
     "conflict"),
    ("POST", "/users", {"json": {"username": "fresh", "email": "user00002@example.org"}}, 409,
     "conflict"),
    ("POST", "/users", {"content": b'{"username": "ada", "email": "\\ud800@example.org"}',
                        "headers": {"content-type": "application/json"}}, 422, "invalid_input"),
    ("POST", "/users", {"content": b"username=ada", "headers": {"content-type": "text/plain"}},
     415, "unsupported_media_type"),
    ("POST", "/bills", {"json": {"title": "x" * 1_000_000, "sponsor_id": 1}}, 413,
     "payload_too_large"),
    ("POST", "/bills", {"json": {"title": "x" * 201, "sponsor_id": 1}}, 422, "invalid_input"),
    ("POST", "/bills", {"json": {"title": "NUL\u0000", "sponsor_id": 1}}, 422, "invalid_input"),
    ("POST", "/bills", {"json": {"title": "Act", "sponsor_id": 9999}}, 404, "not_found"),
    ("POST", "/bills", {"json": {"title": "Act", "sponsor_id": "1"}}, 422, "validation_error"),
    ("POST", "/bills", {"json": {"title": "Act", "sponsor_id": 1, "status": "enacted"}}, 422,
     "invalid_input"),
    ("POST", "/bills", {"json": {"title": "Act", "sponsor_id": 2**70}}, 422, "invalid_input"),
    ("PATCH", "/bills/9999", {"json": {"title": "Ghost Act"}}, 404, "not_found"),
    ("PATCH", "/bills/1", {"json": {"title": ""}}, 422, "invalid_input"),
    ("PATCH", "/bills/1", {"json": {"sponsor_id": 2}}, 422, "validation_error"),
    ("POST", "/bills/1/votes", {"json": {"user_id": 1, "choice": "maybe"}}, 422, "invalid_input"),
    ("POST", "/bills/1/votes", {"json": {"user_id": 9999, "choice": "yes"}}, 404, "not_found"),
    ("POST", "/bills/9999/votes", {"json": {"user_id": 1, "choice": "yes"}}, 404, "not_found"),
    ("POST", "/bills/1/votes", {"json": {"user_id": "1", "choice": "yes"}}, 422,
     "validation_error"),
    ("POST", "/bills/1/votes", {"json": {"choice": "yes"}}, 422, "validation_error"),
    ("POST", "/bills/0/votes", {"json": {"user_id": 1, "choice": "yes"}}, 422, "validation_error"),
    ("GET", "/bills?cursor=garbage", {}, 422, "invalid_cursor"),
    ("GET", "/bills?cursor=eyJ2IjoxfQ.AAAA", {}, 422, "invalid_cursor"),
    ("GET", "/bills?cursor=&page=2", {}, 422, "invalid_input"),
    ("GET", "/bills?cursor=&limit=0", {}, 422, "validation_error"),
    ("GET", "/bills?cursor=&limit=1000000", {}, 422, "validation_error"),
    ("GET", "/bills?cursor=" + "a" * 5000, {}, 422, "validation_error"),
    ("GET", "/bills/1/votes?cursor=nope", {}, 422, "invalid_cursor"),
    ("GET", "/users/1/votes?cursor=nope", {}, 422, "invalid_cursor"),
    ("GET", "/bills/9999/votes?cursor=", {}, 404, "not_found"),
    ("POST", "/webhooks", {"json": {"url": "http://127.0.0.1:8080/hook"}}, 422, "invalid_input"),
    ("POST", "/webhooks", {"json": {"url": "http://169.254.169.254/"}}, 422, "invalid_input"),
    ("POST", "/webhooks", {"json": {"url": "file:///etc/passwd"}}, 422, "invalid_input"),
    ("POST", "/webhooks", {"json": {"url": "http://[example.com]/"}}, 422, "invalid_input"),
    ("POST", "/webhooks", {"json": {"url": "https://93.184.215.14/", "secret": "abc"}}, 422,
     "invalid_input"),
    ("POST", "/webhooks", {"json": {"url": "https://93.184.215.14/", "types": ["vote.gone"]}},
     422, "invalid_input"),
    ("POST", "/webhooks", {"json": {"url": "https://93.184.215.14/", "types": []}}, 422,
     "invalid_input"),
    ("POST", "/webhooks", {"json": {"secret": "whsec_x"}}, 422, "validation_error"),
    ("POST", "/webhooks", {"json": {"url": 5}}, 422, "validation_error"),
    ("GET", "/webhooks/abc", {}, 422, "validation_error"),
    ("GET", "/webhooks/9999", {}, 404, "not_found"),
    ("PATCH", "/webhooks/9999", {"json": {"status": "active"}}, 404, "not_found"),
    ("PATCH", "/webhooks/1", {"json": {"status": "gone"}}, 422, "validation_error"),
    ("DELETE", "/webhooks/9999", {}, 404, "not_found"),
    ("GET", "/webhooks/9999/deliveries", {}, 404, "not_found"),
    ("GET", "/webhooks/1/deliveries?status=lost", {}, 422, "validation_error"),
    ("GET", "/webhooks/1/deliveries?limit=0", {}, 422, "validation_error"),
    ("POST", "/webhooks/1/deliveries/9999/retry", {}, 404, "not_found"),
    ("PUT", "/webhooks/1", {}, 405, "method_not_allowed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    BAD_REQUESTS,
    ids=[f"{m} {p[:40]} {s}" for m, p, _, s, _ in BAD_REQUESTS],
)
async def test_bad_input_is_a_clear_4xx(
    client: Client,
    stores: Stores,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    """Each bad request gets its 4xx status and a JSON error body, and writes nothing."""
    votes_before = _votes(stores)

    error = _error(await client.request(method, path, **kwargs), status, code)

    assert len(error["message"]) < 1_000
    assert votes_before == _votes(stores)


def _operations(spec: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The OpenAPI path item whose template matches *path* (query left out), if any."""
    path = path.split("?", 1)[0]
    for template, item in spec["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
            operations: dict[str, Any] = item
            return operations
    return None


def test_every_bad_input_status_is_documented(stores: Stores) -> None:
    """Each status the bad-input matrix gets on a route is in its OpenAPI, as the envelope."""
    spec = create_app(stores=stores).openapi()
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    undocumented = []
    for method, path, _, status, _ in BAD_REQUESTS:
        item = _operations(spec, path)
        if item is None:
            assert status == 404, path  # no route: only "not found" is possible
            continue
        # A method the path does not take is answered by the path's routes: each documents 405.
        operations = [item[method.lower()]] if method.lower() in item else list(item.values())
        for operation in operations:
            response = operation["responses"].get(str(status))
            if response is None or envelope != response["content"]["application/json"]["schema"]:
                undocumented.append(f"{status} on {method} {path}")

    assert undocumented == []


async def test_wrong_method_allow_lists_every_method_of_the_path(client: Client) -> None:
    """GET and PATCH /bills/{id} are two routes: a 405 there still allows both."""
    response = await client.delete("/bills/1")

    _error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, PATCH"


async def test_listings_link_their_neighbours(client: Client) -> None:
    """GET /bills answers with RFC 8288 Link headers that keep the other parameters."""
    response = await client.get("/bills", params={"page": 2, "limit": 7, "status": "draft"})

    assert '</bills?limit=7&status=draft&page=1>; rel="first"' in response.headers["link"]


async def test_validation_errors_never_echo_the_input(client: Client) -> None:
    """A rejected value is described, not echoed back."""
    secret = "s3cr3t-" * 10
    response = await client.post("/users", json={"username": secret, "email": 7})

    assert secret not in response.text
    assert "body.email" in {field["field"] for field in response.json()["error"]["fields"]}


async def test_duplicate_vote_is_409_and_leaves_one_row(client: Client, stores: Stores) -> None:
    """Voting twice answers 409; the first vote stands and no row is added."""
    bill_id, user_id = _fresh_pair(stores)
    first = await client.post(f"/bills/{bill_id}/votes", json={"user_id": user_id, "choice": "yes"})
    count = _votes(stores)

    again = await client.post(f"/bills/{bill_id}/votes", json={"user_id": user_id, "choice": "no"})

    assert first.status_code == 201
    _error(again, 409, "conflict")
    assert count == _votes(stores)
    mine = (await client.get(f"/users/{user_id}/votes", params={"limit": 100})).json()["items"]
    assert [vote["choice"] for vote in mine if vote["bill_id"] == bill_id] == ["yes"]


async def test_chunked_body_over_the_limit_is_413(client: Client) -> None:
    """A streamed body with no Content-Length is cut off at the limit with 413."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"title": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'", "sponsor_id": 1}'

    response = await client.post(
        "/bills", content=chunks(), headers={"content-type": "application/json"}
    )

    _error(response, 413, "payload_too_large")


async def test_unexpected_errors_are_a_generic_500_without_details(stores: Stores) -> None:
    """A bug surfaces as a JSON 500 that leaks no internals."""
    app = create_app(stores=stores)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("password=hunter2")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/boom")

    _error(response, 500, "internal_error")
    assert "hunter2" not in response.text
    json.loads(response.text)
    # Timed like any other response, though Starlette's outermost middleware answered it.
    assert response.headers["x-request-id"]
    assert response.headers["server-timing"].startswith("app;dur=")


@pytest.mark.parametrize("tier", ["memory", "tiered"])
async def test_cached_api_serves_fresh_data_after_writes(
    engine: Engine, tier: str, request: pytest.FixtureRequest
) -> None:
    """With the cache on, reads are hits until a write, and never stale after it."""
    from bill_api.app import make_cache  # noqa: PLC0415

    seed(engine, users=5, bills=5, votes=0, random_seed=2)
    redis_url = request.getfixturevalue("redis_url") if tier == "tiered" else None
    cache = make_cache(redis_url)
    if redis_url is not None:
        cache.clear()  # the example's fixed prefix: start from nothing
        request.addfinalizer(cache.backend.close)
    with open_stores(engine, cache=cache) as cached:
        async with _client(cached) as client:
            first = (await client.get("/bills/3/votes/counts")).json()
            again = (await client.get("/bills/3/votes/counts")).json()
            await client.post("/bills/3/votes", json={"user_id": 2, "choice": "yes"})
            after = (await client.get("/bills/3/votes/counts")).json()
            await client.patch("/bills/3", json={"title": "Renamed Act"})
            bill = (await client.get("/bills/3")).json()
    await cache.backend.aclose()  # the response cache reads through the async client

    assert first == again
    assert after["yes"] == first["yes"] + 1
    assert bill["title"] == "Renamed Act"
    assert cache.stats.hits >= 1


async def test_cursor_mode_walks_bills_and_refuses_a_foreign_cursor(client: Client) -> None:
    """?cursor= pages through every bill once; a bills cursor is refused by a votes listing."""
    ids: list[int] = []
    body = (await client.get("/bills", params={"cursor": "", "limit": 7})).json()
    ids += [bill["id"] for bill in body["items"]]
    first_cursor = body["next_cursor"]
    while body["next_cursor"]:
        params = {"cursor": body["next_cursor"], "limit": 7}
        body = (await client.get("/bills", params=params)).json()
        ids += [bill["id"] for bill in body["items"]]

    assert sorted(ids, reverse=True) == ids == list(range(30, 0, -1))
    assert set(body) == {"items", "limit", "next_cursor", "prev_cursor", "has_next", "has_prev"}
    foreign = await client.get("/bills/1/votes", params={"cursor": first_cursor})
    assert _error(foreign, 422, "invalid_cursor")["message"].startswith("cursor:")


async def test_bill_text_goes_through_a_breaker_with_a_summary_fallback(stores: Stores) -> None:
    """The text service fails: fallbacks answer, the breaker opens, later calls skip the service."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: PLC0415

    from bill_api.text import BillText  # noqa: PLC0415

    mode = {"value": "ok", "hits": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            mode["hits"] += 1
            if mode["value"] == "fail":
                self.send_response(503)
                self.end_headers()
                return
            body = b'{"text": "full text"}'
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    breaker = CircuitBreaker(
        name="text-test", fail_max=2, reset_timeout=30, fallback=BillText.fallback,
        clock=FakeClock(),
    )  # fmt: skip
    texts = BillText(url, breaker=breaker)
    transport = httpx.ASGITransport(app=create_app(stores=stores, text=texts))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = (await client.get("/bills/3/text")).json()
            mode["value"] = "fail"
            failed = [(await client.get("/bills/3/text")).json() for _ in range(2)]
            hits = mode["hits"]
            refused = (await client.get("/bills/3/text")).json()
            missing = await client.get("/bills/9999/text")
    finally:
        server.shutdown()
        server.server_close()
        texts.close()

    assert (first["source"], first["text"]) == ("service", "full text")
    assert [f["reason"] for f in failed] == ["HTTPStatusError", "HTTPStatusError"]
    assert (refused["source"], refused["reason"]) == ("fallback", "CircuitOpenError")
    assert mode["hits"] == hits  # the open breaker kept the request away from the service
    assert refused["text"] == (await _summary(stores, 3))
    _error(missing, 404, "not_found")


async def _summary(stores: Stores, bill_id: int) -> str:
    bill = stores.bills.get_by_id(bill_id)
    assert bill is not None
    return bill.summary


async def test_api_reports_timing_logs_and_prometheus_metrics(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Every response has Server-Timing and a request id; /metrics exposes the histograms."""
    with caplog.at_level(logging.INFO, logger="perfkit.request"):
        response = await client.get("/bills/3", headers={"x-request-id": "api-1"})
    metrics = await client.get("/metrics")

    assert response.headers["x-request-id"] == "api-1"
    assert "db;dur=" in response.headers["server-timing"]
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "perfkit.request"]
    assert [(line["route"], line["request_id"]) for line in lines] == [
        ("/bills/{bill_id}", "api-1")
    ]
    assert metrics.status_code == 200
    text = metrics.text
    assert "http_server_request_duration_seconds_bucket{" in text
    assert 'http_route="/bills/{bill_id}"' in text
    assert "db_client_operation_duration_seconds_count" in text
    assert "perfkit_retry_attempts" in text
    assert 'perfkit_breaker_name="bill-text"' in text


async def test_a_circuit_open_error_escaping_a_route_is_a_503(stores: Stores) -> None:
    """Server-side failures perfkit raises map to 5xx, not to client errors."""
    from perfkit import CircuitOpenError  # noqa: PLC0415

    app = create_app(stores=stores)

    @app.get("/down")
    def down() -> None:
        raise CircuitOpenError("payments", retry_after=3.0)

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/down")

    _error(response, 503, "circuit_open")
