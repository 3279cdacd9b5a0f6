"""
The fill protocol, once: lookup, single-flight, lease, load, fenced store.

Each sequence is a generator that does no I/O. It yields *operations* —
call a backend (or leases) method, run the loader, wait for a flight, sleep
— and receives their results (or has their exceptions thrown in). Two short
drivers perform them: :func:`run` calls and blocks, :func:`arun` awaits the
``a``-prefixed twin of each backend method. So the decisions (what counts as
a miss, when to bypass, when a fill is stale, fail-open) exist once, and the
sync and async paths cannot drift apart.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Final

from perfkit._context import FILLING, FillProbe

from ._backend import MISSING, Backend, Leases
from ._flights import Abandoned, Flight, TaskFlights, ThreadFlights
from ._values import share

if TYPE_CHECKING:
    from perfkit._clock import Clock

    from ._cache import Runtime
    from ._keys import KeyMaker

__all__ = ["FillContext", "Steps", "arun", "call_steps", "invalidate_steps", "replay_steps", "run"]

_CALL: Final = 0
_LOAD: Final = 1
_JOIN: Final = 2
_SLEEP: Final = 3
_DONE: Final = 4

_NO_KWARGS: Final[dict[str, Any]] = {}
LOAD: Final = (_LOAD, None)

Op = tuple[Any, ...]
Steps = Generator[Op, Any, Any]
"""A sequence of operations; its return value is the sequence's result."""

CLEAR: Final = ("*",)
"""The tags of a pending invalidation that stands for ``clear()``."""

_LEASE_POLL_START: Final = 0.002
_LEASE_POLL_MAX: Final = 0.05


def call(target: Any, name: str, *args: Any, **kwargs: Any) -> Op:
    """The operation ``target.name(*args, **kwargs)`` (``target.aname`` when async)."""
    return (_CALL, target, name, args, kwargs or _NO_KWARGS)


class FillContext:
    """Everything the steps of one cached function need, fixed at decoration."""

    __slots__ = (
        "backend",
        "cache_none",
        "clock",
        "jitter",
        "keys",
        "lease",
        "leases",
        "none_ttl",
        "runtime",
        "ttl",
    )

    def __init__(
        self,
        *,
        runtime: Runtime,
        keys: KeyMaker,
        ttl: float,
        none_ttl: float,
        jitter: float,
        cache_none: bool,
    ) -> None:
        self.runtime = runtime
        self.backend: Backend = runtime.backend
        self.clock: Clock = runtime.clock
        self.lease = runtime.lease
        self.leases: Leases | None = runtime.backend.leases if runtime.lease else None
        self.keys = keys
        self.ttl = ttl
        self.none_ttl = none_ttl
        self.jitter = jitter
        self.cache_none = cache_none

    def entry_ttl(self, value: Any) -> float:
        """The TTL of an entry holding *value*, jittered."""
        ttl = self.none_ttl if value is None else self.ttl
        if self.jitter:
            ttl *= 1.0 - self.jitter * random.random()
        return ttl


# -- the sequences -------------------------------------------------------------------


