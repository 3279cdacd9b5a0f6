"""
perfkit.cache on methods, on every kind of signature, and without shared mutable values.

``@cache.cached`` on methods (``self`` is not part of the key),
``cached_method`` (the cache given at construction), how arguments become
keys, what the wrappers keep of the original, and the copies the in-process
backend hands out. All on the in-process backend with a fake clock.
"""

# ruff: noqa: SIM300 - asserts read `expected == actual` (STYLE.md)

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import threading
from collections.abc import Callable
from types import MethodType
from typing import Any

import pytest

from perfkit.cache import Cache, MemoryBackend, cached_method
from perfkit.testing import FakeClock


def make_store(cache: Cache) -> tuple[type[Any], list[int]]:
    """A store class with sync and async cached methods, and its loads."""
    loads: list[int] = []

    class Store:
        @cache.cached(key="order:{order_id}")
        def get(self, order_id: int) -> str:
            """Read an order."""
            loads.append(order_id)
            return f"order {order_id}"

        @cache.cached(key="aorder:{order_id}")
        async def aget(self, order_id: int) -> str:
            """Read an order, async."""
            loads.append(order_id)
            return f"order {order_id}"

    return Store, loads


class _Counting(MemoryBackend):
    """A memory backend that counts fill tokens taken (each miss takes one)."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = 0
        self.changed = threading.Condition()

    def fill_token(self) -> int:
        with self.changed:
            self.tokens += 1
            self.changed.notify_all()
        return super().fill_token()

    def wait_tokens(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.tokens >= count, timeout=5)


# -- @cache.cached on methods ------------------------------------------------------------


def test_instances_share_entries(cache: Cache) -> None:
    """self is not part of the key: a second instance hits what the first loaded."""
    store_cls, loads = make_store(cache)
    first, second = store_cls(), store_cls()

    assert ["order 5", "order 5"] == [first.get(5), second.get(5)]
    assert [5] == loads
    assert (1, 1) == (cache.stats.hits, cache.stats.misses)


@pytest.mark.parametrize("bound", [True, False], ids=["instance", "class"])
def test_method_invalidate_bound_and_unbound(cache: Cache, bound: bool) -> None:
    """store.get.invalidate(5) and Store.get.invalidate(store, 5) both drop the entry."""
    store_cls, loads = make_store(cache)
    store, other = store_cls(), store_cls()
    store.get(5)
    store.get(6)

    if bound:
        store.get.invalidate(5)
    else:
        store_cls.get.invalidate(store, 5)
    other.get(5)
    other.get(6)

    assert [5, 6, 5] == loads


def test_method_key_for_bound_equals_unbound(cache: Cache) -> None:
    """The bound key_for takes the arguments after self, and gives the unbound one's key."""
    store_cls, _ = make_store(cache)
    store = store_cls()

    assert "t:order:5" == store.get.key_for(5)
    assert store_cls.get.key_for(store, 5) == store.get.key_for(5)
    assert store_cls.get.key_for(store, 5) == store_cls().get.key_for(order_id=5)
    assert store_cls.aget.key_for(store, 5) == store.aget.key_for(5)


def test_method_called_through_the_class(cache: Cache) -> None:
    """Store.get(store, 5) is the same cached call as store.get(5)."""
    store_cls, loads = make_store(cache)
    store = store_cls()

    assert ["order 5", "order 5"] == [store_cls.get(store, 5), store.get(5)]
    assert [5] == loads


@pytest.mark.anyio
async def test_async_methods_share_and_invalidate(cache: Cache) -> None:
    """Async methods: instances share entries; bound and unbound invalidate drop them."""
    store_cls, loads = make_store(cache)
    first, second = store_cls(), store_cls()

    assert ["order 5", "order 5"] == [await first.aget(5), await second.aget(5)]
    await first.aget.invalidate(5)
    await second.aget(5)
    await store_cls.aget.invalidate(first, 5)
    await store_cls.aget(second, 5)

    assert [5, 5, 5] == loads


