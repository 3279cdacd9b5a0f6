"""
``@cache.cached()`` and ``@cached_method()``: wrappers that keep the signature.

The hit path is compiled per decorated function: a wrapper with the
function's own parameters (so calling it binds arguments the way the
original does, and a hit builds no ``args`` tuple), the key written as an
f-string over those parameters, one backend ``get`` and two counters. A miss
leaves that path for the fill protocol of :mod:`perfkit.cache._fill`.
Functions whose signature cannot be written out (``*args``/``**kwargs``, or
keys that are not plain templates) get a generic wrapper with the same
behaviour.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import keyword
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Final,
    Generic,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    overload,
)

from perfkit._context import CURRENT

from . import _fill
from ._backend import MISSING
from ._flights import TaskFlights, ThreadFlights
from ._keys import SELF_NAMES, KeyMaker, KeySpec, TagSpec, key_source

if TYPE_CHECKING:
    from ._cache import Cache, Runtime

__all__ = [
    "AsyncCachedFunction",
    "AsyncCachedMethod",
    "CachedFunction",
    "CachedMethod",
    "Decorator",
    "MethodDecorator",
    "Options",
    "cached_method",
]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
S = TypeVar("S")

_NO_KWARGS: Final[dict[str, Any]] = {}


# -- what type checkers see ----------------------------------------------------------


class CachedFunction(Protocol[P, R_co]):
    """
    A cached function: call it like the original.

    On a method, reading it from an instance gives the bound form, whose
    ``invalidate`` and ``key_for`` take the arguments after ``self``.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       A protocol; methods keep their signature through ``__get__``.
    """

    __wrapped__: Callable[..., Any]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Drop the entry cached for these arguments."""
        ...

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The backend key the call with these arguments is cached under."""
        ...

    @overload
    def __get__(
        self, instance: None, owner: type[Any] | None = None
    ) -> CachedFunction[P, R_co]: ...
    @overload
    def __get__(
        self: CachedFunction[Concatenate[S, P2], R_co], instance: S, owner: type[Any] | None = None
    ) -> CachedFunction[P2, R_co]: ...


class AsyncCachedFunction(Protocol[P, R_co]):
    """
    A cached coroutine function: await it like the original.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       A protocol; methods keep their signature through ``__get__``.
    """

    __wrapped__: Callable[..., Any]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]: ...

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Drop the entry cached for these arguments."""
        ...

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The backend key the call with these arguments is cached under."""
        ...

    @overload
    def __get__(
        self, instance: None, owner: type[Any] | None = None
    ) -> AsyncCachedFunction[P, R_co]: ...
    @overload
    def __get__(
        self: AsyncCachedFunction[Concatenate[S, P2], R_co],
        instance: S,
        owner: type[Any] | None = None,
    ) -> AsyncCachedFunction[P2, R_co]: ...


# -- options and the decorator ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """The options of one ``cached()`` call, defaults resolved."""

    key: KeySpec = None
    ttl: float = 60.0
    tags: TagSpec = ()
    result_tags: Callable[[Any], Iterable[str]] | None = None
    cache_none: bool = True
    none_ttl: float | None = None
    jitter: float = 0.1


class Decorator:
    """What ``cache.cached(...)`` returns: apply it to a function or method."""

    __slots__ = ("_namespace", "_options", "_runtime")

    def __init__(self, runtime: Runtime, namespace: str, options: Options) -> None:
        none_ttl = options.ttl if options.none_ttl is None else options.none_ttl
        if options.ttl <= 0 or none_ttl <= 0:
            msg = "ttl and none_ttl must be positive"
            raise ValueError(msg)
        if not 0 <= options.jitter < 1:
            msg = f"jitter must be in [0, 1), not {options.jitter}"
            raise ValueError(msg)
        self._runtime = runtime
        self._namespace = namespace
        self._options = options

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncCachedFunction[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> CachedFunction[P, R]: ...
    def __call__(self, fn: Callable[..., Any]) -> Any:
        wrapper, is_method = self.build(fn)
        if is_method:  # bind invalidate and key_for to the instance too
            return _CachedMethod(wrapper)
        return wrapper

    def build(self, fn: Callable[..., Any]) -> tuple[Any, bool]:
        """The compiled wrapper of *fn*, and whether *fn* is a method (``self`` first)."""
        options = self._options
        keys = KeyMaker(
            fn,
            key=options.key,
            tags=options.tags,
            result_tags=options.result_tags,
            namespace=self._namespace,
        )
        ctx = _fill.FillContext(
            runtime=self._runtime,
            keys=keys,
            ttl=options.ttl,
            none_ttl=options.ttl if options.none_ttl is None else options.none_ttl,
            jitter=options.jitter,
            cache_none=options.cache_none,
        )
        is_async = inspect.iscoroutinefunction(fn)
        wrapper = _async_wrapper(fn, ctx) if is_async else _sync_wrapper(fn, ctx)
        return wrapper, bool(keys.skip)


# -- compiling the wrapper -------------------------------------------------------------

_SYNC_BODY: Final = """
def {name}({params}):
{key}
    if _pk_pending:
        return _pk_slow(_pk_key, {args}, {kwargs})
    try:
        _pk_value = {lookup}
    except _pk_Exception as _pk_exc:
        return _pk_down(_pk_exc, {args}, {kwargs})
    if _pk_value is not _pk_MISSING:
        _pk_rt.hits += 1
        _pk_t = _pk_current()
        if _pk_t is not None:
            _pk_t.cache_hits += 1
        return _pk_value
    return _pk_miss(_pk_key, {args}, {kwargs})
