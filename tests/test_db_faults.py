"""
Database faults through the real example API: connections killed under load, the server
unreachable and back, a real PostgreSQL restart, SQLite locked past its busy timeout.

Never a 500; every acknowledged write stored exactly once; nothing stored that was
answered with an error other than 503 ``commit_outcome_unknown``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from bill_api import create_app
from fault_load import run_load, serve, stored_votes, summary
from perfkit import db, migrations
from perfkit.reference import Stores, open_stores, seed
from perfkit.resilience import retry_stats
from pg_cluster import PostgresCluster
from tcp_proxy import TcpProxy

log = logging.getLogger("perfkit.tests.faults")

APP_NAME = "perfkit-fault-test"
BILLS = 30
USERS = 200


def _fresh_pairs(n: int) -> list[tuple[int, int]]:
    """*n* (bill, user) pairs, none voted on (the seed casts no votes)."""
    return [(b, u) for u in range(1, USERS + 1) for b in range(1, BILLS + 1)][:n]


def _check(report_name: str, report: object, engine: Engine, **extra: object) -> None:
    from fault_load import Report  # noqa: PLC0415

    assert isinstance(report, Report)
    stored, rows = stored_votes(engine)
    line = summary(report_name, report, stored, rows, **extra)
    log.warning("%s", line)
    print(line)
    assert report.count(500) == 0, report.statuses
    assert report.server_errors() == report.count(503), report.statuses
    # Every pair is fresh: a 409 would be a vote the API stored, then cast again.
    assert report.count(409) == 0, report.statuses
    assert report.acknowledged <= stored  # every acknowledged write is there
    assert stored <= report.acknowledged | report.unknown  # and nothing refused is


# -- connections killed under load ------------------------------------------------


@pytest.fixture
def killable(pg_clean_engine: Engine, pg_schema_url: str) -> Iterator[Stores]:
    """The reference stores on this run's schema, on connections the test can find and kill."""
    seed(pg_clean_engine, users=USERS, bills=BILLS, votes=0, random_seed=3)
    engine = db.create_engine(pg_schema_url, connect_args={"application_name": APP_NAME})
    with open_stores(engine, schema="none") as stores:
        yield stores
    engine.dispose()


def test_connections_killed_under_load_give_no_500_and_lose_no_write(
    killable: Stores, pg_engine: Engine
) -> None:
    """4 writers cast 600 votes, a reader walks bills and pages; the API's connections die
    every 0.3 s (pg_terminate_backend, as a failover or an idle reaper does)."""
    killed: list[int] = []
    retries = retry_stats.retries

    def kill_every_300ms() -> None:
        # 15 rounds, then on (up to 60) until a kill has landed mid-request: pre-ping
        # absorbs a kill of an idle pooled connection, so a short run can see no retry.
        with pg_engine.connect() as killer:
            for round_ in range(60):
                if round_ >= 15 and retry_stats.retries > retries:
                    break
                time.sleep(0.3)
                result = killer.exec_driver_sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %(name)s AND pid <> pg_backend_pid()",
                    {"name": APP_NAME},
                )
                killed.append(int(result.scalar_one()))
                killer.commit()

    with serve(create_app(stores=killable)) as base:
        report = run_load(
            base, _fresh_pairs(3000), bills=BILLS, min_writes=600, during=kill_every_300ms
        )

    _check("kill", report, pg_engine, killed=sum(killed), retries=retry_stats.retries - retries)
    assert sum(killed) >= 10  # the faults really happened
    assert retry_stats.retries > retries  # and were absorbed by retries


# -- unreachable, then back ----------------------------------------------------------