def test_async_method_is_a_coroutine_function(cache: Cache) -> None:
    """An async cached method is a coroutine function on the class and on the instance."""
    store_cls, _ = make_store(cache)

    assert (True, True) == (
        inspect.iscoroutinefunction(store_cls.aget),
        inspect.iscoroutinefunction(store_cls().aget),
    )


def test_bound_method_keeps_name_and_doc(cache: Cache) -> None:
    """store.get has the name, qualified name and docstring of the method."""
    store_cls, _ = make_store(cache)
    store = store_cls()
    expected = ("get", store_cls.get.__qualname__, "Read an order.")

    assert expected == (store_cls.get.__name__, store_cls.get.__qualname__, store_cls.get.__doc__)
    assert expected == (
        getattr(store.get, "__name__", None),
        getattr(store.get, "__qualname__", None),
        store.get.__doc__,
    )


def test_classmethods_and_staticmethods(cache: Cache) -> None:
    """Under @classmethod cls is not part of the key; @staticmethod caches like a function."""
    loads: list[str] = []

    class Store:
        @classmethod
        @cache.cached(key="count:{status}")
        def count(cls, status: str) -> int:
            loads.append(status)
            return len(status)

        @staticmethod
        @cache.cached(key="price:{sku}")
        def price(sku: str) -> float:
            loads.append(sku)
            return 1.5

    class Sub(Store):
        pass

    # Any: mypy rejects these correct calls (tests/typing_cases/cached_calls.py has them).
    store: Any = Store
    sub: Any = Sub

    assert [4, 4, 4] == [store.count("open"), store().count("open"), sub.count("open")]
    assert "t:count:open" == store.count.key_for("open")
    store.count.invalidate("open")
    assert [1.5, 1.5] == [store.price("a"), store().price("a")]
    store().price.invalidate("a")
    store.count("open")
    store.price("a")

    assert ["open", "a", "open", "a"] == loads


# -- cached_method: the cache given at construction -------------------------------------


class OrderStore:
    """A store given its cache (or None) at construction."""

    def __init__(self, cache: Cache | None) -> None:
        self.cache = cache
        self.loads: list[int] = []

    @cached_method(key="order:{order_id}")
    def get(self, order_id: int) -> str:
        self.loads.append(order_id)
        return f"order {order_id}"

    @cached_method(key="aorder:{order_id}")
    async def aget(self, order_id: int) -> str:
        self.loads.append(order_id)
        return f"order {order_id}"


def test_cached_method_uses_the_instance_cache(clock: FakeClock) -> None:
    """Two instances with different caches each fill and hit their own."""
    one = Cache(MemoryBackend(clock=clock), namespace="one", clock=clock)
    two = Cache(MemoryBackend(clock=clock), namespace="two", clock=clock)
    first, second = OrderStore(one), OrderStore(two)

    results = [first.get(5), first.get(5), second.get(5), second.get(5), second.get(6)]

    assert ["order 5"] * 4 + ["order 6"] == results
    assert ([5], [5, 6]) == (first.loads, second.loads)
    assert ((1, 1), (1, 2)) == (
        (one.stats.hits, one.stats.misses),
        (two.stats.hits, two.stats.misses),
    )
    assert ("one:order:5", "two:order:5") == (first.get.key_for(5), second.get.key_for(5))


def test_cached_method_instances_on_one_cache_share_entries(cache: Cache) -> None:
    """Two instances holding the same cache share its entries, and invalidations."""
    first, second = OrderStore(cache), OrderStore(cache)
    first.get(5)
    second.get(5)
    second.get.invalidate(5)
    first.get(5)

    assert ([5, 5], []) == (first.loads, second.loads)


