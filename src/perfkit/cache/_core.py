"""
:class:`Cache` and the ``@cache.cached()`` decorator.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import string
import threading
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, ParamSpec, TypeVar, cast, overload

from perfkit._clock import SYSTEM_CLOCK, Clock
from perfkit._context import CURRENT, REGISTRY

from ._backend import MISSING, Backend

__all__ = ["AsyncCachedFunction", "Cache", "CacheStats", "CachedFunction"]

log = logging.getLogger("perfkit.cache")

P = ParamSpec("P")
R = TypeVar("R")

TagSpec = Sequence[str] | Callable[..., Iterable[str]]
KeySpec = str | Callable[..., str] | None

_SELF_NAMES: Final = frozenset({"self", "cls"})
_MAX_PENDING: Final = 1_000


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
        lease: With a shared backend (Redis, tiered), make concurrent misses
            of one key in *different processes* load once too: the loader
            takes a lease of this many seconds in Redis, the others wait for
            its value. A killed holder's lease expires by itself. ``None``
            (the default): single-flight within each process only.

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
        self.backend = backend
        self.namespace = namespace
        self.ttl = ttl
        self.jitter = jitter
        self.clock = clock
        self.log_interval = log_interval
        if lease is not None and lease <= 0:
            msg = f"lease must be positive, not {lease}"
            raise ValueError(msg)
        self.lease = lease
        self.hits = self.misses = self.loads = self.stale = self.errors = self.bypassed = 0
        self._last_log = float("-inf")
        self._pending: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        self._pending_lock = threading.Lock()
        self._next_flush = 0.0
        REGISTRY.caches.add(self)

    def __repr__(self) -> str:
        return f"Cache({self.backend!r}, namespace={self.namespace!r}, ttl={self.ttl})"

    @property
    def stats(self) -> CacheStats:
        """The counters as a :class:`CacheStats` snapshot."""
        return CacheStats(
            self.hits, self.misses, self.loads, self.stale, self.errors, self.bypassed
        )

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
    ) -> _Decorator: ...
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

        The wrapper keeps the signature; it gains ``invalidate(*args,
        **kwargs)`` and ``key_for(*args, **kwargs)``. Concurrent misses of
        one key run the loader once (single-flight) in threads and in tasks.
        On a method, ``self``/``cls`` is not part of the key.
        """
        if fn is not None:
            return _Decorator(self, _Options(self, None, self.ttl, (), None, True, None, None))(fn)
        options = _Options(self, key, ttl, tags, result_tags, cache_none, none_ttl, jitter)
        return _Decorator(self, options)

    # -- invalidation --------------------------------------------------------------

    def invalidate_keys(self, *names: str) -> None:
        """
        Drop the entries under cache keys *names* (as given to ``key=``).
        """
        self._invalidate(tuple(self.key(name) for name in names), ())

    def invalidate_tags(self, *names: str) -> None:
        """
        Drop every entry carrying one of the tags *names*.
        """
        self._invalidate((), tuple(self.tag(name) for name in names))

    def invalidate(self, *, keys: Collection[str] = (), tags: Collection[str] = ()) -> None:
        """
        Drop cache keys and tags in one backend operation.

        Call it after the write's transaction commits. If the backend is
        unreachable the invalidation is kept and retried, and reads bypass the
        cache until it goes through, so nothing stale is served when it is back.
        """
        self._invalidate(
            tuple(self.key(name) for name in keys), tuple(self.tag(name) for name in tags)
        )

    async def ainvalidate(self, *, keys: Collection[str] = (), tags: Collection[str] = ()) -> None:
        """
        Async :meth:`invalidate`.
        """
        await self._ainvalidate(
            tuple(self.key(name) for name in keys), tuple(self.tag(name) for name in tags)
        )

    async def ainvalidate_tags(self, *names: str) -> None:
        """
        Async :meth:`invalidate_tags`.
        """
        await self._ainvalidate((), tuple(self.tag(name) for name in names))

    def clear(self) -> None:
        """
        Drop every entry of the backend.
        """
        self.backend.clear()

    def _invalidate(self, keys: tuple[str, ...], tags: tuple[str, ...]) -> None:
        if self._pending and not self._flush():
            self._defer(keys, tags)
            return
        try:
            self.backend.invalidate(keys=keys, tags=tags)
        except Exception as exc:
            self._failed(exc)
            self._defer(keys, tags)

    async def _ainvalidate(self, keys: tuple[str, ...], tags: tuple[str, ...]) -> None:
        if self._pending and not await self._aflush():
            self._defer(keys, tags)
            return
        try:
            await self.backend.ainvalidate(keys=keys, tags=tags)
        except Exception as exc:
            self._failed(exc)
            self._defer(keys, tags)

    def _defer(self, keys: tuple[str, ...], tags: tuple[str, ...]) -> None:
        with self._pending_lock:
            if len(self._pending) >= _MAX_PENDING:
                # Too much to replay one by one: clear everything instead.
                self._pending = [((), ("*",))]
            else:
                self._pending.append((keys, tags))

    def _take_pending(self) -> list[tuple[tuple[str, ...], tuple[str, ...]]] | None:
        now = self.clock.monotonic()
        if now < self._next_flush:
            return None
        self._next_flush = now + 1.0
        with self._pending_lock:
            pending, self._pending = self._pending, []
        return pending

    def _restore(self, pending: list[tuple[tuple[str, ...], tuple[str, ...]]]) -> None:
        with self._pending_lock:
            self._pending[:0] = pending

    def _flush(self) -> bool:
        """Replay pending invalidations; True when none are left."""
        pending = self._take_pending()
        if pending is None:
            return not self._pending
        for index, (keys, tags) in enumerate(pending):
            try:
                if tags == ("*",):
                    self.backend.clear()
                else:
                    self.backend.invalidate(keys=keys, tags=tags)
            except Exception as exc:
                self._failed(exc)
                self._restore(pending[index:])
                return False
        return not self._pending

    async def _aflush(self) -> bool:
        pending = self._take_pending()
        if pending is None:
            return not self._pending
        for index, (keys, tags) in enumerate(pending):
            try:
                if tags == ("*",):
                    self.backend.clear()
                else:
                    await self.backend.ainvalidate(keys=keys, tags=tags)
            except Exception as exc:
                self._failed(exc)
                self._restore(pending[index:])
                return False
        return not self._pending

    def _failed(self, exc: BaseException) -> None:
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


