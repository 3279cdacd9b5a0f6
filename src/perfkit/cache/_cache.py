"""
:class:`Cache`: a backend, its counters, invalidation, and the ``cached()`` decorator.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Collection, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, overload

from perfkit._clock import SYSTEM_CLOCK, Clock
from perfkit._context import CURRENT, REGISTRY

from . import _fill
from ._backend import Backend

if TYPE_CHECKING:
    from ._decorator import AsyncCachedFunction, CachedFunction, Decorator
    from ._keys import KeySpec, TagSpec

__all__ = ["Cache", "CacheStats", "Runtime"]

log = logging.getLogger("perfkit.cache")

P = ParamSpec("P")
R = TypeVar("R")

_MAX_PENDING: Final = 1_000
_REPLAY_EVERY: Final = 1.0

Pending = list[tuple[tuple[str, ...], tuple[str, ...]]]


@dataclass(frozen=True, slots=True)
class CacheStats:
    """
    A snapshot of a cache's counters since it was created.

    Attributes:
        hits: Reads answered from the cache.
        misses: Reads that had to load.
        loads: Loader calls made (fewer than misses thanks to single-flight).
        stale: Loaded values not stored because a write invalidated them meanwhile.
        errors: Backend failures, each answered by the loader instead.
        bypassed: Reads sent straight to the loader while invalidations were pending.

    .. versionadded:: 0.1.0
    """

    hits: int
    misses: int
    loads: int
    stale: int
    errors: int
    bypassed: int

    @property
    def hit_ratio(self) -> float:
        """Hits over reads, 0.0 before the first read."""
        reads = self.hits + self.misses
        return self.hits / reads if reads else 0.0


class Runtime:
    """
    What a :class:`Cache` shares with the functions it decorates: the backend,
    the counters, and the invalidations waiting for the backend to come back.

    ``pending`` is only ever changed in place, so decorated functions test it
    on every call without going through the cache.
    """

    __slots__ = (
        "__weakref__",
        "_last_log",
        "_last_snapshot_log",
        "_lock",
        "_next_replay",
        "_replayer",
        "_replaying",
        "backend",
        "bypassed",
        "clock",
        "errors",
        "hits",
        "lease",
        "loads",
        "log_interval",
        "misses",
        "pending",
        "stale",
    )

    def __init__(
        self, backend: Backend, *, clock: Clock, log_interval: float, lease: float | None
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.log_interval = log_interval
        self.lease = lease
        self.hits = self.misses = self.loads = self.stale = self.errors = self.bypassed = 0
        self.pending: Pending = []
        self._lock = threading.Lock()
        self._next_replay = 0.0
        self._replaying = threading.Lock()
        self._replayer: threading.Thread | None = None
        _RUNTIMES.add(self)
        self._last_log = float("-inf")
        self._last_snapshot_log = float("-inf")

    def hit(self) -> None:
        """Count a hit, here and in the request being served."""
        self.hits += 1
        timing = CURRENT.get()
        if timing is not None:
            timing.cache_hits += 1

    def miss(self) -> None:
        """Count a miss, here and in the request being served."""
        self.misses += 1
        timing = CURRENT.get()
        if timing is not None:
            timing.cache_misses += 1

    def failed(self, exc: BaseException) -> None:
        """Count a backend failure; log it at most once per ``log_interval``."""
        self.errors += 1
        now = self.clock.monotonic()
        if now - self._last_log >= self.log_interval:
            self._last_log = now
            log.warning(
                "cache backend %r failed (%s: %s); serving from the loader "
                "(%d backend errors so far)",
                self.backend,
                type(exc).__name__,
                exc,
                self.errors,
            )

    def old_snapshot(self, function: str) -> None:
        """Log (at most once per ``log_interval``) a fill not stored for reading an old snapshot."""
        now = self.clock.monotonic()
        if now - self._last_snapshot_log >= self.log_interval:
            self._last_snapshot_log = now
            log.warning(
                "%s loaded in a database transaction that began before the cache fill (a "
                "connection or session that had already read, or REPEATABLE READ): its value "
                "may predate a write invalidated meanwhile, so it was not cached. Read in a "
                "new transaction inside the loader, e.g. `with engine.connect() as conn:`",
                function,
            )

    def defer(self, keys: tuple[str, ...], tags: tuple[str, ...]) -> None:
        """
        Keep an invalidation the backend could not take, for replay: by the next call
        through the cache, or by a thread that tries every second until none is left, so
        other processes stop reading the invalidated entry even if this one goes idle.
        """
        with self._lock:
            if len(self.pending) >= _MAX_PENDING:
                # Too much to replay one by one: clear everything instead.
                self.pending[:] = [((), _fill.CLEAR)]
            else:
                self.pending.append((keys, tags))
            if self._replayer is None and self.clock is SYSTEM_CLOCK:
                # A fake clock moves only when a test says so: so do its replays.
                replayer = threading.Thread(
                    target=_replay_until_done,
                    args=(weakref.ref(self),),
                    name="perfkit-cache-replay",
                    daemon=True,
                )
                try:
                    replayer.start()
                except RuntimeError:  # shutting down, or no threads left: the next calls replay
                    return
                self._replayer = replayer

    def take_pending(self) -> Pending | None:
        """
        The pending invalidations to replay now, or ``None`` (too soon, or already replaying).

        They stay in :attr:`pending` until :meth:`replayed` removes them, so reads keep
        bypassing the cache until each one has gone through; one replay runs at a time.
        """
        if not self._replaying.acquire(blocking=False):
            return None
        now = self.clock.monotonic()
        if now < self._next_replay:
            self._replaying.release()
            return None
        self._next_replay = now + _REPLAY_EVERY
        with self._lock:
            return self.pending[:]

    def replayed(self, done: Pending) -> None:
        """Drop the invalidations of *done* that went through, and end the replay."""
        try:
            with self._lock:
                gone = {id(item) for item in done}
                self.pending[:] = [item for item in self.pending if id(item) not in gone]
        finally:
            self._replaying.release()


_RUNTIMES: Final[weakref.WeakSet[Runtime]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held by a parent's thread (a replay waiting on Redis) would stay held for good
    # in the child, which has no such thread: every runtime starts with fresh locks and no
    # replayer; its pending invalidations are replayed by its next call or invalidation.
    for runtime in list(_RUNTIMES):
        runtime._lock = threading.Lock()
        runtime._replaying = threading.Lock()
        runtime._replayer = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _replay_until_done(ref: weakref.ReferenceType[Runtime]) -> None:
    """
    Replay a runtime's pending invalidations every :data:`_REPLAY_EVERY` seconds until none
    is left (or the cache is gone), through the same steps and lock as the callers' replays.
    """
    pause = threading.Event()
    while True:
        pause.wait(_REPLAY_EVERY)  # the wall clock: a test's fake clock may never move
        runtime = ref()
        if runtime is None:
            return
        with runtime._lock:
            if not runtime.pending:
                runtime._replayer = None
                return
        _fill.run(_fill.replay_steps(runtime), _no_load, runtime.clock)
        del runtime  # hold no reference while waiting: the cache may be collected


def _no_load() -> None:
    raise AssertionError("a replay loads nothing")  # pragma: no cover


class Cache:
    """
    Caches function results in a backend and invalidates them by key or tag.

    Args:
        backend: Where entries live (:class:`MemoryBackend`,
            :class:`RedisBackend`, :class:`TieredBackend` or your own).
        namespace: Prefix of every key and tag, so caches can share a backend.
        ttl: Default seconds an entry lives.
        jitter: Fraction (0 to 1) by which each entry's TTL is shortened at
            random, so entries filled together do not expire together.
        clock: Monotonic clock (a fake one in tests).
        log_interval: Seconds between two log lines about backend failures.
        lease: With a backend that has leases (Redis, tiered), make
            concurrent misses of one key in *different processes* load once
            too: the loader takes a lease of this many seconds, the others
            wait for its value. A killed holder's lease expires by itself.
            ``None`` (the default): single-flight within each process only.

    Raises:
        ValueError: A bad option, or *lease* with a backend without leases.

    Example::

        cache = Cache(MemoryBackend(maxsize=10_000), namespace="bills", ttl=60)

        @cache.cached(key="user:{user_id}", tags=["user:{user_id}"])
        def get_user(user_id: int) -> User | None: ...

        get_user.invalidate(5)
        cache.invalidate_tags("user:5")

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        backend: Backend,
        *,
        namespace: str = "perfkit",
        ttl: float = 60.0,
        jitter: float = 0.1,
        clock: Clock = SYSTEM_CLOCK,
        log_interval: float = 60.0,
        lease: float | None = None,
    ) -> None:
        if ttl <= 0:
            msg = f"ttl must be positive, not {ttl}"
            raise ValueError(msg)
        if not 0 <= jitter < 1:
            msg = f"jitter must be in [0, 1), not {jitter}"
            raise ValueError(msg)
        if not namespace or any(c in namespace for c in ":#{}"):
            msg = f"namespace must be non-empty without ':#{{}}', not {namespace!r}"
            raise ValueError(msg)
        if lease is not None:
            if lease <= 0:
                msg = f"lease must be positive, not {lease}"
                raise ValueError(msg)
            if backend.leases is None:
                msg = f"lease= needs a backend with leases (Redis or tiered), not {backend!r}"
                raise ValueError(msg)
        self.namespace = namespace
        self.ttl = ttl
        self.jitter = jitter
        self._runtime = Runtime(backend, clock=clock, log_interval=log_interval, lease=lease)
        REGISTRY.caches.add(self)

    def __repr__(self) -> str:
        return f"Cache({self.backend!r}, namespace={self.namespace!r}, ttl={self.ttl})"

    @property
    def backend(self) -> Backend:
        """Where the entries live."""
        return self._runtime.backend

    @property
    def clock(self) -> Clock:
        """The monotonic clock TTLs and load times are measured on."""
        return self._runtime.clock

    @property
    def lease(self) -> float | None:
        """Seconds of a cross-process lease, or ``None`` (single-flight per process)."""
        return self._runtime.lease

    @property
    def pending_invalidations(self) -> int:
        """
        Invalidations the backend could not take yet (reads bypass the cache meanwhile).

        .. versionadded:: 0.2.0
        """
        return len(self._runtime.pending)

    @property
    def stats(self) -> CacheStats:
        """The counters as a :class:`CacheStats` snapshot."""
        rt = self._runtime
        return CacheStats(rt.hits, rt.misses, rt.loads, rt.stale, rt.errors, rt.bypassed)

    # -- naming ------------------------------------------------------------------

    def key(self, name: str) -> str:
        """The backend key of the cache key *name*."""
        return f"{self.namespace}:{name}"

    def tag(self, name: str) -> str:
        """The backend name of the tag *name*."""
        return f"{self.namespace}#{name}"

    # -- the decorator -----------------------------------------------------------

    @overload
    def cached(  # type: ignore[overload-overlap]
        self,
        fn: Callable[P, Coroutine[Any, Any, R]],
        /,
    ) -> AsyncCachedFunction[P, R]: ...
    @overload
    def cached(self, fn: Callable[P, R], /) -> CachedFunction[P, R]: ...
    @overload
    def cached(
        self,
        fn: None = None,
        /,
        *,
        key: KeySpec = None,
        ttl: float | None = None,
        tags: TagSpec = (),
        result_tags: Callable[[Any], Iterable[str]] | None = None,
        cache_none: bool = True,
        none_ttl: float | None = None,
        jitter: float | None = None,
    ) -> Decorator: ...
    def cached(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        key: KeySpec = None,
        ttl: float | None = None,
        tags: TagSpec = (),
        result_tags: Callable[[Any], Iterable[str]] | None = None,
        cache_none: bool = True,
        none_ttl: float | None = None,
        jitter: float | None = None,
    ) -> Any:
        """
        Cache the results of a function, method or coroutine function.

        Args:
            key: The cache key: a template formatted with the arguments by
                name (``"user:{user_id}"``), a callable taking the arguments,
                or ``None`` for the function's qualified name plus its
                arguments (ints, strings, floats, bools, ``None`` and enums).
            ttl: Seconds an entry lives (default: the cache's).
            tags: Tags of each entry: templates formatted like *key*, or a
                callable taking the arguments and returning tags.
            result_tags: A callable returning more tags from the loaded value.
            cache_none: Whether a ``None`` result is cached (negative caching).
            none_ttl: Seconds a ``None`` result lives (default: *ttl*).
            jitter: TTL jitter for this function (default: the cache's).

        The wrapper keeps the signature, for callers and for type checkers,
        on functions and methods; it gains ``invalidate(...)`` and
        ``key_for(...)``, which take the same arguments. Concurrent misses of
        one key run the loader once (single-flight) in threads and in tasks.
        On a method, ``self``/``cls`` is not part of the key.
        """
        from ._decorator import Decorator, Options  # noqa: PLC0415 - the two modules import each other

        options = Options(
            key=key,
            ttl=self.ttl if ttl is None else ttl,
            tags=tags,
            result_tags=result_tags,
            cache_none=cache_none,
            none_ttl=none_ttl,
            jitter=self.jitter if jitter is None else jitter,
        )
        decorator = Decorator(self._runtime, self.namespace, options)
        return decorator if fn is None else decorator(fn)

    # -- invalidation --------------------------------------------------------------

    def invalidate_keys(self, *names: str) -> None:
        """
        Drop the entries under cache keys *names* (as given to ``key=``).
        """
        self._invalidate(tuple(map(self.key, names)), ())

    def invalidate_tags(self, *names: str) -> None:
        """
        Drop every entry carrying one of the tags *names*.
        """
        self._invalidate((), tuple(map(self.tag, names)))

    def invalidate(self, *, keys: Collection[str] = (), tags: Collection[str] = ()) -> None:
        """
        Drop cache keys and tags in one backend operation.

        Raises:
            TypeError: *keys* or *tags* is a single string (a collection of
                characters to Python): pass ``["order:5"]``.

        Call it after the write's transaction commits. When it returns, no
        read that begins afterwards in this process returns an entry it
        dropped. If the backend is unreachable the invalidation is kept and
        retried, and reads bypass the cache until it goes through, so nothing
        stale is served when it is back.
        """
        _not_a_string(keys, tags)
        self._invalidate(tuple(map(self.key, keys)), tuple(map(self.tag, tags)))

    async def ainvalidate(self, *, keys: Collection[str] = (), tags: Collection[str] = ()) -> None:
        """
        Async :meth:`invalidate`.
        """
        _not_a_string(keys, tags)
        await self._ainvalidate(tuple(map(self.key, keys)), tuple(map(self.tag, tags)))

    async def ainvalidate_keys(self, *names: str) -> None:
        """
        Async :meth:`invalidate_keys`.
        """
        await self._ainvalidate(tuple(map(self.key, names)), ())

    async def ainvalidate_tags(self, *names: str) -> None:
        """
        Async :meth:`invalidate_tags`.
        """
        await self._ainvalidate((), tuple(map(self.tag, names)))

    def clear(self) -> None:
        """
        Drop every entry of the backend (kept for replay if it is unreachable).
        """
        rt = self._runtime
        _fill.run(_fill.clear_steps(rt), _no_loader, rt.clock)

    async def aclear(self) -> None:
        """
        Async :meth:`clear`.
        """
        rt = self._runtime
        await _fill.arun(_fill.clear_steps(rt), _no_aloader, rt.clock)

    def _invalidate(self, keys: tuple[str, ...], tags: tuple[str, ...]) -> None:
        rt = self._runtime
        _fill.run(_fill.invalidate_steps(rt, keys, tags), _no_loader, rt.clock)

    async def _ainvalidate(self, keys: tuple[str, ...], tags: tuple[str, ...]) -> None:
        rt = self._runtime
        await _fill.arun(_fill.invalidate_steps(rt, keys, tags), _no_aloader, rt.clock)


def _not_a_string(keys: Collection[str], tags: Collection[str]) -> None:
    for name, given in (("keys", keys), ("tags", tags)):
        if isinstance(given, str):
            msg = f"{name}= takes a collection of names, not the string {given!r}: pass [{given!r}]"
            raise TypeError(msg)


def _no_loader() -> Any:  # pragma: no cover - invalidation steps never load
    raise AssertionError


async def _no_aloader() -> Any:  # pragma: no cover
    raise AssertionError
