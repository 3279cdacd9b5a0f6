"""
Cache invalidation as a property: cached reads always equal the database.

A Hypothesis state machine creates and updates users, bills and votes through
cached reference stores in random order and checks every cached read path
against the same store without a cache (the database is the model): lookups,
vote lists and counts, and listings longer than one page, whose totals come
from the cached count. It runs on the memory backend, on real Redis, and on
the tiered backend. ``test_cache_mutants`` checks that it catches every
invalidation the stores could forget.

A single-threaded machine cannot see a race, so a second group of tests runs
one writer against six reader threads on a SQLite file and checks each read
against what had committed before it began. A third forces the fill race on
the real store: a read is paused between its query and its cache store while
a write commits.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from helpers import delete_keys
from perfkit import Conflict, InvalidInput, NotFound, db
from perfkit.cache import Backend, Cache, MemoryBackend, RedisBackend, TieredBackend
from perfkit.pagination import Page, paginate
from perfkit.reference import (
    Bill,
    BillStatus,
    Stores,
    User,
    Vote,
    VoteChoice,
    codec,
    open_stores,
)

EXAMPLES = int(os.environ.get("PERFKIT_PROPERTY_EXAMPLES", "60"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Over the network each example costs ~2x: the remote backends get half the examples. Their
# protocol is also checked by the contract suite and under concurrency by the race test below.
REMOTE_SETTINGS = settings(SETTINGS, max_examples=max(1, EXAMPLES // 2))

# Small pools, so names collide, lookups of a name or id come before and after
# the write that takes it, and listings grow past a page of 1-3 rows.
SEEDED = ("ada", "bob", "cyd")
names = st.sampled_from([*SEEDED, "dee", "eve", "fay"])
user_ids = st.integers(1, 5)
bill_ids = st.integers(1, 5)
vote_ids = st.integers(1, 6)
pages = st.integers(1, 3)
limits = st.integers(1, 3)
choices = st.sampled_from(["yes", "no", "abstain"])
statuses = st.sampled_from(["draft", "introduced", "passed", "failed"])

# Tables no reference read counts, but whose count tag the stores' writes
# invalidate: an application's own cached listing over them must stay exact.
_APP_LISTINGS: dict[str, sa.Select[int]] = {
    "users": sa.select(User.id).order_by(User.id),
    "votes": sa.select(Vote.id).order_by(Vote.id),
}


Read = Callable[[Stores], Any]


class CachedStoreMachine(RuleBasedStateMachine):
    """Random writes and reads; every cached read must equal the uncached one."""

    make_backend: Callable[[], Backend] = staticmethod(MemoryBackend)
    cleanup: Callable[[Backend], None] = staticmethod(lambda backend: None)

    def __init__(self) -> None:
        super().__init__()
        self.engine = db.create_engine("sqlite://")
        self.backend = self.make_backend()
        self.cached: Stores = open_stores(
            self.engine, cache=self.make_cache(self.backend), schema="create"
        )
        self.truth: Stores = open_stores(self.engine, schema="none")
        _seed(self.engine)

    def make_cache(self, backend: Backend) -> Cache:
        """The cache the cached stores use (test_cache_mutants plants bugs in it)."""
        return Cache(backend, namespace="sm")

    def teardown(self) -> None:
        type(self).cleanup(self.backend)
        self.engine.dispose()

    def same(self, read: Read) -> None:
        expected, actual = _outcome(read, self.truth), _outcome(read, self.cached)
        assert expected == actual

    def write_then_read(self, write: Callable[[], object], *reads: Read) -> None:
        """Cache *reads*, run *write* through the cached stores, then check each read."""
        for read in reads:
            _outcome(read, self.cached)
        with contextlib.suppress(Conflict, NotFound):  # a refused write changes nothing
            write()
        for read in reads:
            self.same(read)

    # -- writes, each followed by the reads it must change ------------------------------

    @rule(name=names)
    def create_user(self, name: str) -> None:
        new = _next_id(self.truth, User)
        email = f"{name}@example.org"
        self.write_then_read(
            lambda: self.cached.users.create(username=name, email=email),
            lambda s: s.users.get_by_id(new),
            lambda s: s.users.get_by_username(name),
            lambda s: s.users.get_by_email(email),
            lambda s: _app_listing(s, "users", page=1, limit=1),
        )

    @rule(user=user_ids, name=names, fields=st.sampled_from(["username", "email", "both"]))
    def update_user(self, user: int, name: str, fields: str) -> None:
        username = None if fields == "email" else name
        email = None if fields == "username" else f"{name}@example.net"
        old = self.truth.users.get_by_id(user)
        usernames = {name} if old is None else {name, old.username}
        emails = {f"{name}@example.net"} if old is None else {f"{name}@example.net", old.email}
        self.write_then_read(
            lambda: self.cached.users.update(user, username=username, email=email),
            lambda s: s.users.get_by_id(user),
            *[lambda s, n=n: s.users.get_by_username(n) for n in sorted(usernames)],
            *[lambda s, e=e: s.users.get_by_email(e) for e in sorted(emails)],
        )

    @rule(sponsor=user_ids, title=names, status=statuses)
    def create_bill(self, sponsor: int, title: str, status: str) -> None:
        new = _next_id(self.truth, Bill)
        self.write_then_read(
            lambda: self.cached.bills.create(title=title, sponsor_id=sponsor, status=status),
            lambda s: s.bills.get_by_id(new),
            lambda s: s.bills.get_all(limit=1),
        )

    @rule(bill=bill_ids, title=st.none() | names, status=st.none() | statuses)
    def update_bill(self, bill: int, title: str | None, status: str | None) -> None:
        old = self.truth.bills.get_by_id(bill)
        filters = list(dict.fromkeys([status] if old is None else [old.status, status]))
        self.write_then_read(
            lambda: self.cached.bills.update(bill, title=title, status=status),
            lambda s: s.bills.get_by_id(bill),
            *[lambda s, f=f: s.bills.get_all(limit=1, status=f) for f in filters],
        )

    @rule(bill=bill_ids, user=user_ids, choice=choices)
    def cast(self, bill: int, user: int, choice: str) -> None:
        new = _next_id(self.truth, Vote)
        self.write_then_read(
            lambda: self.cached.votes.cast(bill_id=bill, user_id=user, choice=choice),
            lambda s: s.votes.get_by_id(new),
            lambda s: s.votes.counts(bill),
            lambda s: s.votes.get_by_bill_id(bill, limit=1),
            lambda s: s.votes.get_by_user_id(user, limit=1),
            lambda s: _app_listing(s, "votes", page=1, limit=1),
        )

    # -- reads: every cached read path of the stores ----------------------------------

    @rule(user=user_ids, page=pages, limit=limits)
    def read_user(self, user: int, page: int, limit: int) -> None:
        self.same(lambda s: s.users.get_by_id(user))
        self.same(lambda s: s.votes.get_by_user_id(user, page=page, limit=limit))

    @rule(name=names)
    def read_user_by_name(self, name: str) -> None:
        self.same(lambda s: s.users.get_by_username(name))
        self.same(lambda s: s.users.get_by_email(f"{name}@example.org"))
        self.same(lambda s: s.users.get_by_email(f"{name}@example.net"))

    @rule(bill=bill_ids, page=pages, limit=limits)
    def read_bill(self, bill: int, page: int, limit: int) -> None:
        self.same(lambda s: s.bills.get_by_id(bill))
        self.same(lambda s: s.votes.counts(bill))
        self.same(lambda s: s.votes.get_by_bill_id(bill, page=page, limit=limit))

    @rule(vote=vote_ids)
    def read_vote(self, vote: int) -> None:
        self.same(lambda s: s.votes.get_by_id(vote))

    @rule(page=pages, limit=limits, status=st.none() | statuses)
    def list_bills(self, page: int, limit: int, status: str | None) -> None:
        """Past one page of 1-3 rows, the total is the cached count."""
        self.same(lambda s: s.bills.get_all(page=page, limit=limit, status=status))

    @rule(table=st.sampled_from(sorted(_APP_LISTINGS)), page=pages, limit=limits)
    def list_app_table(self, table: str, page: int, limit: int) -> None:
        """An application's listing with count="cached" over a table the stores write."""
        self.same(lambda s: _app_listing(s, table, page=page, limit=limit))


