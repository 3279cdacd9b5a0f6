"""
perfkit.testing's query-count guard, and the guard on every reference-store method and
every route of the example API: a change that makes a path's query count grow with the
data (an N+1) fails here.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute
from sqlalchemy.engine import Engine

from bill_api import create_app
from perfkit import db
from perfkit.cache import Cache, MemoryBackend
from perfkit.outbox import Event
from perfkit.reference import Stores, open_stores, seed
from perfkit.testing import QueryLog, assert_max_queries, count_queries
from perfkit.webhooks import Webhooks

# -- the helper ----------------------------------------------------------------------------------


def test_count_queries_counts_statements_not_transaction_control(sqlite_engine: Engine) -> None:
    """BEGIN/COMMIT are not counted; an executemany is one statement."""
    with count_queries(sqlite_engine) as log, sqlite_engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        conn.execute(sa.text("INSERT INTO t VALUES (:n)"), [{"n": 1}, {"n": 2}, {"n": 3}])
        conn.exec_driver_sql("SAVEPOINT s")
        conn.exec_driver_sql("SELECT count(*) FROM t")
    assert [s.split()[0] for s in log.statements] == ["CREATE", "INSERT", "SELECT"]


def test_count_queries_sees_other_threads_and_stops_at_the_end(sqlite_engine: Engine) -> None:
    """A statement from a worker thread counts; one after the block does not."""

    def select() -> None:
        with sqlite_engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    with count_queries(sqlite_engine) as log:
        worker = threading.Thread(target=select)
        worker.start()
        worker.join()
    select()
    assert log.count == 1


def test_assert_max_queries_fails_listing_every_statement(sqlite_engine: Engine) -> None:
    """Over the limit: an AssertionError that numbers the statements that ran."""

    def three_selects() -> None:
        with sqlite_engine.connect() as conn:
            for n in range(3):
                conn.execute(sa.text("SELECT :n"), {"n": n})

    with pytest.raises(AssertionError) as failed, assert_max_queries(sqlite_engine, 1):
        three_selects()
    message = str(failed.value)
    assert message.startswith("3 queries ran, at most 1 expected:\n  1. SELECT ?")
    assert "  3. SELECT ?" in message


def test_assert_max_queries_lets_the_blocks_own_error_through(sqlite_engine: Engine) -> None:
    """An exception in the block is raised as it is, not replaced by the count."""

    def select_then_fail() -> None:
        with sqlite_engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"), assert_max_queries(sqlite_engine, 0):
        select_then_fail()


@pytest.mark.parametrize("limit", [-1, 1.5, True, "2"])
def test_assert_max_queries_refuses_a_bad_limit(sqlite_engine: Engine, limit: Any) -> None:
    """The limit is a non-negative integer."""
    with (
        pytest.raises(ValueError, match="non-negative integer"),
        assert_max_queries(sqlite_engine, limit),
    ):
        pass


def test_count_queries_on_an_async_engine(tmp_path: Path) -> None:
    """An AsyncEngine is counted through its sync engine."""

    async def run() -> QueryLog:
        engine = db.create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.sqlite3'}")
        try:
            with count_queries(engine) as log:
                async with engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))
                    await conn.execute(sa.text("SELECT 2"))
            return log
        finally:
            await engine.dispose()

    assert asyncio.run(run()).count == 2
    with pytest.raises(TypeError, match="Engine, Connection"), count_queries(object()):  # type: ignore[arg-type]
        pass


def test_query_log_describe_shortens_long_statements() -> None:
    """describe() keeps each statement on one line, cut at 200 characters."""
    log = QueryLog()
    log.add("SELECT\n  " + "x, " * 200 + "y")
    line = log.describe()
    assert ("\n" not in line, len(line) <= 206, line.endswith("…")) == (True, True, True)


# -- every reference-store method ----------------------------------------------------------------

# The most statements each method may run on a cold cache, whatever the data's size: a
# lookup is one query, a write checks what it depends on and writes, a batch is one
# statement per chunk (two when items fail), an export one per batch.
STORE_CALLS: dict[str, tuple[int, Callable[[Stores], Any]]] = {
    "users.get_by_id": (1, lambda s: s.users.get_by_id(3)),
    "users.get_by_username": (1, lambda s: s.users.get_by_username("nobody")),
    "users.get_by_email": (1, lambda s: s.users.get_by_email("nobody@example.org")),
    "users.create": (2, lambda s: s.users.create(username="counted", email="c@example.org")),
    "users.update": (3, lambda s: s.users.update(3, username="renamed")),
    "users.create_many": (
        1,
        lambda s: s.users.create_many(
            {"username": f"many{i}", "email": f"many{i}@example.org"} for i in range(50)
        ),
    ),
    "bills.get_by_id": (1, lambda s: s.bills.get_by_id(3)),
    "bills.get_all": (2, lambda s: s.bills.get_all(page=2, limit=10)),
    "bills.get_all_keyset": (1, lambda s: s.bills.get_all_keyset(limit=10)),
    "bills.create": (2, lambda s: s.bills.create(title="Counted", sponsor_id=1)),
    "bills.update": (2, lambda s: s.bills.update(3, title="Renamed", status="passed")),
    "bills.create_many": (
        1,
        lambda s: s.bills.create_many({"title": f"B{i}", "sponsor_id": 1} for i in range(50)),
    ),
    "bills.export": (1, lambda s: list(s.bills.export(batch_size=1_000))),
    "votes.get_by_id": (1, lambda s: s.votes.get_by_id(3)),
    "votes.get_by_bill_id": (2, lambda s: s.votes.get_by_bill_id(3, limit=5)),
    "votes.get_by_user_id": (2, lambda s: s.votes.get_by_user_id(3, limit=5)),
    "votes.get_by_bill_id_keyset": (2, lambda s: s.votes.get_by_bill_id_keyset(3, limit=5)),
    "votes.get_by_user_id_keyset": (2, lambda s: s.votes.get_by_user_id_keyset(3, limit=5)),
    "votes.cast": (3, lambda s: s.votes.cast(bill_id=41, user_id=1, choice="yes")),
    "votes.cast_many": (
        1,
        lambda s: s.votes.cast_many(
            {"bill_id": 41, "user_id": u, "choice": "no"} for u in range(1, 61)
        ),
    ),
    "votes.counts": (1, lambda s: s.votes.counts(3)),
    "votes.export_by_bill": (2, lambda s: list(s.votes.export_by_bill(3, batch_size=1_000))),
}


# Read through the cache: a second call runs no query.
CACHED = {
    "users.get_by_id",
    "users.get_by_username",
    "users.get_by_email",
    "bills.get_by_id",
    "votes.get_by_id",
    "votes.get_by_bill_id",
    "votes.get_by_user_id",
    "votes.counts",
}


def _public_methods(stores: Stores) -> set[str]:
    return {
        f"{name}.{method}"
        for name in ("users", "bills", "votes")
        for method in dir(getattr(stores, name))
        if not method.startswith("_")
    }


@pytest.fixture
def seeded(engine: Engine) -> Iterator[Stores]:
    """Stores on 60 users, 41 bills (the last with no votes) and 400 votes, cached."""
    seed(engine, users=60, bills=41, votes=400, random_seed=2)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM votes WHERE bill_id = 41")
    cache = Cache(MemoryBackend(), namespace="qc", ttl=300, jitter=0)
    with open_stores(engine, cache=cache, cursor_secret="qc") as stores:
        yield stores


def test_every_store_method_has_a_pinned_count(seeded: Stores) -> None:
    """The table below covers every public method of the three stores."""
    assert _public_methods(seeded) == set(STORE_CALLS)


@pytest.mark.parametrize("name", sorted(STORE_CALLS))
def test_store_method_query_count(seeded: Stores, name: str) -> None:
    """Each method runs at most its pinned count cold, and reads run none once cached."""
    limit, call = STORE_CALLS[name]
    with assert_max_queries(seeded.engine, limit):
        call(seeded)
    if name in CACHED:
        with assert_max_queries(seeded.engine, 0):
            call(seeded)


# -- every route of the example API --------------------------------------------------------------

# method, path template -> (max statements, concrete path, JSON body)
ROUTES: dict[tuple[str, str], tuple[int, str, Any]] = {
    ("GET", "/healthz"): (0, "/healthz", None),
    ("GET", "/readyz"): (1, "/readyz", None),
    ("GET", "/metrics"): (0, "/metrics", None),
    ("GET", "/users/{user_id}"): (1, "/users/3", None),
    ("GET", "/users"): (1, "/users?username=user00007", None),
    ("POST", "/users"): (2, "/users", {"username": "routed", "email": "routed@example.org"}),
    ("POST", "/users/batch"): (
        1,
        "/users/batch",
        {"items": [{"username": f"rb{i}", "email": f"rb{i}@example.org"} for i in range(40)]},
    ),
    ("GET", "/bills"): (2, "/bills?page=2&limit=10", None),
    ("GET", "/bills/{bill_id}"): (1, "/bills/3", None),
    ("GET", "/bills/{bill_id}/text"): (1, "/bills/3/text", None),
    ("POST", "/bills"): (2, "/bills", {"title": "Routed", "sponsor_id": 1}),
    ("POST", "/bills/batch"): (
        1,
        "/bills/batch",
        {"items": [{"title": f"RB{i}", "sponsor_id": 2} for i in range(40)]},
    ),
    ("PATCH", "/bills/{bill_id}"): (2, "/bills/3", {"status": "failed"}),
    ("GET", "/bills/export"): (1, "/bills/export?format=csv", None),
    ("GET", "/bills/{bill_id}/votes"): (2, "/bills/3/votes?limit=5", None),
    ("GET", "/bills/{bill_id}/votes/counts"): (1, "/bills/3/votes/counts", None),
    ("GET", "/bills/{bill_id}/votes/export"): (2, "/bills/3/votes/export", None),
    ("POST", "/bills/{bill_id}/votes"): (3, "/bills/41/votes", {"user_id": 1, "choice": "yes"}),
    ("POST", "/votes/batch"): (
        1,
        "/votes/batch",
        {"items": [{"bill_id": 41, "user_id": u, "choice": "no"} for u in range(2, 60)]},
    ),
    ("GET", "/users/{user_id}/votes"): (2, "/users/3/votes?limit=5", None),
    # On the endpoints and the dead delivery _webhook_state() makes.
    ("POST", "/webhooks"): (1, "/webhooks", {"url": "https://93.184.215.14/hook"}),
    ("GET", "/webhooks/{endpoint_id}"): (2, "/webhooks/1", None),
    ("PATCH", "/webhooks/{endpoint_id}"): (3, "/webhooks/1", {"status": "active"}),
    ("DELETE", "/webhooks/{endpoint_id}"): (2, "/webhooks/2", None),
    ("GET", "/webhooks/{endpoint_id}/deliveries"): (2, "/webhooks/1/deliveries?status=dead", None),
    ("POST", "/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry"): (
        2,
        "/webhooks/1/deliveries/1/retry",
        None,
    ),
}


def _webhook_state(engine: Engine) -> None:
    """Two endpoints; the first with a dead delivery (it was disabled, then enabled)."""
    hooks = Webhooks(engine, allow_private=True)
    hooks.create()
    first = hooks.subscribe("http://127.0.0.1:9/hook").endpoint
    hooks.subscribe("http://127.0.0.1:9/other")
    hooks.dispatch(Event("e" * 32, "bill:1", "vote.cast", {}, datetime.now(UTC)))
    hooks.disable(first.id)
    hooks.enable(first.id)
    hooks.close()


def test_every_api_route_has_a_pinned_count(seeded: Stores) -> None:
    """The table covers every route the example API serves."""
    app = create_app(stores=seeded)
    served = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    assert served == set(ROUTES)


@pytest.mark.anyio
@pytest.mark.parametrize("route", sorted(ROUTES), ids=" ".join)
async def test_api_route_query_count(seeded: Stores, route: tuple[str, str]) -> None:
    """Each route answers 2xx within its count, cold, through the whole app."""
    limit, path, body = ROUTES[route]
    if path.startswith("/webhooks"):
        _webhook_state(seeded.engine)
    transport = httpx.ASGITransport(app=create_app(stores=seeded))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        if path.startswith("/webhooks"):  # the app checks its webhook tables on first use
            assert (await client.get("/webhooks/1")).status_code == 200
        with assert_max_queries(seeded.engine, limit):
            response = await client.request(route[0], path, json=body)
    assert response.status_code < 300, response.text
