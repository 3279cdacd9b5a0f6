"""
Regression tests for the cache bugs of the second review (the reviewer's scripts, made small).

Each test fails on the code before the fixes (commit 8bf75b4). None sleeps: threads and
tasks meet on events, time moves on a FakeClock, and anything that would hang on the bug
waits with a deadline and fails instead.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy import event

from helpers import delete_keys
from perfkit import db
from perfkit.cache import MISSING, Cache, MemoryBackend, RedisBackend, TieredBackend, cached_method
from perfkit.pagination import paginate
from perfkit.testing import FakeClock

DEADLINE = 5.0
"""Seconds a test waits for something that never comes on the bug, before failing."""


class _Uncopyable:
    """A value copy.deepcopy cannot copy (it holds a lock), as a connection or client does."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    LOW = 1


class Mode(enum.StrEnum):
    FAST = "fast"


class Ratio(enum.Enum):
    HALF = 0.5


@dataclass(frozen=True)
class Quantity:
    value: int
    unit: str


class Point(NamedTuple):
    x: int
    name: str


def _clear_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete every key under *prefix*: what a Redis restart without persistence does."""
    delete_keys(client, prefix)


# -- H1: a value deepcopy cannot copy ------------------------------------------------------


def test_a_value_deepcopy_cannot_copy_leaves_no_dead_flight() -> None:
    """The first caller gets its uncopyable value, and the next miss loads instead of hanging."""
    cache = Cache(MemoryBackend(), namespace="reg")
    loaded: list[_Uncopyable] = []

    @cache.cached(key="conn")
    def load() -> _Uncopyable:
        loaded.append(_Uncopyable())
        return loaded[-1]

    first = load()
    later: list[_Uncopyable] = []
    reader = threading.Thread(target=lambda: later.append(load()), daemon=True)
    reader.start()
    reader.join(timeout=DEADLINE)

    assert not reader.is_alive(), "the second call joined a flight that never finishes"
    assert len(loaded) == 2
    assert first is loaded[0]
    assert later == [loaded[1]]


@pytest.mark.anyio
async def test_an_async_value_deepcopy_cannot_copy_leaves_no_dead_flight() -> None:
    """Async: the first await gets its uncopyable value, the next one loads instead of hanging."""
    cache = Cache(MemoryBackend(), namespace="reg")
    loaded: list[_Uncopyable] = []

    @cache.cached(key="conn")
    async def load() -> _Uncopyable:
        loaded.append(_Uncopyable())
        return loaded[-1]

    first = await load()
    second = await asyncio.wait_for(load(), DEADLINE)

    assert (first, second) == (loaded[0], loaded[1])


# -- H2: cancelled while releasing a lease -------------------------------------------------


class _StuckFirstRelease:
    """Leases whose first release never answers (a Redis round trip cut short by a cancel)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.releasing = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def arelease(self, key: str, holder: str) -> None:
        if not self.releasing.is_set():
            self.releasing.set()
            await asyncio.Event().wait()
        await self.inner.arelease(key, holder)


@pytest.mark.anyio
async def test_a_cancel_while_releasing_a_lease_leaves_no_dead_flight(
    redis_url: str, redis_prefix: str
) -> None:
    """A leader cancelled again during its lease release retires its flight: the next call loads."""
    backend = RedisBackend(redis_url, prefix=redis_prefix)
    leases = _StuckFirstRelease(backend.leases)
    backend.leases = leases
    cache = Cache(backend, namespace="reg", lease=5)
    loading = asyncio.Event()
    calls = 0

    @cache.cached(key="k")
    async def load() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            loading.set()
            await asyncio.Event().wait()  # a slow query; its client goes away
        return calls

    try:
        leader = asyncio.create_task(load())
        await asyncio.wait_for(loading.wait(), DEADLINE)
        leader.cancel()  # the client disconnected
        await asyncio.wait_for(leases.releasing.wait(), DEADLINE)
        leader.cancel()  # the server shuts down, or an outer timeout fires
        with pytest.raises(asyncio.CancelledError):
            await leader
        lease_keys = list(backend.client.scan_iter(match=f"{redis_prefix}:l:*"))
        backend.client.delete(*lease_keys)  # the unreleased lease expires by itself

        assert await asyncio.wait_for(load(), DEADLINE) == 2
    finally:
        await backend.aclose()
        backend.close()


