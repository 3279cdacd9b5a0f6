"""
Each hot query of the reference stores uses its index, on SQLite and PostgreSQL.

The statements checked are the ones the stores really send (captured from the
engine), explained with their real parameters on realistically seeded data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from conftest import truncate
from perfkit import db
from perfkit.reference import Base, Stores, open_stores, seed

# query name -> (call on the stores, index that must serve it)
HOT_QUERIES: dict[str, tuple[Callable[[Stores], object], str]] = {
    "vote counts": (lambda s: s.votes.counts(42), "ix_votes_bill_id_choice"),
    "votes by bill": (lambda s: s.votes.get_by_bill_id(42, limit=20), "ix_votes_bill_id_id"),
    "votes by user": (lambda s: s.votes.get_by_user_id(7, limit=20), "ix_votes_user_id_id"),
    "bills list": (lambda s: s.bills.get_all(page=3, limit=20), "ix_bills_created_at_id"),
    "bills by status": (
        lambda s: s.bills.get_all(status="failed", page=5, limit=20),
        "ix_bills_status_created_at_id",
    ),
    "user by username": (lambda s: s.users.get_by_username("user00007"), "ix_users_username"),
    "user by email": (lambda s: s.users.get_by_email("user00007@example.org"), "ix_users_email"),
}

# PostgreSQL weighs a filtered backward walk of the list index against the
# status index by cost; on 10k bills the walk wins for shallow pages. Either
# serves the query without a sort or a sequential scan.
PG_ALSO_ACCEPTABLE = {"bills by status": {"ix_bills_created_at_id"}}


def _first_select(engine: Engine, call: Callable[[], object]) -> tuple[str, Any]:
    captured: list[tuple[str, Any]] = []

    def record(_c: Any, _cur: Any, statement: str, parameters: Any, *_a: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return captured[0]


@pytest.fixture(scope="module")
def sqlite_seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    path: Path = tmp_path_factory.mktemp("plans") / "plans.sqlite3"
    engine = db.create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    seed(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    with open_stores(engine) as stores:
        yield stores
    engine.dispose()


@pytest.fixture(scope="module")
def pg_seeded(pg_engine: Engine) -> Iterator[Stores]:
    truncate(pg_engine)
    seed(pg_engine)
    with pg_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE users, bills, votes")
    with open_stores(pg_engine) as stores:
        yield stores
    truncate(pg_engine)


@pytest.mark.parametrize("name", sorted(HOT_QUERIES))
def test_sqlite_plan_uses_the_index(sqlite_seeded: Stores, name: str) -> None:
    """EXPLAIN QUERY PLAN shows the index and no sort for the store's real query."""
    call, index = HOT_QUERIES[name]
    statement, parameters = _first_select(sqlite_seeded.engine, lambda: call(sqlite_seeded))

    with sqlite_seeded.engine.connect() as conn:
        plan = [
            row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        ]

    assert any(f"INDEX {index}" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _plan_nodes(child)


@pytest.mark.parametrize("name", sorted(HOT_QUERIES))
def test_postgresql_plan_uses_the_index(pg_seeded: Stores, name: str) -> None:
    """EXPLAIN on PostgreSQL (analysed, seeded data) scans the index and never sorts."""
    call, index = HOT_QUERIES[name]
    statement, parameters = _first_select(pg_seeded.engine, lambda: call(pg_seeded))

    with pg_seeded.engine.connect() as conn:
        raw = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).scalar()
    document = raw if isinstance(raw, list) else json.loads(raw)
    nodes = list(_plan_nodes(document[0]["Plan"]))

    acceptable = {index} | PG_ALSO_ACCEPTABLE.get(name, set())
    assert acceptable & {node.get("Index Name") for node in nodes}, nodes
    assert "Sort" not in {node["Node Type"] for node in nodes}, nodes
    assert "Seq Scan" not in {node["Node Type"] for node in nodes}, nodes


def test_hot_queries_cover_every_secondary_index() -> None:
    """Every secondary index on the reference tables is justified by a hot query."""
    declared = {
        index.name
        for table in Base.metadata.sorted_tables
        for index in table.indexes
        if index.name is not None
    }
    checked = {index for _, index in HOT_QUERIES.values()}

    assert declared == checked