"""

_ASYNC_BODY: Final = """
async def {name}({params}):
{key}
    if not _pk_pending:
        try:
            _pk_value = _pk_peek(_pk_key)
        except _pk_Exception:
            _pk_value = _pk_MISSING
        if _pk_value is not _pk_MISSING:
            _pk_rt.hits += 1
            _pk_t = _pk_current()
            if _pk_t is not None:
                _pk_t.cache_hits += 1
            return _pk_value
    return await _pk_slow(_pk_key, {args}, {kwargs})
"""

_PEEK_THEN_GET: Final = "\n".join(
    [
        "_pk_peek(_pk_key)",
        "        if _pk_value is _pk_MISSING:",
        "            _pk_value = _pk_get(_pk_key)",
    ]
)

_KEY_BODY: Final = """
def _pk_key_for({params}):
{key}
    return _pk_key
"""


def _compile(fn: Callable[..., Any], keys: KeyMaker, body: str, names: dict[str, Any]) -> Any:
    """Compile *body* with *fn*'s signature; ``(wrapper, key_for)``."""
    spelled = _spell(keys.signature)
    lines = None if spelled is None else key_source(keys, spelled[2], names)
    if spelled is None or lines is None:
        params, args, kwargs = "*_pk_args, **_pk_kwargs", "_pk_args", "_pk_kwargs"
        names["_pk_keys"] = keys
        lines = ["_pk_key = _pk_keys.key(_pk_args, _pk_kwargs)"]
    else:
        params, args, kwargs = spelled[0], spelled[1], spelled[3]
        names.update(spelled[4])
    key = "\n".join("    " + line for line in lines)
    backend = names["_pk_rt"].backend
    # One call when peek() is get() (memory); else this process's level first (tiered L1).
    lookup = "_pk_get(_pk_key)" if backend.peek == backend.get else _PEEK_THEN_GET
    source = body.format(
        name="_pk_wrapper", params=params, key=key, args=args, kwargs=kwargs, lookup=lookup
    )
    source += _KEY_BODY.format(params=params, key=key)
    code = compile(source, f"<perfkit.cache wrapper of {keys.prefix}>", "exec")
    exec(code, names)  # noqa: S102 - source built from parameter names and repr()s only
    return names["_pk_wrapper"], names["_pk_key_for"]