@dataclass(frozen=True, slots=True)
class _Options:
    cache: Cache
    key: KeySpec
    ttl: float | None
    tags: TagSpec
    result_tags: Callable[[Any], Iterable[str]] | None
    cache_none: bool
    none_ttl: float | None
    jitter: float | None


class _Decorator:
    __slots__ = ("_cache", "_options")

    def __init__(self, cache: Cache, options: _Options) -> None:
        self._cache = cache
        self._options = options

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncCachedFunction[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> CachedFunction[P, R]: ...
    def __call__(self, fn: Callable[..., Any]) -> Any:
        if inspect.iscoroutinefunction(fn):
            return AsyncCachedFunction(fn, self._options)
        return CachedFunction(fn, self._options)


class _KeyMaker:
    """Builds the backend key and tags of one call."""

    __slots__ = (
        "_cache",
        "_head",
        "_names",
        "_prefix",
        "_result_tags",
        "_sig",
        "_skip",
        "_spec",
        "_tags",
        "_template",
    )

    def __init__(self, fn: Callable[..., Any], options: _Options) -> None:
        self._cache = options.cache
        self._sig = inspect.signature(fn)
        params = list(self._sig.parameters.values())
        self._skip = 1 if params and params[0].name in _SELF_NAMES else 0
        self._names = tuple(p.name for p in params)
        self._spec = options.key
        self._tags = options.tags
        self._result_tags = options.result_tags
        self._prefix = f"{fn.__module__}.{fn.__qualname__}"
        self._head = self._cache.key(self._prefix + "(")
        self._template = (
            _compile_template(self._cache.key(options.key), self._names)
            if isinstance(options.key, str)
            else None
        )
        variadic = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)
        if options.key is None and variadic:
            msg = f"{self._prefix} takes *args/**kwargs: pass key= to cached()"
            raise TypeError(msg)

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if not kwargs and len(args) == len(self._names):
            return dict(zip(self._names, args, strict=True))
        bound = self._sig.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.arguments

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        spec = self._spec
        if spec is None:
            if not kwargs and len(args) == len(self._names):
                values: Sequence[Any] = args[self._skip :]
            else:
                values = list(self.arguments(args, kwargs).values())[self._skip :]
            if len(values) == 1:
                value = values[0]
                fast = _FAST_PARTS.get(type(value))
                return self._head + (fast(value) if fast else _key_part(value)) + ")"
            return self._head + ",".join(map(_key_part, values)) + ")"
        template = self._template
        if template is not None and not kwargs and len(args) == len(self._names):
            first, index, rest = template
            if not rest:
                return first + str(args[index])
            return (
                first
                + str(args[index])
                + "".join([literal if i < 0 else literal + str(args[i]) for literal, i in rest])
            )
        if isinstance(spec, str):
            name = spec.format_map(self.arguments(args, kwargs))
        else:
            name = spec(*args, **kwargs)
        return self._cache.key(name)

    def tags(self, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> tuple[str, ...]:
        spec = self._tags
        names: list[str] = []
        if spec:
            if callable(spec):
                names.extend(spec(*args, **kwargs))
            else:
                mapping = self.arguments(args, kwargs)
                names.extend(tag.format_map(mapping) for tag in spec)
        if self._result_tags is not None and value is not None:
            names.extend(self._result_tags(value))
        return tuple(self._cache.tag(name) for name in names)


def _compile_template(
    template: str, names: tuple[str, ...]
) -> tuple[str, int, tuple[tuple[str, int], ...]] | None:
    """
    Pre-split ``"ns:user:{user_id}"`` into literals and argument positions.

    Returns ``None`` (use ``str.format_map``) unless every field is a plain
    parameter name without conversion or format spec.
    """
    parts: list[tuple[str, int]] = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            parts.append((literal, -1))
            continue
        if spec or conversion or field not in names:
            return None
        parts.append((literal, names.index(field)))
    if not parts or parts[0][1] < 0:
        return None
    (first, index), rest = parts[0], tuple(parts[1:])
    return first, index, rest  # a trailing literal is (literal, -1)


_FAST_PARTS: Final[dict[type, Callable[[Any], str]]] = {
    int: int.__repr__,
    str: str.__repr__,
    float: float.__repr__,
}


def _key_part(value: Any) -> str:
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if not hasattr(value, "value") else repr(value.value)
    if hasattr(value, "value") and isinstance(value.value, str | int):  # enums
        return repr(value.value)
    msg = (
        f"cannot build a cache key from a {type(value).__qualname__}; "
        "pass key= to cached() to name the entry yourself"
    )
    raise TypeError(msg)


class _Flight:
    """One in-progress load that concurrent misses of the same key wait for."""

    __slots__ = ("done", "error", "token", "value")

    def __init__(self, token: int) -> None:
        self.token = token
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class _Base(Generic[P, R]):
    __slots__ = (
        "__dict__",
        "__wrapped__",
        "_cache",
        "_cache_none",
        "_fn",
        "_jitter",
        "_keys",
        "_none_ttl",
        "_ttl",
    )

    def __init__(self, fn: Callable[P, Any], options: _Options) -> None:
        self._fn = fn
        self._cache = options.cache
        self._keys = _KeyMaker(fn, options)
        self._ttl = options.ttl if options.ttl is not None else options.cache.ttl
        self._none_ttl = options.none_ttl if options.none_ttl is not None else self._ttl
        self._cache_none = options.cache_none
        self._jitter = options.jitter if options.jitter is not None else options.cache.jitter
        if self._ttl <= 0 or self._none_ttl <= 0:
            msg = "ttl and none_ttl must be positive"
            raise ValueError(msg)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The backend key the call with these arguments is cached under."""
        return self._keys.key(args, kwargs)

    def _entry_ttl(self, value: Any) -> float:
        ttl = self._none_ttl if value is None else self._ttl
        if self._jitter:
            ttl *= 1.0 - self._jitter * random.random()
        return ttl

    def _should_store(self, value: Any, started: float) -> bool:
        if value is None and not self._cache_none:
            return False
        return self._cache.clock.monotonic() - started <= self._cache.backend.max_load

    def _direct(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call the loader without the cache."""
        self._cache.loads += 1
        return self._fn(*args, **kwargs)

    def _take_lease(self, key: str) -> tuple[str | None, Any]:
        """
        Take the cross-process lease on *key*, or wait for its holder's value.

        Returns ``(holder, MISSING)`` when this process should load,
        ``(None, value)`` when another process loaded it meanwhile, and
        ``(None, MISSING)`` when leases are off or unavailable (just load).
        """
        cache = self._cache
        backend: Any = cache.backend
        if cache.lease is None or not hasattr(backend, "acquire_lease"):
            return None, MISSING
        clock = cache.clock
        deadline = clock.monotonic() + cache.lease
        delay = 0.002
        try:
            while True:
                holder = backend.acquire_lease(key, cache.lease)
                if holder is not None:
                    return holder, MISSING
                while True:  # another process is loading
                    clock.sleep(delay)
                    delay = min(delay * 2, 0.05)
                    value = backend.get(key)
                    if value is not MISSING:
                        return None, value
                    if clock.monotonic() >= deadline:
                        return None, MISSING
                    if not backend.lease_held(key):
                        break  # it gave up or died: try to take over
        except Exception as exc:  # fail open
            cache._failed(exc)
            return None, MISSING

    async def _atake_lease(self, key: str) -> tuple[str | None, Any]:
        """Async :meth:`_take_lease`."""
        cache = self._cache
        backend: Any = cache.backend
        if cache.lease is None or not hasattr(backend, "aacquire_lease"):
            return None, MISSING
        clock = cache.clock
        deadline = clock.monotonic() + cache.lease
        delay = 0.002
        try:
            while True:
                holder = await backend.aacquire_lease(key, cache.lease)
                if holder is not None:
                    return holder, MISSING
                while True:
                    await clock.asleep(delay)
                    delay = min(delay * 2, 0.05)
                    value = await backend.aget(key)
                    if value is not MISSING:
                        return None, value
                    if clock.monotonic() >= deadline:
                        return None, MISSING
                    if not await backend.alease_held(key):
                        break
        except Exception as exc:  # fail open
            cache._failed(exc)
            return None, MISSING

    def _release_lease(self, key: str, holder: str) -> None:
        try:
            self._cache.backend.release_lease(key, holder)  # type: ignore[attr-defined]
        except Exception as exc:  # fail open: the lease expires by itself
            self._cache._failed(exc)

    async def _arelease_lease(self, key: str, holder: str) -> None:
        try:
            await self._cache.backend.arelease_lease(key, holder)  # type: ignore[attr-defined]
        except Exception as exc:  # fail open: the lease expires by itself
            self._cache._failed(exc)

    def _store(
        self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any, token: int
    ) -> None:
        cache = self._cache
        try:
            tags = self._keys.tags(args, kwargs, value)
            ttl = self._entry_ttl(value)
            if not cache.backend.set(key, value, ttl=ttl, tags=tags, token=token):
                cache.stale += 1
        except Exception as exc:  # fail open
            cache._failed(exc)

    async def _astore(
        self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any, token: int
    ) -> None:
        cache = self._cache
        try:
            tags = self._keys.tags(args, kwargs, value)
            ttl = self._entry_ttl(value)
            if not await cache.backend.aset(key, value, ttl=ttl, tags=tags, token=token):
                cache.stale += 1
        except Exception as exc:  # fail open
            cache._failed(exc)


class CachedFunction(_Base[P, R]):
    """
    A cached sync function: call it like the original.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_flights", "_lock")

    def __init__(self, fn: Callable[P, R], options: _Options) -> None:
        super().__init__(fn, options)
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        cache = self._cache
        key = self._keys.key(args, kwargs)
        if cache._pending and not cache._flush():
            cache.bypassed += 1
            return cast("R", self._direct(args, kwargs))
        try:
            value = cache.backend.get(key)
        except Exception as exc:  # fail open
            cache._failed(exc)
            cache.misses += 1
            return cast("R", self._direct(args, kwargs))
        if value is not MISSING:
            cache.hits += 1
            timing = CURRENT.get()
            if timing is not None:
                timing.cache_hits += 1
            return cast("R", value)
        cache.misses += 1
        timing = CURRENT.get()
        if timing is not None:
            timing.cache_misses += 1
        return self._fill(key, args, kwargs)

    def _fill(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        cache = self._cache
        backend = cache.backend
        try:
            token = backend.fill_token()
        except Exception as exc:  # fail open
            cache._failed(exc)
            return cast("R", self._direct(args, kwargs))
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None and flight.token == token:
                leader = False
            else:
                flight = self._flights[key] = _Flight(token)
                leader = True
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return cast("R", flight.value)
        holder: str | None = None
        try:
            holder, shared = self._take_lease(key)
            if shared is not MISSING:
                flight.value = shared
                return cast("R", shared)
            started = cache.clock.monotonic()
            value = self._direct(args, kwargs)
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            flight.value = value
            if self._should_store(value, started):
                self._store(key, args, kwargs, value, token)
            return cast("R", value)
        finally:
            if holder is not None:
                self._release_lease(key, holder)
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
            flight.done.set()

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Drop the entry cached for these arguments."""
        self._cache._invalidate((self._keys.key(args, kwargs),), ())

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return _BoundCached(self, instance)


class AsyncCachedFunction(_Base[P, R]):
    """
    A cached coroutine function: await it like the original.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_flights",)

    def __init__(self, fn: Callable[P, Coroutine[Any, Any, R]], options: _Options) -> None:
        super().__init__(fn, options)
        self._flights: dict[tuple[int, str], tuple[int, asyncio.Future[Any]]] = {}

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        cache = self._cache
        key = self._keys.key(args, kwargs)
        if cache._pending and not await cache._aflush():
            cache.bypassed += 1
            return await self._load(args, kwargs)
        try:
            value = await cache.backend.aget(key)
        except Exception as exc:  # fail open
            cache._failed(exc)
            cache.misses += 1
            return await self._load(args, kwargs)
        if value is not MISSING:
            cache.hits += 1
            timing = CURRENT.get()
            if timing is not None:
                timing.cache_hits += 1
            return cast("R", value)
        cache.misses += 1
        timing = CURRENT.get()
        if timing is not None:
            timing.cache_misses += 1
        return await self._fill(key, args, kwargs)

    async def _load(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        loaded: Awaitable[R] = self._direct(args, kwargs)
        return await loaded

    async def _fill(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        try:
            token = await self._cache.backend.afill_token()
        except Exception as exc:  # fail open
            self._cache._failed(exc)
            return await self._load(args, kwargs)
        loop = asyncio.get_running_loop()
        slot = (id(loop), key)
        while (current := self._flights.get(slot)) is not None and current[0] == token:
            try:
                return cast("R", await asyncio.shield(current[1]))
            except _Abandoned:
                continue  # the leader was cancelled: try to lead ourselves
        future: asyncio.Future[Any] = loop.create_future()
        self._flights[slot] = (token, future)
        holder: str | None = None
        try:
            holder, shared = await self._atake_lease(key)
            if shared is not MISSING:
                future.set_result(shared)
                return cast("R", shared)
            started = self._cache.clock.monotonic()
            value = await self._load(args, kwargs)
        except asyncio.CancelledError:
            future.set_exception(_Abandoned())
            raise
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(value)
            if self._should_store(value, started):
                await self._astore(key, args, kwargs, value, token)
            return value
        finally:
            if holder is not None:
                await self._arelease_lease(key, holder)
            if self._flights.get(slot, (None, None))[1] is future:
                del self._flights[slot]
            if future.done() and not future.cancelled():
                future.exception()  # mark as retrieved when nobody waited

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Drop the entry cached for these arguments."""
        key = self._keys.key(args, kwargs)
        await self._cache._ainvalidate((key,), ())

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return _BoundCached(self, instance)


class _Abandoned(Exception):
    """The leading task of a single-flight load was cancelled."""


class _BoundCached:
    """A cached method bound to an instance."""

    __slots__ = ("_function", "_instance")

    def __init__(self, function: CachedFunction[Any, Any] | AsyncCachedFunction[Any, Any],
                 instance: object) -> None:  # fmt: skip
        self._function = function
        self._instance = instance

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function(self._instance, *args, **kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        return self._function.invalidate(self._instance, *args, **kwargs)

    def key_for(self, *args: Any, **kwargs: Any) -> str:
        return self._function.key_for(self._instance, *args, **kwargs)
