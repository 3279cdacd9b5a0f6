"""
Batch writes: perfkit.batch's parts, and cast_many/create_many on the reference stores,
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url

from perfkit import db
from perfkit.batch import BatchResult, ItemResult, RowSource, chunked
from perfkit.cache import Cache, MemoryBackend
from perfkit.errors import Conflict, InvalidInput, NotFound
from perfkit.reference import Base, NewVote, Stores, User, Vote, open_stores, seed
from perfkit.testing import assert_max_queries, count_queries
from tcp_proxy import TcpProxy


@pytest.fixture
def cached(engine: Engine) -> Iterator[Stores]:
    """Reference stores with an in-memory cache on 10 users and 5 bills, no votes."""
    seed(engine, users=10, bills=5, votes=0, random_seed=3)
    cache = Cache(MemoryBackend(), namespace="batch", ttl=300, jitter=0)
    with open_stores(engine, cache=cache) as stores:
        yield stores


def _kinds(result: BatchResult[Any]) -> list[str]:
    return ["ok" if item.ok else type(item.error).__name__ for item in result]


# -- perfkit.batch -------------------------------------------------------------------------------


def test_chunked_splits_in_order_and_keeps_the_rest() -> None:
    """chunked yields lists of at most size, in order, the last one shorter."""
    assert list(chunked(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked([], 3)) == []


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "3"])
def test_chunked_refuses_a_size_that_is_not_a_positive_integer(size: Any) -> None:
    """A zero, negative, fractional or boolean size is a ValueError."""
    with pytest.raises(ValueError, match="positive integer"):
        list(chunked(range(3), size))


def test_batch_result_lists_stored_and_failed_in_input_order() -> None:
    """stored keeps the records' order; failed keeps each error with its index."""
    error = Conflict("taken")
    result = BatchResult((ItemResult(0, "a"), ItemResult(1, error=error), ItemResult(2, "c")))
    assert (["a", "c"], [1], [error], 3) == (
        result.stored,
        [item.index for item in result.failed],
        [item.error for item in result.failed],
        len(result),
    )


def test_row_source_round_trips_rows_in_order(engine: Engine) -> None:
    """The rows come back as given, in order, with their ordinal, on each database."""
    rows = RowSource(engine.dialect.name, {"n": sa.BigInteger(), "s": sa.String()}, name="r")
    given = [(3, "three"), (1, "one ünï"), (2, None)]
    stmt = sa.select(*rows.columns).select_from(rows.table).order_by(rows.ordinal)
    with engine.connect() as conn:
        assert given == [tuple(row) for row in conn.execute(stmt, rows.params(given))]
        assert conn.execute(stmt, rows.params([])).all() == []


def test_row_source_refuses_what_it_cannot_bind() -> None:
    """A row of the wrong width, a non-scalar value or another dialect is a clear error."""
    rows = RowSource("sqlite", {"n": sa.Integer()})
    with pytest.raises(ValueError, match="each row needs 1 values"):
        rows.params([(1, 2)])
    with pytest.raises(ValueError, match="not datetime"):
        rows.params([(datetime.now(UTC),)])
    with pytest.raises(ValueError, match="supports postgresql and sqlite"):
        RowSource("mysql", {"n": sa.Integer()})
    with pytest.raises(ValueError, match="at least one column"):
        RowSource("sqlite", {})


def test_row_source_statement_does_not_grow_with_the_chunk() -> None:
    """The SQL is the same for 1 row and 1,000: compiled once, bound as few parameters."""
    for dialect, name in ((postgresql.dialect(), "postgresql"), (sqlite.dialect(), "sqlite")):
        rows = RowSource(name, {"a": sa.Integer(), "b": sa.String()})
        stmt = sa.select(*rows.columns).select_from(rows.table)
        compiled = stmt.compile(dialect=dialect)
        assert len(compiled.params) <= 2 + 2  # arrays, or one JSON text (+ json paths)
        assert len(rows.params([(1, "x")] * 1_000)) == (2 if name == "postgresql" else 1)


# -- the reference stores ------------------------------------------------------------------------