def _spell(signature: inspect.Signature) -> tuple[str, str, str, str, dict[str, Any]] | None:
    """
    *signature* as source: parameters, the args tuple, the call, the kwargs dict,
    and the defaults they refer to; ``None`` if it cannot be written out.
    """
    params: list[str] = []
    positional: list[str] = []
    keyword_only: list[str] = []
    defaults: dict[str, Any] = {}
    marked_keyword = False
    kinds = inspect.Parameter
    for index, p in enumerate(signature.parameters.values()):
        if p.kind in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD):
            return None
        if not p.name.isidentifier() or keyword.iskeyword(p.name) or p.name.startswith("_pk_"):
            return None
        spelled = p.name
        if p.default is not p.empty:
            defaults[f"_pk_default{index}"] = p.default
            spelled += f"=_pk_default{index}"
        if p.kind is kinds.KEYWORD_ONLY:
            if not marked_keyword:
                params.append("*")
                marked_keyword = True
            keyword_only.append(p.name)
        else:
            positional.append(p.name)
        params.append(spelled)
        if p.kind is kinds.POSITIONAL_ONLY and (
            index + 1 == len(signature.parameters)
            or list(signature.parameters.values())[index + 1].kind is not kinds.POSITIONAL_ONLY
        ):
            params.append("/")
    args = "(" + "".join(f"{name}, " for name in positional) + ")"
    call = ", ".join([*positional, *(f"{name}={name}" for name in keyword_only)])
    kwargs = "{" + ", ".join(f"{name!r}: {name}" for name in keyword_only) + "}"
    return ", ".join(params), args, call, kwargs if keyword_only else "_pk_nokw", defaults


def _names(ctx: _fill.FillContext) -> dict[str, Any]:
    runtime = ctx.runtime
    return {
        "__builtins__": __builtins__,
        "_pk_pending": runtime.pending,
        "_pk_rt": runtime,
        "_pk_get": runtime.backend.get,
        "_pk_peek": runtime.backend.peek,
        "_pk_MISSING": MISSING,
        "_pk_current": CURRENT.get,
        "_pk_nokw": _NO_KWARGS,
        "_pk_Exception": Exception,
    }