def _seed(engine: sa.Engine) -> None:
    """Three users, three bills, two votes: every write has a target from the first step."""
    with engine.begin() as conn:
        conn.execute(
            sa.insert(User), [{"username": n, "email": f"{n}@example.org"} for n in SEEDED]
        )
        conn.execute(
            sa.insert(Bill),
            [
                {"title": "seed", "sponsor_id": 1, "status": BillStatus.DRAFT},
                {"title": "seed", "sponsor_id": 2, "status": BillStatus.INTRODUCED},
                {"title": "seed", "sponsor_id": 1, "status": BillStatus.DRAFT},
            ],
        )
        conn.execute(
            sa.insert(Vote),
            [
                {"bill_id": 1, "user_id": 1, "choice": VoteChoice.YES},
                {"bill_id": 1, "user_id": 2, "choice": VoteChoice.NO},
            ],
        )


def _next_id(stores: Stores, model: type[User | Bill | Vote]) -> int:
    """The id the next row of *model* gets: one past the largest (rows are never deleted)."""
    with stores.engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.coalesce(sa.func.max(model.id), 0) + 1)).scalar_one()
        )


def _outcome(read: Read, stores: Stores) -> Any:
    try:
        return read(stores)
    except (NotFound, InvalidInput) as exc:
        return type(exc), str(exc)