def test_cached_method_single_flight_across_instances() -> None:
    """Concurrent misses of one key through instances on one cache run the method once."""
    backend = _Counting()
    cache = Cache(backend, namespace="t", jitter=0)
    count = 4

    class Store:
        loads: list[int] = []  # noqa: RUF012 - shared by the instances on purpose

        def __init__(self, cache: Cache) -> None:
            self.cache = cache

        @cached_method(key="order:{order_id}")
        def get(self, order_id: int) -> int:
            Store.loads.append(order_id)
            assert backend.wait_tokens(count)  # every call is in the fill
            return order_id

    stores = [Store(cache) for _ in range(count)]  # one store per request, say
    threads = [threading.Thread(target=store.get, args=(5,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [5] == Store.loads


def test_cached_method_through_the_class(cache: Cache) -> None:
    """OrderStore.get(store, 5) is the cached call store.get(5)."""
    store = OrderStore(cache)

    assert ["order 5", "order 5"] == [OrderStore.get(store, 5), store.get(5)]
    assert [5] == store.loads


def test_cached_method_without_a_cache_loads_every_call() -> None:
    """cache=None on the instance: each call runs the method."""
    store = OrderStore(None)

    assert ["order 5", "order 5"] == [store.get(5), store.get(5)]
    assert [5, 5] == store.loads


def test_cached_method_without_a_cache_can_be_invalidated() -> None:
    """cache=None: invalidate() (which a write calls unconditionally) is a no-op."""
    store = OrderStore(None)
    store.get(5)

    store.get.invalidate(5)
    store.get(5)

    assert [5, 5] == store.loads


@pytest.mark.anyio
async def test_cached_method_async(cache: Cache) -> None:
    """An async cached_method fills once, hits, and is invalidated."""
    store = OrderStore(cache)

    assert ["order 5", "order 5"] == [await store.aget(5), await OrderStore.aget(store, 5)]
    await store.aget.invalidate(5)
    await store.aget(5)

    assert [5, 5] == store.loads


def test_cached_method_custom_attribute(cache: Cache) -> None:
    """cached_method(cache="_c") reads the cache from that attribute."""

    class Store:
        def __init__(self, cache: Cache) -> None:
            self._c = cache
            self.loads: list[int] = []

        @cached_method(cache="_c", key="x:{x}")
        def get(self, x: int) -> int:
            self.loads.append(x)
            return x

    store = Store(cache)

    assert [1, 1] == [store.get(1), store.get(1)]
    assert [1] == store.loads
    assert "t:x:1" == store.get.key_for(1)


def test_cached_method_needs_an_instance_dict(cache: Cache) -> None:
    """A slotted class without __dict__ gets a TypeError naming the class."""

    class Slotted:
        __slots__ = ("cache",)

        def __init__(self, cache: Cache) -> None:
            self.cache = cache

        @cached_method(key="x:{x}")
        def get(self, x: int) -> int:
            return x

    store = Slotted(cache)

    with pytest.raises(TypeError, match=r"cached_method\(\) needs instances with a __dict__: "):
        store.get(1)


def test_cached_method_needs_self() -> None:
    """cached_method on a function without self is a TypeError at decoration."""
    with pytest.raises(TypeError, match=r"cached_method\(\) decorates methods: .*get has no self"):

        @cached_method(key="x:{x}")
        def get(x: int) -> int:
            return x


# -- arguments and keys -------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "f:{x}:{y}"], ids=["default", "template"])
def test_keywords_and_defaults_give_the_positional_key(cache: Cache, key: str | None) -> None:
    """f(1), f(x=1), f(1, 2), f(1, y=2) and f(y=2, x=1) are one entry when y defaults to 2."""
    loads: list[tuple[int, int]] = []

    @cache.cached(key=key)
    def f(x: int, y: int = 2) -> int:
        loads.append((x, y))
        return x + y

    keys = {f.key_for(1), f.key_for(x=1), f.key_for(1, 2), f.key_for(1, y=2), f.key_for(y=2, x=1)}
    results = [f(1), f(x=1), f(1, 2), f(1, y=2), f(y=2, x=1), f(1, 3)]

    assert 1 == len(keys)
    assert [3, 3, 3, 3, 3, 4] == results
    assert [(1, 2), (1, 3)] == loads


@pytest.mark.parametrize("key", [None, "p:{a}:{b}:{c}"], ids=["default", "template"])
def test_positional_only_and_keyword_only(cache: Cache, key: str | None) -> None:
    """Positional-only and keyword-only parameters bind as in the original, defaults too."""
    loads: list[tuple[int, int, int]] = []

    @cache.cached(key=key)
    def f(a: int, b: int = 3, /, *, c: int = 4) -> int:
        loads.append((a, b, c))
        return a + b + c

    assert [8, 8, 8, 9] == [f(1), f(1, 3), f(1, c=4), f(1, c=5)]
    assert [(1, 3, 4), (1, 3, 5)] == loads
    assert f.key_for(1) == f.key_for(1, 3, c=4)
    with pytest.raises(TypeError, match="positional-only"):
        f(a=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional argument"):
        f(1, 2, 3)  # type: ignore[call-arg]


def test_variadic_functions_need_a_key(cache: Cache) -> None:
    """*args or **kwargs without key= is a TypeError at decoration."""

    def positional(*args: int) -> int:
        return sum(args)

    def keywords(**kwargs: int) -> int:
        return sum(kwargs.values())

    for fn in (positional, keywords):
        with pytest.raises(TypeError, match=r"takes \*args/\*\*kwargs: pass key="):
            cache.cached()(fn)


def test_variadic_functions_with_a_key_callable(cache: Cache) -> None:
    """With a key callable, *args/**kwargs functions are cached under its keys."""
    loads: list[tuple[tuple[int, ...], dict[str, int]]] = []

    def key(*args: int, **kwargs: int) -> str:
        return "sum:" + ",".join(map(str, args)) + ";" + ",".join(sorted(kwargs))

    @cache.cached(key=key)
    def total(*args: int, **kwargs: int) -> int:
        loads.append((args, kwargs))
        return sum(args) + sum(kwargs.values())

    assert [3, 3, 6] == [total(1, 2), total(1, 2), total(1, 2, z=3)]
    assert [((1, 2), {}), ((1, 2), {"z": 3})] == loads
    assert "t:sum:1,2;z" == total.key_for(1, 2, z=3)


def test_template_with_format_specs_and_conversions(cache: Cache) -> None:
    """Format specs and conversions in a key template format as str.format does."""

    @cache.cached(key="f:{x:>5}|{y!r}|{z:.2f}")
    def f(x: str, y: str, z: float) -> str:
        return x

    assert "t:" + "f:{x:>5}|{y!r}|{z:.2f}".format(x="ab", y="c", z=1.5) == f.key_for("ab", "c", 1.5)
    assert "t:f:   ab|'c'|1.50" == f.key_for("ab", "c", 1.5)


@dataclasses.dataclass(frozen=True)
class User:
    id: int
    name: str


def test_template_with_attribute_and_item_access(cache: Cache) -> None:
    """Templates like "{user.id}", "{d[k]}" or "{x:{width}}" format as str.format does."""
    loads: list[str] = []

    @cache.cached(key="user:{user.id}", tags=["user:{user.id}"])
    def name(user: User) -> str:
        loads.append(user.name)
        return user.name

    @cache.cached(key="item:{d[k]}")
    def item(d: dict[str, int]) -> int:
        return d["k"]

    @cache.cached(key="pad:{x:{width}}")
    def pad(x: int, width: int) -> int:
        return x

    assert ["ada", "ada"] == [name(User(3, "ada")), name(User(3, "bob"))]
    cache.invalidate_tags("user:3")
    assert "bob" == name(User(3, "bob"))
    assert ["ada", "bob"] == loads
    assert "t:user:3" == name.key_for(User(3, "x"))
    assert "t:item:7" == item.key_for({"k": 7})
    assert "t:pad:   3" == pad.key_for(3, 4)


@pytest.mark.parametrize("key", [None, "k:{_pk_key}:{_pk_value}"], ids=["default", "template"])
def test_parameters_named_like_the_wrappers_internals(cache: Cache, key: str | None) -> None:
    """Parameters named _pk_key, _pk_value or _pk_rt are keyed and passed like any other."""
    loads: list[int] = []

    @cache.cached(key=key)
    def f(_pk_key: int, _pk_value: int = 0, *, _pk_rt: int = 1) -> int:
        loads.append(_pk_key)
        return _pk_key * 100 + _pk_value * 10 + _pk_rt

    assert [101, 101, 121, 101] == [f(1), f(_pk_key=1), f(1, 2), f(1, _pk_rt=1)]
    assert [1, 1] == loads
    assert inspect.signature(f.__wrapped__) == inspect.signature(f)


@pytest.mark.anyio
async def test_async_parameters_named_like_the_wrappers_internals(cache: Cache) -> None:
    """An async function with a _pk_key parameter is cached like any other."""
    loads: list[int] = []

    @cache.cached()
    async def f(_pk_key: int) -> int:
        loads.append(_pk_key)
        return _pk_key

    assert [1, 1] == [await f(1), await f(_pk_key=1)]
    assert [1] == loads


def test_parameters_named_like_builtins(cache: Cache) -> None:
    """Parameters named type or map (which shadow builtins) work with the default key."""

    @cache.cached()
    def by_type(type: str) -> str:
        return type

    @cache.cached()
    def by_map(map: str) -> str:
        return map

    assert ["bill", "bill"] == [by_type("bill"), by_type("bill")]
    assert ["m", "m"] == [by_map("m"), by_map("m")]
    assert by_type.key_for("bill").endswith("by_type('bill')")


def _plain(a: int, b: str = "x", *, c: float = 1.0) -> str:
    return b


def _positional(a: int, /, b: int = 2, *, c: int) -> int:
    return a


def _variadic(a: int, *rest: int, flag: bool = False, **extra: str) -> int:
    return a


async def _coroutine(a: int, b: int = 2) -> int:
    return a


@pytest.mark.parametrize(
    ("fn", "key"),
    [
        (_plain, None),
        (_plain, "p:{a}:{b}"),
        (_positional, None),
        (_variadic, "v:{a}"),
        (_coroutine, None),
    ],
)
def test_signature_is_kept(cache: Cache, fn: Callable[..., Any], key: str | None) -> None:
    """inspect.signature of the wrapper equals the original's."""
    assert inspect.signature(fn) == inspect.signature(cache.cached(key=key)(fn))


def test_method_signatures_are_kept(cache: Cache) -> None:
    """Methods keep their signature on the class (with self) and bound (without)."""

    def get(self: Any, x: int, *, y: int = 0) -> int:
        return x

    class Store:
        cached = cache.cached(key="x:{x}")(get)
        injected = cached_method(key="x:{x}")(get)

        def __init__(self) -> None:
            self.cache = cache

    store = Store()
    method = inspect.signature(get)
    bound = inspect.signature(MethodType(get, store))

    assert [method, method] == [inspect.signature(Store.cached), inspect.signature(Store.injected)]
    assert [bound, bound] == [inspect.signature(store.cached), inspect.signature(store.injected)]


# -- no shared mutable values --------------------------------------------------------------


@pytest.mark.parametrize(
    "loaded",
    [{"a": 1, "b": "x"}, [1, 2, 3], {"items": [1, 2], "meta": {"n": 1}}],
    ids=["flat dict", "flat list", "nested"],
)
def test_mutating_a_hit_does_not_change_the_next(cache: Cache, loaded: Any) -> None:
    """Changing the value a call returned (nested parts too) leaves the entry as loaded."""

    @cache.cached(key="v")
    def read() -> Any:
        return copy.deepcopy(loaded)

    for _ in range(2):  # the miss's value, then a hit's
        value = read()
        if isinstance(value, list):
            value.append(4)
        else:
            value["a"] = "changed"
            if "items" in value:
                value["items"].append(3)
                value["meta"]["n"] = 2

    assert loaded == read()
    assert read() is not read()


def test_mutating_the_loaders_object_does_not_change_the_entry(cache: Cache) -> None:
    """The loader changing the object it returned, after the call, does not reach the cache."""
    source: dict[str, Any] = {"items": [1, 2], "n": 1}

    @cache.cached(key="v")
    def read() -> dict[str, Any]:
        return source

    read()
    source["n"] = 2
    source["items"].append(3)

    assert {"items": [1, 2], "n": 1} == read()


def test_single_flight_followers_get_their_own_copies() -> None:
    """Threads that joined one load each get an equal value, none the same object."""
    backend = _Counting()
    cache = Cache(backend, namespace="t", jitter=0)
    threads_count = 8

    @cache.cached(key="v")
    def read() -> dict[str, Any]:
        assert backend.wait_tokens(threads_count)  # every thread is in the fill
        return {"items": [1, 2], "n": 1}

    results: list[dict[str, Any]] = []
    threads = [
        threading.Thread(target=lambda: results.append(read())) for _ in range(threads_count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert 1 == cache.stats.loads
    assert [{"items": [1, 2], "n": 1}] * threads_count == results
    assert threads_count == len({id(result) for result in results})
    assert threads_count == len({id(result["items"]) for result in results})


class _Part:
    """A part of a loaded value whose copying, in a follower, waits for *gate*."""

    def __init__(self, n: int, leader: set[int], gate: threading.Event) -> None:
        self.n, self.leader, self.gate = n, leader, gate

    def __deepcopy__(self, memo: dict[int, Any]) -> _Part:
        if threading.get_ident() not in self.leader:
            self.gate.wait(5)  # a follower copies only after the leader's caller changed its value
        return _Part(self.n, self.leader, self.gate)


def test_leader_changing_its_value_does_not_reach_followers() -> None:
    """The thread whose call loaded a value changes it: the followers' values are as loaded."""
    backend = _Counting()
    cache = Cache(backend, namespace="t", jitter=0)
    leader: set[int] = set()
    changed = threading.Event()

    @cache.cached(key="v")
    def read() -> dict[str, list[_Part]]:
        leader.add(threading.get_ident())
        assert backend.wait_tokens(4)
        return {"parts": [_Part(1, leader, changed)]}

    seen: dict[str, list[int]] = {}

    def call(name: str) -> None:
        value = read()
        if threading.get_ident() in leader:
            value["parts"].append(_Part(2, leader, changed))
            changed.set()
            name = "leader"
        seen[name] = [part.n for part in value["parts"]]

    threads = [threading.Thread(target=call, args=(f"follower {i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert 1 == cache.stats.loads
    assert [1, 2] == seen.pop("leader")
    assert [[1], [1], [1]] == list(seen.values())


@pytest.mark.anyio
async def test_leader_task_changing_its_value_does_not_reach_followers(cache: Cache) -> None:
    """The task whose call loaded a value changes it at once: the followers' are as loaded."""
    gate = asyncio.Event()

    @cache.cached(key="v")
    async def read() -> dict[str, list[int]]:
        await gate.wait()
        return {"items": [1]}

    async def lead() -> dict[str, list[int]]:
        value = await read()
        value["items"].append(2)
        return value

    tasks = [asyncio.create_task(lead()), *(asyncio.create_task(read()) for _ in range(3))]
    while cache.stats.misses < 4:
        await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)

    assert 1 == cache.stats.loads
    assert [{"items": [1, 2]}, {"items": [1]}, {"items": [1]}, {"items": [1]}] == results
    assert {"items": [1]} == await read()


@dataclasses.dataclass(frozen=True)
class Order:
    id: int
    lines: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Basket:
    id: int
    lines: list[str]


def test_frozen_values_are_shared(cache: Cache) -> None:
    """A frozen dataclass of immutable fields is handed out as the same object (no copy)."""
    loaded = Order(1, ("a", "b"))

    @cache.cached(key="o")
    def read() -> Order:
        return loaded

    assert [True, True] == [read() is loaded, read() is loaded]


def test_frozen_values_with_mutable_fields_are_copied(cache: Cache) -> None:
    """A frozen dataclass holding a list is copied: changing the list does not reach the entry."""
    loaded = Basket(1, ["a"])

    @cache.cached(key="b")
    def read() -> Basket:
        return loaded

    read()
    hit = read()
    hit.lines.append("b")
    loaded.lines.append("c")

    assert Basket(1, ["a"]) == read()
    assert hit is not loaded


# -- options -----------------------------------------------------------------------------------


def test_lease_needs_a_backend_with_leases() -> None:
    """Cache(MemoryBackend(), lease=5) is a ValueError: memory has no leases."""
    with pytest.raises(ValueError, match="lease= needs a backend with leases"):
        Cache(MemoryBackend(), lease=5)