def test_cast_many_stores_each_vote_and_says_why_others_failed(cached: Stores) -> None:
    """Valid votes go in; a bad choice, a missing bill or user, a repeat, a taken pair: alone."""
    votes = cached.votes
    votes.cast(bill_id=1, user_id=1, choice="yes")
    items: list[Any] = [
        {"bill_id": 1, "user_id": 2, "choice": "yes"},
        {"bill_id": 1, "user_id": 1, "choice": "no"},  # voted before
        {"bill_id": 99, "user_id": 3, "choice": "no"},  # no such bill
        {"bill_id": 2, "user_id": 99, "choice": "no"},  # no such user
        {"bill_id": 2, "user_id": 3, "choice": "maybe"},  # bad choice
        {"bill_id": 2, "user_id": 3, "choice": "abstain"},
        {"bill_id": 2, "user_id": 3, "choice": "yes"},  # repeats the one before
        {"bill_id": "2", "user_id": 3, "choice": "yes"},  # not an id
        {"bill_id": 2, "user_id": 4},  # no choice
        {"bill_id": 2, "user_id": 4, "choice": "no", "weight": 2},  # unknown field
        ["not", "a", "mapping"],
    ]
    result = votes.cast_many(items)
    expected = ["ok", "Conflict", "NotFound", "NotFound", "InvalidInput", "ok", "Conflict"]
    expected += ["InvalidInput"] * 4
    assert expected == _kinds(result)
    assert list(range(len(items))) == [item.index for item in result]
    messages = [str(item.error) for item in result.failed]
    assert "user 1 has already voted on bill 1" in messages[0]
    assert "bill with id=99" in messages[1]
    assert "user with id=99" in messages[2]
    assert "user 3 has already voted on bill 2" in messages[4]  # repeats item 5, stored
    assert messages[6:8] == ["choice: is required", "weight: is not a field of this item"]
    stored = result.stored
    assert [(v.bill_id, v.user_id, v.choice) for v in stored] == [(1, 2, "yes"), (2, 3, "abstain")]
    assert stored == [votes.get_by_id(vote.id) for vote in stored]  # the records are the rows


@pytest.mark.parametrize("chunk_size", [1, 2, 1_000])
def test_cast_many_keeps_input_order_across_chunks(cached: Stores, chunk_size: int) -> None:
    """Ids follow the input, whatever the chunking; results stay in input order."""
    items: list[NewVote] = [
        {"bill_id": bill, "user_id": user, "choice": "no"}
        for user in (5, 3, 9, 1)
        for bill in (4, 2)
    ]
    items.insert(3, {"bill_id": 1, "user_id": 1, "choice": "nope"})
    result = cached.votes.cast_many(items, chunk_size=chunk_size)
    ids = [vote.id for vote in result.stored]
    assert (ids, 3) == (sorted(ids), result.failed[0].index)
    assert [(i["bill_id"], i["user_id"]) for i in items if i["choice"] == "no"] == [
        (v.bill_id, v.user_id) for v in result.stored
    ]


def test_cast_many_invalidates_what_cast_does(cached: Stores) -> None:
    """Cached counts, lists and a missing vote id are fresh after the batch."""
    votes = cached.votes
    assert votes.counts(3).total == 0
    assert votes.get_by_bill_id(3).total == 0
    assert votes.get_by_user_id(4).total == 0
    assert votes.get_by_id(1) is None  # cached "no such vote"
    result = votes.cast_many([{"bill_id": 3, "user_id": u, "choice": "yes"} for u in (4, 5, 6)])
    assert (
        votes.counts(3).yes,
        votes.get_by_bill_id(3).total,
        votes.get_by_user_id(4).total,
    ) == (3, 3, 1)
    assert result.stored[0] == votes.get_by_id(1)


def test_cast_many_is_one_statement_per_chunk_and_two_with_failures(cached: Stores) -> None:
    """A chunk that all goes in is one INSERT; failed items add one query to tell why."""
    engine = cached.engine
    ballots: list[NewVote] = [{"bill_id": 1, "user_id": u, "choice": "yes"} for u in range(1, 11)]
    with assert_max_queries(engine, 2):  # two chunks of five
        cached.votes.cast_many(ballots, chunk_size=5)
    with count_queries(engine) as log:
        cached.votes.cast_many([*ballots[:3], {"bill_id": 2, "user_id": 1, "choice": "no"}])
    assert log.count == 2, log.describe()