def _app_listing(stores: Stores, table: str, *, page: int, limit: int) -> Page[Any]:
    """A page of *table*'s ids, its total cached as an application would (exact without a cache)."""
    stmt = _APP_LISTINGS[table]
    with stores.engine.connect() as conn:
        if stores.cache is None:
            result = paginate(conn, stmt, page=page, limit=limit)
        else:
            result = paginate(
                conn, stmt, page=page, limit=limit, count="cached", cache=stores.cache
            )
    return result.map(tuple)


def test_cached_reads_equal_the_database_in_memory() -> None:
    """The invariant holds on the in-process backend."""
    run_state_machine_as_test(CachedStoreMachine, settings=SETTINGS)


def test_cached_reads_equal_the_database_in_redis(redis_url: str) -> None:
    """The invariant holds on real Redis (JSON round trip included)."""

    class RedisMachine(CachedStoreMachine):
        @staticmethod
        def make_backend() -> Backend:
            return RedisBackend(redis_url, prefix=f"perfkit-sm-{uuid.uuid4().hex}", codec=codec())

        @staticmethod
        def cleanup(backend: Backend) -> None:
            assert isinstance(backend, RedisBackend)
            _drop_prefix(backend)

    run_state_machine_as_test(RedisMachine, settings=REMOTE_SETTINGS)


def test_cached_reads_equal_the_database_tiered(redis_url: str) -> None:
    """The invariant holds with an L1 in front of Redis and pub/sub invalidation."""

    class TieredMachine(CachedStoreMachine):
        @staticmethod
        def make_backend() -> Backend:
            prefix = f"perfkit-sm-{uuid.uuid4().hex}"
            backend = TieredBackend(RedisBackend(redis_url, prefix=prefix, codec=codec()))
            assert backend.wait_subscribed(5)
            return backend

        @staticmethod
        def cleanup(backend: Backend) -> None:
            assert isinstance(backend, TieredBackend)
            backend.close()
            _drop_prefix(backend.l2)

    run_state_machine_as_test(TieredMachine, settings=REMOTE_SETTINGS)


def _drop_prefix(backend: RedisBackend) -> None:
    delete_keys(backend.client, backend.prefix)
    backend.close()


