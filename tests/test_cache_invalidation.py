"""
Cache invalidation as a property: cached reads always equal the database.

A Hypothesis state machine creates and updates users, bills and votes through
cached reference stores in random order and checks every read against the
same store without a cache (the database is the model). It runs on the
memory backend, on real Redis, and on the tiered backend.

A second test forces the fill race on the real store: a read is paused
between its database query and its cache store while a write commits.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    multiple,
    rule,
    run_state_machine_as_test,
)

from perfkit import Conflict, InvalidInput, NotFound, db
from perfkit.cache import Backend, Cache, MemoryBackend, RedisBackend, TieredBackend
from perfkit.reference import Stores, codec, open_stores

EXAMPLES = int(os.environ.get("PERFKIT_PROPERTY_EXAMPLES", "60"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

names = st.text("abcdefgh", min_size=3, max_size=6)
choices = st.sampled_from(["yes", "no", "abstain"])
statuses = st.sampled_from(["draft", "introduced", "passed", "failed"])


class CachedStoreMachine(RuleBasedStateMachine):
    """Random writes and reads; every cached read must equal the uncached one."""

    make_backend: Callable[[], Backend] = staticmethod(MemoryBackend)
    cleanup: Callable[[Backend], None] = staticmethod(lambda backend: None)

    users = Bundle("users")
    bills = Bundle("bills")

    def __init__(self) -> None:
        super().__init__()
        self.engine = db.create_engine("sqlite://")
        self.backend = self.make_backend()
        self.cached: Stores = open_stores(self.engine, cache=Cache(self.backend, namespace="sm"))
        self.truth: Stores = open_stores(self.engine, create_schema=False)

    def teardown(self) -> None:
        type(self).cleanup(self.backend)
        self.engine.dispose()

    def same(self, read: Callable[[Stores], Any]) -> None:
        expected, actual = _outcome(read, self.truth), _outcome(read, self.cached)
        assert actual == expected

    # -- writes ------------------------------------------------------------------

    @rule(target=users, name=names)
    def create_user(self, name: str) -> Any:
        try:
            return self.cached.users.create(username=name, email=f"{name}@example.org").id
        except Conflict:
            return multiple()  # the name or the email is taken: nothing new

    @rule(user=users, name=names, email=st.booleans())
    def rename_user(self, user: int, name: str, email: bool) -> None:
        with contextlib.suppress(Conflict):
            self.cached.users.update(
                user, username=name, email=f"{name}@example.net" if email else None
            )

    @rule(target=bills, sponsor=users, title=names)
    def create_bill(self, sponsor: int, title: str) -> int:
        return self.cached.bills.create(title=title, sponsor_id=sponsor).id

    @rule(bill=bills, title=st.none() | names, status=st.none() | statuses)
    def update_bill(self, bill: int, title: str | None, status: str | None) -> None:
        self.cached.bills.update(bill, title=title, status=status)

    @rule(bill=bills, user=users, choice=choices)
    def cast(self, bill: int, user: int, choice: str) -> None:
        with contextlib.suppress(Conflict):
            self.cached.votes.cast(bill_id=bill, user_id=user, choice=choice)

    @rule(bill=consumes(bills))
    def forget_bill(self, bill: int) -> None:
        """Stop writing to a bill (keeps the bundle from growing without bound)."""

    # -- reads -------------------------------------------------------------------

    @rule(user=users | st.integers(1, 40))
    def read_user(self, user: int) -> None:
        self.same(lambda s: s.users.get_by_id(user))
        self.same(lambda s: s.votes.get_by_user_id(user, limit=5))

    @rule(name=names)
    def read_user_by_name(self, name: str) -> None:
        self.same(lambda s: s.users.get_by_username(name))
        self.same(lambda s: s.users.get_by_email(f"{name}@example.org"))
        self.same(lambda s: s.users.get_by_email(f"{name}@example.net"))

    @rule(bill=bills | st.integers(1, 40), page=st.integers(1, 3))
    def read_bill(self, bill: int, page: int) -> None:
        self.same(lambda s: s.bills.get_by_id(bill))
        self.same(lambda s: s.votes.counts(bill))
        self.same(lambda s: s.votes.get_by_bill_id(bill, page=page, limit=2))

    @rule(vote=st.integers(1, 60))
    def read_vote(self, vote: int) -> None:
        self.same(lambda s: s.votes.get_by_id(vote))


def _outcome(read: Callable[[Stores], Any], stores: Stores) -> Any:
    try:
        return read(stores)
    except (NotFound, InvalidInput) as exc:
        return type(exc), str(exc)


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

    run_state_machine_as_test(RedisMachine, settings=SETTINGS)


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

    run_state_machine_as_test(TieredMachine, settings=SETTINGS)


def _drop_prefix(backend: RedisBackend) -> None:
    names = list(backend.client.scan_iter(match=f"{backend.prefix}:*", count=1000))
    if names:
        backend.client.delete(*names)
    backend.close()


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
    observer = open_stores(engine, create_schema=False)  # another connection, no cache
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