def test_create_many_users_reports_taken_and_repeated_names(cached: Stores) -> None:
    """Taken usernames and emails, repeats within the batch and bad input fail alone."""
    taken = cached.users.get_by_id(1)
    assert taken is not None
    assert cached.users.get_by_username("fresh") is None  # cached "no such user"
    result = cached.users.create_many(
        [
            {"username": "Fresh", "email": "fresh@example.org"},
            {"username": taken.username, "email": "new@example.org"},
            {"username": "other", "email": taken.email.upper()},
            {"username": "FRESH", "email": "again@example.org"},
            {"username": "x", "email": "x@example.org"},
        ]
    )
    assert _kinds(result) == ["ok", "Conflict", "Conflict", "Conflict", "InvalidInput"]
    messages = [str(item.error) for item in result.failed]
    assert [f"username {taken.username!r} is taken", f"email {taken.email!r} is taken"] == (
        messages[:2]
    )
    assert messages[2] == "username 'fresh' is taken"  # by item 0
    assert result.stored[0] == cached.users.get_by_username("fresh")  # invalidated


def test_create_many_bills_refuses_a_missing_sponsor_alone(cached: Stores) -> None:
    """A bill whose sponsor does not exist fails; equal drafts both go in, in order."""
    before = cached.bills.get_all().total
    result = cached.bills.create_many(
        [
            {"title": "Twin", "sponsor_id": 1},
            {"title": "Orphan", "sponsor_id": 999},
            {"title": "Twin", "sponsor_id": 1},
            {"title": "Passed", "sponsor_id": 2, "summary": "s", "status": "passed"},
            {"title": " ", "sponsor_id": 2},
            {"title": "Odd", "sponsor_id": 2, "status": "vetoed"},
        ]
    )
    assert _kinds(result) == ["ok", "NotFound", "ok", "ok", "InvalidInput", "InvalidInput"]
    first, second, third = result.stored
    assert first.id < second.id < third.id
    assert (third.status, third.summary) == ("passed", "s")
    assert before + 3 == cached.bills.get_all().total  # the cached count went
    assert third == cached.bills.get_by_id(third.id)


@pytest.mark.parametrize("chunk_size", [0, 10_001, 2.0, None])
def test_a_chunk_size_out_of_range_is_a_value_error(cached: Stores, chunk_size: Any) -> None:
    """chunk_size must be an integer from 1 to 10,000."""
    with pytest.raises(ValueError, match="chunk_size"):
        cached.votes.cast_many([], chunk_size=chunk_size)


def test_an_empty_batch_writes_nothing(cached: Stores) -> None:
    """No items: no result, no query."""
    with assert_max_queries(cached.engine, 0):
        assert len(cached.votes.cast_many([])) == 0
        assert len(cached.users.create_many(iter([]))) == 0


def test_concurrent_batches_store_each_pair_once_and_counts_stay_fresh(cached: Stores) -> None:
    """Threads casting overlapping batches: each pair stored once, every other attempt a
    Conflict, and a counts read that starts after a batch returned sees at least its votes."""
    votes = cached.votes
    bills, users = range(1, 6), range(1, 11)
    errors: list[BaseException] = []
    committed_floor = [0]  # votes acknowledged before the read began, at least
    floor_lock = threading.Lock()
    stored: list[tuple[int, int]] = []
    conflicts = [0]

    def writer(seed_offset: int) -> None:
        try:
            order = [(b, u) for b in bills for u in users]
            order = order[seed_offset:] + order[:seed_offset]
            for start in range(0, len(order), 7):
                chunk = order[start : start + 7]
                result = votes.cast_many(
                    [{"bill_id": b, "user_id": u, "choice": "yes"} for b, u in chunk],
                    chunk_size=3,
                )
                with floor_lock:
                    stored.extend((v.bill_id, v.user_id) for v in result.stored)
                    conflicts[0] += len(result.failed)
                    committed_floor[0] = len(stored)
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            while any(t.is_alive() for t in writers):
                with floor_lock:
                    floor = committed_floor[0]
                seen = sum(votes.counts(bill).total for bill in bills)
                assert seen >= floor, (seen, floor)
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(offset,)) for offset in (0, 17, 33)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in writers + readers:
        thread.start()
    for thread in writers + readers:
        thread.join(timeout=120)
    assert errors == []
    pairs = len(bills) * len(users)
    assert (pairs, pairs, 2 * pairs) == (len(stored), len(set(stored)), conflicts[0])
    assert pairs == sum(votes.counts(bill).total for bill in bills)