# -- one writer, many readers ------------------------------------------------------------

WRITES = 300
READERS = 6


class _Sequence:
    """A counter shared by all threads: its ticks order events across them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def tick(self) -> int:
        with self._lock:
            self._last += 1
            return self._last


class _History:
    """A value that only grows with the writes, and the tick at which each write returned."""

    def __init__(self, initial: int) -> None:
        self.ticks = [0]
        self.values = [initial]

    def record(self, tick: int, value: int) -> None:
        self.ticks.append(tick)
        self.values.append(value)

    def before(self, tick: int) -> int:
        """The value once every write that returned before *tick* is in."""
        return self.values[bisect.bisect_left(self.ticks, tick) - 1]


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads every 0.1 ms, not 5 ms: more interleavings, and no starved writer."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


@pytest.fixture(params=["memory", "redis", "tiered"])
def race_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh backend of each kind, closed afterwards."""
    if request.param == "memory":
        yield MemoryBackend()
        return
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    l2 = RedisBackend(url, prefix=prefix, codec=codec())
    if request.param == "redis":
        yield l2
        l2.close()
        return
    tiered = TieredBackend(l2)
    assert tiered.wait_subscribed(5)
    yield tiered
    tiered.close()


@pytest.mark.usefixtures("frequent_thread_switches")
def test_no_read_is_older_than_a_write_that_returned_before_it_began(
    race_backend: Backend, tmp_path: Any
) -> None:
    """One writer, six readers, a SQLite file: a read sees every write that returned before it."""
    engine = db.create_engine(f"sqlite:///{tmp_path / 'race.sqlite3'}")
    stores = open_stores(engine, cache=Cache(race_backend, namespace="race"))
    sponsor = stores.users.create(username="sponsor", email="sponsor@example.org").id
    voters = [
        stores.users.create(username=f"voter{i}", email=f"voter{i}@example.org").id
        for i in range(WRITES // 3)
    ]
    target = stores.bills.create(title="v0", sponsor_id=sponsor).id
    version, bills, votes = _History(0), _History(1), _History(0)

    # Each read path, with the history it must keep up with and what it saw of it.
    reads: dict[str, tuple[_History, Callable[[], int]]] = {
        "bills.get_by_id": (version, lambda: int(_title(stores, target).removeprefix("v"))),
        "bills.get_all": (bills, lambda: _total(stores.bills.get_all(limit=2))),
        "votes.counts": (votes, lambda: _tally(stores, target)),
        "votes.get_by_bill_id": (
            votes,
            lambda: _total(stores.votes.get_by_bill_id(target, limit=2)),
        ),
    }
    clock, done = _Sequence(), threading.Event()

    def write(k: int) -> None:
        if k % 3 == 0:
            stores.bills.update(target, title=f"v{k}")
            version.record(clock.tick(), k)
        elif k % 3 == 1:
            stores.bills.create(title=f"b{k}", sponsor_id=sponsor)
            bills.record(clock.tick(), bills.values[-1] + 1)
        else:
            stores.votes.cast(bill_id=target, user_id=voters[k // 3], choice="yes")
            votes.record(clock.tick(), votes.values[-1] + 1)

    def reader(path: str) -> list[tuple[str, int, int]]:
        read, seen = reads[path][1], []
        while not done.is_set():
            began = clock.tick()
            seen.append((path, began, read()))
        return seen

    with ThreadPoolExecutor(READERS) as pool:
        paths = list(reads)  # each reader keeps to one path, so cheap hits are not diluted
        futures = [pool.submit(reader, paths[i % len(paths)]) for i in range(READERS)]
        try:
            start = clock.tick()
            for k in range(1, WRITES + 1):
                write(k)
            end = clock.tick()
        finally:
            done.set()
        seen = [read for future in futures for read in future.result()]
    engine.dispose()

    stale = Counter(path for path, began, value in seen if value < reads[path][0].before(began))
    during = {path for path, began, _ in seen if start < began < end}
    assert set(reads) == during  # every path was read while the writes ran
    no_stale_reads: dict[str, int] = {}
    assert no_stale_reads == dict(stale)


def _title(stores: Stores, bill_id: int) -> str:
    bill = stores.bills.get_by_id(bill_id)
    assert bill is not None
    return bill.title


def _tally(stores: Stores, bill_id: int) -> int:
    counts = stores.votes.counts(bill_id)
    return counts.yes + counts.no + counts.abstain


def _total(page: Page[Any]) -> int:
    assert page.total is not None
    return page.total


# -- the fill race on the real store -----------------------------------------------------


@pytest.mark.parametrize("backend_kind", ["memory", "redis"])
def test_paused_read_cannot_cache_a_row_older_than_a_committed_write(
    backend_kind: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    """Read loads the bill, pauses; a write commits and invalidates; the read resumes."""
    engine = db.create_engine(f"sqlite:///{tmp_path / 'race.sqlite3'}")
    if backend_kind == "redis":
        url = request.getfixturevalue("redis_url")
        backend: Backend = RedisBackend(
            url, prefix=f"perfkit-race-{uuid.uuid4().hex}", codec=codec()
        )
    else:
        backend = MemoryBackend()
    stores = open_stores(engine, cache=Cache(backend, namespace="race"))
    sponsor = stores.users.create(username="sponsor", email="s@example.org")
    bill = stores.bills.create(title="Old Title", sponsor_id=sponsor.id)

    loaded, resume = threading.Event(), threading.Event()
    original = stores.bills._load_by_id

    def paused_load(bill_id: int) -> Any:
        row = original(bill_id)  # the database read happens here...
        if threading.current_thread().name == "slow-reader":
            loaded.set()
            resume.wait(5)  # ...and the cache store after this returns
        return row

    # Re-wrap the loader so the pause sits between the DB read and the cache store.
    stores.bills._by_id = stores.cache.cached(  # type: ignore[union-attr]
        key="bill:{bill_id}", tags=["bill:{bill_id}"]
    )(paused_load)

    seen: list[Any] = []
    reader = threading.Thread(
        target=lambda: seen.append(stores.bills.get_by_id(bill.id)), name="slow-reader"
    )
    reader.start()
    assert loaded.wait(5)
    stores.bills.update(bill.id, title="New Title")  # commits, then invalidates
    resume.set()
    reader.join()

    assert seen[0].title == "Old Title"  # the paused read began before the write
    assert stores.bills.get_by_id(bill.id).title == "New Title"  # type: ignore[union-attr]
    assert stores.cache.stats.stale == 1  # type: ignore[union-attr]
    if isinstance(backend, RedisBackend):
        _drop_prefix(backend)
    engine.dispose()


def test_invalidation_runs_after_commit_and_never_on_failure(tmp_path: Any) -> None:
    """A write invalidates only once its row is visible to others; a failed write never does."""
    engine = db.create_engine(f"sqlite:///{tmp_path / 'order.sqlite3'}")
    cache = Cache(MemoryBackend(), namespace="order")
    stores = open_stores(engine, cache=cache)
    observer = open_stores(engine, schema="none")  # another connection, no cache
    seen: list[tuple[tuple[str, ...], str | None]] = []
    original = cache.invalidate

    def spy(*, keys: Any = (), tags: Any = ()) -> None:
        user = observer.users.get_by_username("ada")
        seen.append((tuple(keys), None if user is None else user.username))
        original(keys=keys, tags=tags)

    cache.invalidate = spy  # type: ignore[method-assign]
    stores.users.create(username="ada", email="ada@example.org")
    with pytest.raises(Conflict):
        stores.users.create(username="ada", email="other@example.org")

    assert len(seen) == 1  # the failed create invalidated nothing
    keys, visible = seen[0]
    assert visible == "ada"  # the row was committed before the invalidation
    assert "user:name:ada" in keys
    engine.dispose()