def _sync_wrapper(fn: Callable[..., Any], ctx: _fill.FillContext) -> Any:
    flights = ThreadFlights()
    runtime, clock = ctx.runtime, ctx.clock

    def slow(key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        steps = _fill.call_steps(ctx, flights, key, args, kwargs)
        return _fill.run(steps, functools.partial(fn, *args, **kwargs), clock)

    def miss(key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        steps = _fill.miss_steps(ctx, flights, key, args, kwargs)
        return _fill.run(steps, functools.partial(fn, *args, **kwargs), clock)

    def down(exc: Exception, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        runtime.failed(exc)
        runtime.miss()
        runtime.loads += 1
        return fn(*args, **kwargs)

    names = _names(ctx) | {"_pk_slow": slow, "_pk_miss": miss, "_pk_down": down}
    wrapper, key_for = _compile(fn, ctx.keys, _SYNC_BODY, names)

    def invalidate(*args: Any, **kwargs: Any) -> None:
        steps = _fill.invalidate_steps(runtime, (key_for(*args, **kwargs),), ())
        _fill.run(steps, _never, clock)

    return _finish(wrapper, fn, invalidate, key_for)


def _async_wrapper(fn: Callable[..., Any], ctx: _fill.FillContext) -> Any:
    flights = TaskFlights()
    runtime, clock = ctx.runtime, ctx.clock

    async def slow(key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        steps = _fill.call_steps(ctx, flights, key, args, kwargs)
        return await _fill.arun(steps, functools.partial(fn, *args, **kwargs), clock)

    names = _names(ctx) | {"_pk_slow": slow}
    wrapper, key_for = _compile(fn, ctx.keys, _ASYNC_BODY, names)

    async def invalidate(*args: Any, **kwargs: Any) -> None:
        steps = _fill.invalidate_steps(runtime, (key_for(*args, **kwargs),), ())
        await _fill.arun(steps, _anever, clock)

    return _finish(wrapper, fn, invalidate, key_for)


def _finish(wrapper: Any, fn: Callable[..., Any], invalidate: Any, key_for: Any) -> Any:
    functools.update_wrapper(wrapper, fn)
    wrapper.invalidate = invalidate
    wrapper.key_for = key_for
    return wrapper


def _never() -> Any:  # pragma: no cover - invalidation steps never load
    raise AssertionError


async def _anever() -> Any:  # pragma: no cover
    raise AssertionError


# -- methods -----------------------------------------------------------------------------


class _CachedMethod:
    """
    A cached method: binds the wrapper, ``invalidate`` and ``key_for`` to the instance.

    The bound form is kept in the instance's ``__dict__`` (as
    :func:`functools.cached_property` does), so later reads of the attribute
    are a dict lookup and a call costs one C-level partial on top of a function's.
    """

    __slots__ = ("__dict__", "_fn", "_name")

    def __init__(self, fn: Any) -> None:
        self._fn = fn
        self._name: str | None = None
        functools.update_wrapper(self, fn)
        _look_like(self, fn)

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<cached method {self._fn.__qualname__}>"

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn.invalidate(*args, **kwargs)

    def key_for(self, *args: Any, **kwargs: Any) -> str:
        return cast("str", self._fn.key_for(*args, **kwargs))

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        bound = _BoundMethod(self._fn, instance)
        if self._name is not None:
            with contextlib.suppress(AttributeError, TypeError):  # no __dict__: bind each time
                vars(instance)[self._name] = bound
        return bound


class _BoundMethod(functools.partial[Any]):
    """A cached method bound to an instance (a partial: calling it costs no Python frame)."""

    __slots__ = ()

    def __init__(self, func: Any, instance: object, /) -> None:
        # Bound once per instance (kept in its __dict__): name it like the method it is.
        names = vars(self)
        for name in ("__name__", "__qualname__", "__doc__"):  # not __wrapped__: it has self
            with contextlib.suppress(AttributeError):
                names[name] = getattr(func, name)

    @property
    def invalidate(self) -> Callable[..., Any]:
        return functools.partial(self.func.invalidate, *self.args)  # type: ignore[attr-defined]

    @property
    def key_for(self) -> Callable[..., str]:
        return functools.partial(self.func.key_for, *self.args)  # type: ignore[attr-defined]


def _look_like(wrapper: Any, fn: Any) -> None:
    """
    Give a wrapper object the attributes :func:`inspect.iscoroutinefunction` reads on 3.11.

    So a cached coroutine method is a coroutine function on the class as on the instance.
    """
    wrapper.__code__ = fn.__code__
    wrapper.__defaults__ = fn.__defaults__
    wrapper.__kwdefaults__ = fn.__kwdefaults__


class _UncachedBound(functools.partial[Any]):
    """A :func:`cached_method` bound to an instance without a cache: every call loads."""

    __slots__ = ()

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        """Nothing is cached: nothing to drop (awaitable for a coroutine method)."""
        if inspect.iscoroutinefunction(self.func):
            return _nothing()
        return None

    def key_for(self, *args: Any, **kwargs: Any) -> str:
        """There is no key without a cache."""
        msg = f"{self.func.__qualname__} has no cache: its instance's cache attribute is None"
        raise LookupError(msg)


async def _nothing() -> None:
    return None


# -- a cache given at construction --------------------------------------------------------


class _InjectedMethod:
    """The runtime of :class:`CachedMethod` and :class:`AsyncCachedMethod`."""

    __slots__ = ("__dict__", "_attr", "_decorate", "_fn", "_lock", "_name", "_wrappers")

    def __init__(
        self, fn: Callable[..., Any], attr: str, decorate: Callable[[Cache], Decorator]
    ) -> None:
        if next(iter(inspect.signature(fn).parameters), None) not in SELF_NAMES:
            msg = f"cached_method() decorates methods: {fn.__qualname__} has no self"
            raise TypeError(msg)
        self._fn = fn
        self._attr = attr
        self._decorate = decorate
        self._name = fn.__name__
        # One compiled wrapper per cache, shared by every instance holding that cache, so
        # instances built per request share single-flight and compile nothing.
        self._wrappers: weakref.WeakKeyDictionary[Cache, Any] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        functools.update_wrapper(cast("Callable[..., Any]", self), fn)
        _look_like(self, fn)

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def _bind(self, instance: Any) -> Any:
        if instance is None:
            return self
        cache = getattr(instance, self._attr, None)
        if cache is None:  # no cache given: every call loads
            bound: Any = _UncachedBound(self._fn, instance)
        else:
            wrapper = self._wrappers.get(cache)
            if wrapper is None:
                with self._lock:
                    wrapper = self._wrappers.get(cache)
                    if wrapper is None:
                        wrapper = self._wrappers[cache] = self._decorate(cache).build(self._fn)[0]
            bound = _BoundMethod(wrapper, instance)
        try:
            vars(instance)[self._name] = bound  # later reads find it before this descriptor
        except TypeError:
            msg = f"cached_method() needs instances with a __dict__: {type(instance).__qualname__}"
            raise TypeError(msg) from None
        return bound


class CachedMethod(_InjectedMethod, Generic[S, P, R]):
    """
    A method whose instance supplies the cache: see :func:`cached_method`.

    .. versionadded:: 0.2.0
    """

    __slots__ = ()

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> CachedMethod[S, P, R]: ...
    @overload
    def __get__(self, instance: S, owner: type[Any] | None = None) -> CachedFunction[P, R]: ...
    def __get__(self, instance: Any, owner: Any = None) -> Any:
        return self._bind(instance)

    def __call__(self, instance: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.__get__(instance)(*args, **kwargs)


class AsyncCachedMethod(_InjectedMethod, Generic[S, P, R]):
    """
    A coroutine method whose instance supplies the cache: see :func:`cached_method`.

    .. versionadded:: 0.2.0
    """

    __slots__ = ()

    @overload
    def __get__(
        self, instance: None, owner: type[Any] | None = None
    ) -> AsyncCachedMethod[S, P, R]: ...
    @overload
    def __get__(self, instance: S, owner: type[Any] | None = None) -> AsyncCachedFunction[P, R]: ...
    def __get__(self, instance: Any, owner: Any = None) -> Any:
        return self._bind(instance)

    async def __call__(self, instance: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.__get__(instance)(*args, **kwargs)


class MethodDecorator(Protocol):
    """What :func:`cached_method` returns: apply it to a method."""

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[Concatenate[S, P], Coroutine[Any, Any, R]]
    ) -> AsyncCachedMethod[S, P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[S, P], R]) -> CachedMethod[S, P, R]: ...


def cached_method(
    *,
    cache: str = "cache",
    key: KeySpec = None,
    ttl: float | None = None,
    tags: TagSpec = (),
    result_tags: Callable[[Any], Iterable[str]] | None = None,
    cache_none: bool = True,
    none_ttl: float | None = None,
    jitter: float | None = None,
) -> MethodDecorator:
    """
    Cache a method in the :class:`~perfkit.cache.Cache` its instance holds.

    For a store that is given its cache at construction: the options are
    fixed where the method is defined, the cache is read from the instance
    attribute *cache* the first time the method is read from an instance
    (``None`` there: the method runs uncached). The other arguments are
    those of :meth:`Cache.cached`. The cached, bound method is kept in the
    instance's ``__dict__``, so later calls cost what a cached function's do.

    Example::

        class OrderStore:
            def __init__(self, engine: Engine, cache: Cache | None = None) -> None:
                self.engine, self.cache = engine, cache

            @cached_method(key="order:{order_id}", tags=["order:{order_id}"])
            def get(self, order_id: int) -> Order | None: ...

    .. versionadded:: 0.2.0
    """

    def decorate(fn: Callable[..., Any]) -> Any:
        def with_cache(instance_cache: Cache) -> Decorator:
            return instance_cache.cached(
                key=key,
                ttl=ttl,
                tags=tags,
                result_tags=result_tags,
                cache_none=cache_none,
                none_ttl=none_ttl,
                jitter=jitter,
            )

        if inspect.iscoroutinefunction(fn):
            return AsyncCachedMethod(fn, cache, with_cache)
        return CachedMethod(fn, cache, with_cache)

    return cast("MethodDecorator", decorate)