# -- a COMMIT whose reply is lost ----------------------------------------------------------------


@pytest.fixture
def proxied_stores(pg_schema_url: str) -> Iterator[tuple[Stores, TcpProxy]]:
    """Stores on this run's schema through a proxy that can lose COMMIT replies."""
    url = make_url(pg_schema_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        engine = db.create_engine(url.set(host="127.0.0.1", port=proxy.port))
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE votes, bills, users RESTART IDENTITY CASCADE")
        seed(engine, users=6, bills=2, votes=0)
        with open_stores(engine) as stores:
            yield stores, proxy
        engine.dispose()


def test_a_batch_whose_commit_reply_is_lost_is_verified_not_redone(
    proxied_stores: tuple[Stores, TcpProxy],
) -> None:
    """The server commits a chunk, the client never hears: each item's result is rebuilt
    from what was stored, and nothing is written twice."""
    stores, proxy = proxied_stores
    proxy.lose_commit_reply()
    votes = stores.votes.cast_many(
        [{"bill_id": 1, "user_id": u, "choice": "no"} for u in (1, 2, 1)]
        + [{"bill_id": 9, "user_id": 3, "choice": "no"}]
    )
    proxy.lose_commit_reply()
    users = stores.users.create_many([{"username": "late", "email": "late@example.org"}])
    proxy.lose_commit_reply()
    bills = stores.bills.create_many([{"title": "Lost reply", "sponsor_id": 1}])
    assert proxy.commits_lost == 3
    assert _kinds(votes) == ["ok", "ok", "Conflict", "NotFound"]
    assert (_kinds(users), _kinds(bills)) == (["ok"], ["ok"])
    with stores.engine.connect() as conn:
        counts = [
            conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in (Vote, User)
        ]
    assert counts == [2, 7]
    assert votes.stored == [stores.votes.get_by_id(v.id) for v in votes.stored]
    assert bills.stored[0] == stores.bills.get_by_id(bills.stored[0].id)


def test_errors_are_the_documented_types(cached: Stores) -> None:
    """Each failed item carries a perfkit error a caller can map to a status."""
    result = cached.votes.cast_many(
        [{"bill_id": 1, "user_id": 1, "choice": "x"}, {"bill_id": 77, "user_id": 1, "choice": "no"}]
    )
    assert [InvalidInput, NotFound] == [type(item.error) for item in result.failed]


def test_a_repeat_of_an_item_that_failed_gets_its_own_result(cached: Stores) -> None:
    """A repeat goes in after the item it repeats: stored if that one was refused, a
    Conflict if it was stored, and whatever it would have got alone otherwise."""
    taken = cached.users.get_by_id(1)
    assert taken is not None
    users = cached.users.create_many(
        [
            {"username": taken.username, "email": "shared@example.org"},  # taken: refused
            {"username": "second", "email": "shared@example.org"},  # alone it goes in
            {"username": "third", "email": "shared@example.org"},  # the second has it now
        ]
    )
    assert _kinds(users) == ["Conflict", "ok", "Conflict"]
    votes = cached.votes.cast_many(
        [
            {"bill_id": 99, "user_id": 2, "choice": "yes"},
            {"bill_id": 99, "user_id": 2, "choice": "no"},  # alone: no such bill either
            {"bill_id": 1, "user_id": 2, "choice": ["yes"]},  # not a string: invalid
        ]
    )
    assert _kinds(votes) == ["NotFound", "NotFound", "InvalidInput"]