def call_steps(
    ctx: FillContext,
    flights: ThreadFlights | TaskFlights,
    key: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Steps:
    """A whole cached call: replay pending invalidations, look up, fill on a miss."""
    runtime, backend = ctx.runtime, ctx.backend
    if runtime.pending and not (yield from replay_steps(runtime)):
        runtime.bypassed += 1
        runtime.loads += 1
        return (yield LOAD)
    try:
        value = yield call(backend, "get", key)
    except Exception as exc:  # fail open
        runtime.failed(exc)
        runtime.miss()
        runtime.loads += 1
        return (yield LOAD)
    if value is not MISSING:
        runtime.hit()
        return value
    return (yield from miss_steps(ctx, flights, key, args, kwargs))


def miss_steps(
    ctx: FillContext,
    flights: ThreadFlights | TaskFlights,
    key: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Steps:
    """Count a miss and fill."""
    ctx.runtime.miss()
    return (yield from fill_steps(ctx, flights, key, args, kwargs))


def fill_steps(  # noqa: PLR0912 - the protocol, in the order it runs
    ctx: FillContext,
    flights: ThreadFlights | TaskFlights,
    key: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Steps:
    """Token, single-flight, lease, load, fenced store."""
    runtime, backend, clock = ctx.runtime, ctx.backend, ctx.clock
    try:
        token = yield call(backend, "fill_token")
    except Exception as exc:  # fail open
        runtime.failed(exc)
        runtime.loads += 1
        return (yield LOAD)
    while True:
        flight, leader = flights.claim(key, token)
        if leader:
            break
        try:
            return share((yield (_JOIN, flight)))
        except Abandoned:
            continue  # the leader was cancelled: try to lead ourselves
    value: Any = None
    error: BaseException | None = None
    holder: str | None = None
    probe = FillProbe()
    started = clock.monotonic()  # before any lease wait: a fill's age counts from its token
    try:
        if ctx.leases is not None:
            holder, value = yield from _lease_steps(ctx, ctx.leases, key)
            if value is not MISSING:
                return value  # another process loaded it meanwhile
        runtime.loads += 1
        value = yield (_LOAD, probe)
    except BaseException as exc:
        error = exc
        raise
    else:
        if probe.old_snapshot:
            runtime.stale += 1
            runtime.old_snapshot(ctx.keys.prefix)
        elif clock.monotonic() - started <= backend.max_load:
            yield from _store_steps(ctx, key, args=args, kwargs=kwargs, value=value, token=token)
        return value
    finally:
        # The flight is settled first and whatever happens: a flight left registered would
        # make every later miss of the key with this token wait for ever.
        shared: Any = None
        if error is None:
            try:  # followers get a value of their own: the leader's caller may change it
                shared = share(value)
            except Exception as exc:  # a value copy.deepcopy cannot copy: they get the error
                error = exc
        flights.finish(key, flight, shared, error)
        if holder is not None:
            assert ctx.leases is not None
            try:
                yield call(ctx.leases, "release", key, holder)
            except Exception as exc:  # fail open: the lease expires by itself
                runtime.failed(exc)


def _store_steps(
    ctx: FillContext,
    key: str,
    *,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    value: Any,
    token: int,
) -> Steps:
    """Store a loaded value, fenced by *token*; a refused store counts as stale."""
    if value is None and not ctx.cache_none:
        return
    runtime = ctx.runtime
    try:
        tags = ctx.keys.tags(args, kwargs, value)
        ttl = ctx.entry_ttl(value)
        if not (yield call(ctx.backend, "set", key, value, ttl=ttl, tags=tags, token=token)):
            runtime.stale += 1
    except Exception as exc:  # fail open
        runtime.failed(exc)


def _lease_steps(ctx: FillContext, leases: Leases, key: str) -> Steps:
    """
    Take the cross-process lease on *key*, or wait for its holder's value.

    Returns ``(holder, MISSING)`` when this process should load,
    ``(None, value)`` when another process loaded it meanwhile, and
    ``(None, MISSING)`` when the lease could not be had in time (just load).
    """
    seconds = ctx.lease
    assert seconds is not None
    clock = ctx.clock
    deadline = clock.monotonic() + seconds
    delay = _LEASE_POLL_START
    try:
        while True:
            holder = yield call(leases, "acquire", key, seconds)
            if holder is not None:
                return holder, MISSING
            while True:  # another process is loading
                yield (_SLEEP, delay)
                delay = min(delay * 2, _LEASE_POLL_MAX)
                value = yield call(ctx.backend, "get", key)
                if value is not MISSING:
                    return None, value
                if clock.monotonic() >= deadline:
                    return None, MISSING
                if not (yield call(leases, "held", key)):
                    break  # it gave up or died: try to take over
    except Exception as exc:  # fail open
        ctx.runtime.failed(exc)
        return None, MISSING


def replay_steps(runtime: Runtime) -> Steps:
    """Replay pending invalidations (one replay at a time, at most once a second).

    True when none are left.
    """
    pending = runtime.take_pending()
    if pending is None:
        return not runtime.pending
    backend = runtime.backend
    done: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    try:
        for item in pending:
            keys, tags = item
            if tags == CLEAR:
                yield call(backend, "clear")
            else:
                yield call(backend, "invalidate", keys=keys, tags=tags)
            done.append(item)
    except Exception as exc:
        runtime.failed(exc)
        return False
    finally:
        runtime.replayed(done)
    return not runtime.pending


def invalidate_steps(runtime: Runtime, keys: tuple[str, ...], tags: tuple[str, ...]) -> Steps:
    """Invalidate now, or keep it for replay if the backend cannot take it."""
    if runtime.pending and not (yield from replay_steps(runtime)):
        runtime.defer(keys, tags)
        return None
    try:
        if tags == CLEAR:
            yield call(runtime.backend, "clear")
        else:
            yield call(runtime.backend, "invalidate", keys=keys, tags=tags)
    except Exception as exc:
        runtime.failed(exc)
        runtime.defer(keys, tags)
    return None


def clear_steps(runtime: Runtime) -> Steps:
    """Clear the backend, or keep a clear for replay if it cannot take it."""
    return (yield from invalidate_steps(runtime, (), CLEAR))


# -- the drivers ---------------------------------------------------------------------


def run(steps: Steps, load: Callable[[], Any], clock: Clock) -> Any:
    """Perform *steps* by calling and blocking; *load* runs the loader."""
    result: Any = None
    error: BaseException | None = None
    while True:
        op = _advance(steps, result, error)
        kind = op[0]
        if kind == _DONE:
            return op[1]
        result = error = None
        try:
            if kind == _CALL:
                result = getattr(op[1], op[2])(*op[3], **op[4])
            elif kind == _LOAD:
                result = _load(load, op)
            elif kind == _JOIN:
                flight: Flight = op[1]
                result = flight.wait()
            else:
                clock.sleep(op[1])
        except BaseException as exc:  # handed to the steps, which decide
            error = _carry(exc)


def _advance(steps: Steps, result: Any, error: BaseException | None) -> Op:
    """Hand the last operation's outcome to *steps*: the next operation, or ``(_DONE, value)``."""
    try:
        return steps.send(result) if error is None else steps.throw(error)
    except StopIteration as stop:
        return (_DONE, stop.value)
    except _Carried as carried:
        raise carried.original from None


def _enter(op: Op) -> Any:
    """Put the fill's probe in context, chained to an enclosing fill's (nested cached calls)."""
    probe: FillProbe | None = op[1]
    if probe is None:
        return None  # not a fill (fail-open or bypass): an enclosing fill's probe stays
    probe.parent = FILLING.get()
    return FILLING.set(probe)


def _load(load: Callable[[], Any], op: Op) -> Any:
    """Run the loader with its fill's probe in context (``perfkit.db`` hooks report to it)."""
    token = _enter(op)
    try:
        return load()
    finally:
        if token is not None:
            FILLING.reset(token)


class _Carried(Exception):
    """A loader's StopIteration, carried through the steps (a generator cannot raise one)."""

    def __init__(self, original: StopIteration) -> None:
        super().__init__(original)
        self.original = original


def _carry(exc: BaseException) -> BaseException:
    return _Carried(exc) if isinstance(exc, StopIteration) else exc


async def arun(steps: Steps, load: Callable[[], Awaitable[Any]], clock: Clock) -> Any:
    """Perform *steps* by awaiting; backend calls go to the ``a``-prefixed twins."""
    result: Any = None
    error: BaseException | None = None
    while True:
        op = _advance(steps, result, error)
        kind = op[0]
        if kind == _DONE:
            return op[1]
        result = error = None
        try:
            if kind == _CALL:
                result = await getattr(op[1], "a" + op[2])(*op[3], **op[4])
            elif kind == _LOAD:
                token = _enter(op)
                try:
                    result = await load()
                finally:
                    if token is not None:
                        FILLING.reset(token)
            elif kind == _JOIN:
                flight: Flight = op[1]
                result = await flight.await_()
            else:
                await clock.asleep(op[1])
        except BaseException as exc:  # handed to the steps, which decide
            error = _carry(exc)