# -- H3: pending invalidations stay pending until replayed ---------------------------------


class _FailsThenGates(MemoryBackend):
    """A backend whose next invalidation fails, and whose later ones wait for a gate."""

    def __init__(self, *, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.fail_next = False
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def invalidate(self, *, keys: Any = (), tags: Any = ()) -> None:
        if self.fail_next:
            self.fail_next = False
            msg = "backend down"
            raise ConnectionError(msg)
        if self.gate is not None:
            self.entered.set()
            if not self.gate.wait(timeout=DEADLINE):
                msg = "the test never opened the gate"
                raise TimeoutError(msg)
        super().invalidate(keys=keys, tags=tags)


def test_a_read_during_a_replay_never_gets_the_invalidated_value() -> None:
    """A read begun after invalidate() returned, while another read replays it, loads afresh."""
    clock = FakeClock()
    backend = _FailsThenGates(clock=clock)
    cache = Cache(backend, namespace="reg", clock=clock)
    row = {"v": "old"}

    @cache.cached(key="k")
    def read() -> str:
        return row["v"]

    assert read() == "old"
    row["v"] = "new"
    backend.fail_next = True
    cache.invalidate(keys=["k"])  # the backend is down: kept for replay
    assert cache.pending_invalidations == 1
    clock.advance(1.1)  # the replay is due
    backend.gate = threading.Event()
    replayer: list[str] = []
    thread = threading.Thread(target=lambda: replayer.append(read()), daemon=True)
    thread.start()
    try:
        assert backend.entered.wait(timeout=DEADLINE)  # the replay is under way
        during = read()
    finally:
        backend.gate.set()
        thread.join(timeout=DEADLINE)

    assert not thread.is_alive()
    assert (during, replayer, cache.pending_invalidations, read()) == ("new", ["new"], 0, "new")


def test_tiered_drops_l1_even_when_l2_fails(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An invalidation that fails in L2 still drops the entry from this process's L1."""
    backend = TieredBackend(RedisBackend(redis_url, prefix=redis_prefix))
    try:
        assert backend.wait_subscribed(DEADLINE)
        assert backend.set("reg:k", "old", ttl=60, tags=(), token=backend.fill_token())
        assert backend.l1.get("reg:k") == "old"

        def down(**_names: Any) -> None:
            msg = "redis down"
            raise redis.ConnectionError(msg)

        monkeypatch.setattr(backend.l2, "invalidate", down)
        with pytest.raises(redis.ConnectionError):
            backend.invalidate(keys=["reg:k"])

        assert backend.l1.get("reg:k") is MISSING
    finally:
        backend.close()


def test_tiered_close_clears_l1(redis_url: str, redis_prefix: str) -> None:
    """close() empties L1: nothing would drop its entries once the listener has stopped."""
    backend = TieredBackend(RedisBackend(redis_url, prefix=redis_prefix))
    try:
        assert backend.wait_subscribed(DEADLINE)
        assert backend.set("reg:k", "v", ttl=60, tags=(), token=backend.fill_token())
        assert backend.l1.get("reg:k") == "v"
    finally:
        backend.close()

    assert (len(backend.l1), backend.l1.get("reg:k")) == (0, MISSING)


# -- H4: default keys of enums and of other objects with .value ----------------------------


def test_enum_members_key_as_class_and_member_name() -> None:
    """An Enum, IntEnum or StrEnum member keys as <class>.<member>, apart from its value."""
    cache = Cache(MemoryBackend(), namespace="reg")

    @cache.cached()
    def echo(x: Any) -> Any:
        return x

    plain = [echo(1), echo("fast")]  # cached first, under their own keys
    members = [Color.RED, Level.LOW, Mode.FAST]
    results = [echo(member) for member in members]

    assert [type(value) for value in plain] == [int, str]
    assert [type(value) for value in results] == [Color, Level, Mode]  # not the cached 1, "fast"
    head = f"reg:{echo.__module__}.{echo.__qualname__}("
    assert [echo.key_for(member) for member in (*members, Ratio.HALF)] == [
        head + "Color.RED)",
        head + "Level.LOW)",
        head + "Mode.FAST)",
        head + "Ratio.HALF)",
    ]


def test_an_object_with_a_value_attribute_needs_a_key() -> None:
    """A non-enum argument with a .value attribute raises TypeError asking for key=."""
    cache = Cache(MemoryBackend(), namespace="reg")

    @cache.cached()
    def convert(q: Quantity) -> str:
        return f"{q.value} {q.unit}"

    with pytest.raises(TypeError, match="key="):
        convert.key_for(Quantity(5, "kg"))
    with pytest.raises(TypeError, match="key="):
        convert(Quantity(5, "lb"))


# -- H5: templates over *args --------------------------------------------------------------


def test_templates_over_varargs_bind_like_the_call() -> None:
    """f(1, (2, 3)) and f(1, 2, 3) have different keys under a template over *rest."""
    cache = Cache(MemoryBackend(), namespace="reg")

    @cache.cached(key="g:{a}:{rest}", tags=["g:{rest}"])
    def g(a: int, *rest: Any) -> tuple[int, tuple[Any, ...]]:
        return (a, rest)

    @cache.cached(key="pack:{items}")
    def pack(*items: Any) -> tuple[Any, ...]:
        return items

    assert g.key_for(1, 2, 3) != g.key_for(1, (2, 3))
    assert (g(1, 2, 3), g(1, (2, 3))) == ((1, (2, 3)), (1, ((2, 3),)))
    assert (pack(1, 2), pack((1, 2))) == ((1, 2), ((1, 2),))


# -- H6, M5: MemoryBackend stays bounded ---------------------------------------------------


def test_expired_entries_leave_the_lookup_dict() -> None:
    """Entries that expire as others are stored leave the lock-free dict: it stays <= maxsize."""
    clock = FakeClock()
    backend = MemoryBackend(maxsize=10, clock=clock)
    for i in range(200):
        assert backend.set(f"k{i}", {"i": i}, ttl=1.0, tags=(), token=backend.fill_token())
        clock.advance(2.0)

    assert len(backend._live) <= 10  # the dict hits read: not visible otherwise


def test_fences_are_pruned_by_invalidations_alone() -> None:
    """Invalidations without any set forget fences older than max_load: memory stays bounded."""
    clock = FakeClock()
    backend = MemoryBackend(clock=clock, max_load=1)
    for i in range(3 * 1024):
        backend.invalidate(keys=[f"reg:k{i}"], tags=[f"reg#t{i}"])
        clock.advance(1.0)  # far past max_load between two invalidations

    fences = backend._fences  # not visible otherwise
    assert "k:reg:k0" not in fences
    assert len(fences) < 2 * 1024 + 100  # two per invalidation since the last prune at most


# -- H7: caches can be collected -----------------------------------------------------------


def test_a_cache_used_by_cached_method_can_be_collected() -> None:
    """cached_method's per-cache wrapper does not keep its Cache alive."""

    class Store:
        def __init__(self, cache: Cache) -> None:
            self.cache = cache

        @cached_method(key="o:{oid}")
        def get(self, oid: int) -> dict[str, int]:
            return {"oid": oid}

    def use() -> tuple[weakref.ref[Cache], weakref.ref[Store]]:
        cache = Cache(MemoryBackend(), namespace="reg")
        store = Store(cache)
        assert store.get(1) == {"oid": 1}
        return weakref.ref(cache), weakref.ref(store)

    cache_ref, store_ref = use()
    gc.collect()

    assert (cache_ref(), store_ref()) == (None, None)


def test_a_cache_used_for_cached_counts_can_be_collected(tmp_path: Path) -> None:
    """paginate(count="cached") keeps no Cache alive once its caller dropped it."""
    engine = db.create_engine(f"sqlite:///{tmp_path / 'counts.sqlite3'}")
    metadata = sa.MetaData()
    items = sa.Table("items", metadata, sa.Column("id", sa.Integer, primary_key=True))
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(items.insert(), [{"id": n} for n in range(5)])

    def use() -> weakref.ref[Cache]:
        cache = Cache(MemoryBackend(), namespace="reg")
        with engine.connect() as conn:
            page = paginate(
                conn,
                sa.select(items).order_by(items.c.id),
                page=1,
                limit=2,
                count="cached",
                cache=cache,
            )
        assert page.total == 5
        return weakref.ref(cache)

    cache_ref = use()
    gc.collect()
    engine.dispose()

    assert cache_ref() is None


# -- M1, M3: the stale-snapshot check ------------------------------------------------------------


def test_a_nested_fill_on_an_old_snapshot_is_not_stored_outside_either(tmp_path: Path) -> None:
    """An outer fill whose value rests on an inner old-snapshot fill is not stored either."""
    engine = db.create_engine(f"sqlite:///{tmp_path / 'nested.sqlite3'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE u (id INTEGER PRIMARY KEY, name TEXT)")
        conn.exec_driver_sql("INSERT INTO u VALUES (1, 'old')")
    cache = Cache(MemoryBackend(), namespace="reg")
    with engine.connect() as request:
        request.exec_driver_sql("SELECT 1 FROM u").all()  # its snapshot is fixed (WAL)

        @cache.cached(key="user:{uid}")
        def user(uid: int) -> str:
            sql = "SELECT name FROM u WHERE id = ?"
            return str(request.exec_driver_sql(sql, (uid,)).scalar_one())

        @cache.cached(key="summary:{uid}")
        def summary(uid: int) -> str:
            return "summary of " + user(uid)

        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE u SET name = 'new' WHERE id = 1")
        cache.invalidate_keys("user:1", "summary:1")
        loaded = summary(1)
    engine.dispose()

    stored = [cache.backend.get(cache.key(name)) for name in ("user:1", "summary:1")]
    assert (loaded, stored, cache.stats.stale) == ("summary of old", [MISSING, MISSING], 2)


def test_a_begin_hook_that_emits_begin_does_not_flag_correct_loaders() -> None:
    """With SQLAlchemy's pysqlite recipe (a "begin" hook emitting BEGIN), good fills are stored."""
    engine = sa.create_engine("sqlite://")

    @event.listens_for(engine, "connect")
    def _no_driver_begin(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    db.detect_stale_loads(engine)
    cache = Cache(MemoryBackend(), namespace="reg")

    @cache.cached(key="one")
    def one() -> int:
        with engine.connect() as conn:  # a transaction begun inside the fill
            return int(conn.exec_driver_sql("SELECT 1").scalar_one())

    results = [one(), one(), one()]
    engine.dispose()

    assert (results, cache.stats.stale, cache.stats.hits) == ([1, 1, 1], 0, 2)


# -- M6: a single string as keys= or tags= -------------------------------------------------


@pytest.mark.parametrize("names", [{"keys": "order:5"}, {"tags": "order:5"}])
def test_invalidate_rejects_a_single_string(names: dict[str, str]) -> None:
    """invalidate(keys="x") or tags="x" raises TypeError instead of dropping each character."""
    cache = Cache(MemoryBackend(), namespace="reg")

    with pytest.raises(TypeError, match="order:5"):
        cache.invalidate(**names)


@pytest.mark.anyio
@pytest.mark.parametrize("names", [{"keys": "order:5"}, {"tags": "order:5"}])
async def test_ainvalidate_rejects_a_single_string(names: dict[str, str]) -> None:
    """ainvalidate(keys="x") or tags="x" raises TypeError too."""
    cache = Cache(MemoryBackend(), namespace="reg")

    with pytest.raises(TypeError, match="order:5"):
        await cache.ainvalidate(**names)


# -- M7: namedtuples and Rows are shared ---------------------------------------------------


def test_a_namedtuple_of_immutable_values_is_shared() -> None:
    """Two hits on a namedtuple of immutable values return the same object, not deep copies."""
    cache = Cache(MemoryBackend(), namespace="reg")

    @cache.cached(key="point")
    def point() -> Point:
        return Point(1, "x")

    first, second, third = point(), point(), point()

    assert first == Point(1, "x")
    assert second is third
    assert first is second


def test_a_sqlalchemy_row_of_immutable_values_is_shared() -> None:
    """Two hits on a SQLAlchemy Row of immutable values return the same object."""
    engine = sa.create_engine("sqlite://")
    cache = Cache(MemoryBackend(), namespace="reg")

    @cache.cached(key="row")
    def row() -> sa.Row[Any]:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT 1 AS id, 'x' AS name").one()

    first, second, third = row(), row(), row()
    engine.dispose()

    assert tuple(first) == (1, "x")
    assert second is third


# -- M9: Redis lost its sequence -----------------------------------------------------------


def test_redis_refuses_a_fill_newer_than_its_sequence(redis_url: str, redis_prefix: str) -> None:
    """A fill whose token predates Redis losing its data is not stored after a later write."""
    backend = RedisBackend(redis_url, prefix=redis_prefix)
    try:
        backend.invalidate(keys=["reg:other"])
        backend.invalidate(keys=["reg:other"])
        token = backend.fill_token()  # a fill begins (sequence 2) and loads the old row
        _clear_prefix(backend.client, redis_prefix)  # Redis restarts without its data
        backend.invalidate(keys=["reg:k"])  # a write after the restart: sequence 1
        assert backend.fill_token() < token

        stored = backend.set("reg:k", "old", ttl=60, tags=(), token=token)

        assert (stored, backend.get("reg:k")) == (False, MISSING)
    finally:
        backend.close()


# -- StopIteration from a loader -----------------------------------------------------------


def test_a_loader_raising_stopiteration_propagates_it() -> None:
    """A loader's StopIteration reaches the caller as StopIteration, not RuntimeError."""
    cache = Cache(MemoryBackend(), namespace="reg")

    @cache.cached(key="first:{n}")
    def first(n: int) -> int:
        return next(iter(range(n)))

    with pytest.raises(StopIteration):
        first(0)
    assert first(2) == 0


def test_a_bypassed_loader_raising_stopiteration_propagates_it() -> None:
    """While an invalidation is pending (reads bypass), StopIteration still reaches the caller."""
    clock = FakeClock()
    backend = _FailsThenGates(clock=clock)
    cache = Cache(backend, namespace="reg", clock=clock)

    @cache.cached(key="first:{n}")
    def first(n: int) -> int:
        return next(iter(range(n)))

    backend.fail_next = True
    cache.invalidate(keys=["x"])
    backend.fail_next = True  # the replay fails too: the read bypasses the cache
    assert cache.pending_invalidations == 1

    with pytest.raises(StopIteration):
        first(0)
    assert cache.stats.bypassed == 1


class _GetFails(MemoryBackend):
    """A memory backend whose reads fail, as an unreachable Redis's do."""

    def get(self, key: str) -> Any:
        raise ConnectionError("backend unreachable")

    peek = get


def test_a_read_the_backend_failed_counts_as_a_miss_of_the_request() -> None:
    """Fail-open reads count in the request's RequestTiming as misses, sync and async."""
    from perfkit._context import CURRENT, RequestTiming  # noqa: PLC0415

    cache = Cache(_GetFails(), namespace="down")

    @cache.cached(key="s")
    def read() -> int:
        return 1

    @cache.cached(key="a")
    async def aread() -> int:
        return 2

    timing = RequestTiming()
    token = CURRENT.set(timing)
    try:
        loaded = (read(), asyncio.run(aread()))
    finally:
        CURRENT.reset(token)

    assert (loaded, timing.cache_misses, timing.cache_hits) == ((1, 2), 2, 0)


class _DownThenBlocking(MemoryBackend):
    """Refuses the first invalidation (Redis down), then blocks the replay until released."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = False
        self.replaying = threading.Event()
        self.release = threading.Event()

    def invalidate(self, *, keys: Any = (), tags: Any = ()) -> None:
        if not self.refused:
            self.refused = True
            raise ConnectionError("down")
        if not self.release.is_set():
            self.replaying.set()
            self.release.wait(10)
        super().invalidate(keys=keys, tags=tags)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_during_a_replay_can_replay() -> None:
    """A fork while the replay thread waits on the backend: the child (without that thread)
    still replays its pending invalidation instead of bypassing its cache for good."""
    import os  # noqa: PLC0415

    backend = _DownThenBlocking()
    cache = Cache(backend, namespace="fork")
    cache.invalidate(keys=["k"])  # refused: pending, and the replay thread starts
    assert backend.replaying.wait(10)  # the thread's replay now waits inside the backend
    pid = os.fork()
    if pid == 0:  # the child: its copy of the backend answers; its own thread replays both
        backend.release.set()
        cache.invalidate(keys=["other"])  # within a second of the last try: kept, thread started
        deadline = time.monotonic() + 10
        while cache.pending_invalidations and time.monotonic() < deadline:
            time.sleep(0.05)
        os._exit(0 if cache.pending_invalidations == 0 else 1)
    backend.release.set()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