@pytest.fixture
def proxied_stores(
    pg_clean_engine: Engine, pg_schema_url: str
) -> Iterator[tuple[Stores, TcpProxy]]:
    """Stores reaching this run's schema through a proxy the test can pause (short deadlines)."""
    seed(pg_clean_engine, users=20, bills=5, votes=0, random_seed=3)
    url = make_url(pg_schema_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        engine = db.create_engine(
            url.set(host="127.0.0.1", port=proxy.port), connect_args={"connect_timeout": 1}
        )
        with open_stores(engine, schema="none", read_deadline=0.3, write_deadline=0.5) as stores:
            yield stores, proxy
        engine.dispose()


@pytest.mark.anyio
async def test_an_unreachable_database_is_503_and_the_api_recovers_by_itself(
    proxied_stores: tuple[Stores, TcpProxy],
) -> None:
    """While the database is away: 503 + Retry-After + the envelope, /healthz still 200,
    /readyz 503. When it is back, the same app serves again, no restart."""
    stores, proxy = proxied_stores
    app = create_app(stores=stores)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        assert (await client.get("/bills/1")).status_code == 200
        proxy.pause()
        for method, path, body in [
            ("GET", "/bills/1", None),
            ("GET", "/bills?limit=2&page=2", None),
            ("GET", "/users/3/votes", None),
            ("POST", "/bills/1/votes", {"user_id": 1, "choice": "no"}),
            ("POST", "/users", {"username": "ida", "email": "ida@example.org"}),
        ]:
            response = await client.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
            assert response.json()["error"]["code"] == "unavailable"
            assert response.headers["retry-after"] == "1"
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert ready.json()["checks"]["database"]["status"] == "down"
        assert ready.headers["retry-after"]

        proxy.resume()
        assert (await client.get("/bills/1")).status_code == 200
        cast = await client.post("/bills/1/votes", json={"user_id": 1, "choice": "no"})
        assert cast.status_code == 201, cast.text
        assert (await client.get("/readyz")).json()["status"] == "ready"
    assert stores.votes.counts(1).no == 1  # the refused cast was not stored


# -- a real server restart -------------------------------------------------------------


def test_a_postgresql_restart_under_load_gives_no_500_and_lose_no_write(
    pg_cluster: PostgresCluster,
) -> None:
    """The same load while a private PostgreSQL server is restarted twice ("fast":
    sessions ended with 57P01) and crashed once ("immediate")."""
    engine = db.create_engine(pg_cluster.url)
    migrations.upgrade(engine, "perfkit_reference")
    seed(engine, users=USERS, bills=BILLS, votes=0, random_seed=3)
    recoveries: list[float] = []
    downtime: list[float] = []

    with open_stores(engine, schema="none") as stores:
        restarted: list[float] = []

        def restart_three_times() -> None:
            for mode in ("fast", "immediate", "fast"):
                time.sleep(0.8)
                began = time.monotonic()
                pg_cluster.restart(mode=mode)
                downtime.append(time.monotonic() - began)
                restarted.append(began)

        with serve(create_app(stores=stores)) as base:
            report = run_load(
                base, _fresh_pairs(3000), bills=BILLS, min_writes=400, during=restart_three_times
            )
        for began in restarted:
            first = report.first_success_after(began)
            assert first is not None
            recoveries.append(first - began)
        _check(
            "restart",
            report,
            engine,
            restarts=len(restarted),
            server_down_s=[round(d, 2) for d in downtime],
            recovery_s=[round(r, 2) for r in recoveries],
        )
    engine.dispose()
    assert len(restarted) == 3


# -- SQLite locked past its busy timeout -------------------------------------------------


@pytest.mark.anyio
async def test_sqlite_locked_past_its_busy_timeout_reads_serve_and_writes_are_503(
    tmp_path: Path,
) -> None:
    """Another writer holds the lock: reads never fail, writes retry to their deadline and
    answer 503 (never 500), then succeed once the lock is released."""
    url = f"sqlite:///{tmp_path / 'locked.sqlite3'}"
    engine = db.create_engine(url, busy_timeout=0.05)
    seed(engine, users=10, bills=5, votes=0, random_seed=3)
    stores = open_stores(engine, schema="none", write_deadline=0.5)
    holder = db.for_writes(engine).connect()
    holder.begin()
    holder.exec_driver_sql("UPDATE bills SET title = title")  # holds the write lock
    transport = httpx.ASGITransport(app=create_app(stores=stores), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            for path in ("/bills/1", "/bills?limit=2&page=2", "/bills/1/votes/counts"):
                assert (await client.get(path)).status_code == 200
            retries = retry_stats.retries
            blocked = await client.post("/bills/2/votes", json={"user_id": 2, "choice": "yes"})
            assert blocked.status_code == 503, blocked.text
            assert blocked.json()["error"]["code"] == "unavailable"
            assert retry_stats.retries - retries >= 2  # it retried before giving up
            holder.rollback()
            cast = await client.post("/bills/2/votes", json={"user_id": 2, "choice": "yes"})
            assert cast.status_code == 201, cast.text
    finally:
        holder.close()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM votes")).scalar_one() == 1
    engine.dispose()
