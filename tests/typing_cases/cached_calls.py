"""
Calls of cached functions and methods that ``mypy --strict`` must check.

Not a test module: tests/test_cache_typing.py runs mypy on this file and
expects an error exactly on each line marked ``# E: <code>``, and none on
the others.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from perfkit.cache import Cache, MemoryBackend, cached_method

cache = Cache(MemoryBackend())


@cache.cached(key="order:{order_id}")
def get(order_id: int) -> str:
    return str(order_id)


@cache.cached(key="order:{order_id}")
async def aget(order_id: int) -> str:
    return str(order_id)


class OrderStore:
    @cache.cached(key="order:{order_id}")
    def get(self, order_id: int) -> str:
        return str(order_id)

    @cache.cached(key="order:{order_id}")
    async def aget(self, order_id: int) -> str:
        return str(order_id)

    @cache.cached(key="orders:{customer}:{limit}")
    def find(self, customer: str, *, limit: int = 10) -> list[int]:
        return list(range(limit))


class InjectedStore:
    def __init__(self, cache: Cache | None) -> None:
        self.cache = cache

    @cached_method(key="order:{order_id}")
    def get(self, order_id: int) -> str:
        return str(order_id)

    @cached_method(key="order:{order_id}")
    async def aget(self, order_id: int) -> str:
        return str(order_id)


class BoundStore:
    def __init__(self, cache: Cache) -> None:
        self.get = cache.cached(key="order:{order_id}")(self._load)

    def _load(self, order_id: int) -> str:
        return str(order_id)


store = OrderStore()
injected = InjectedStore(cache)
bound = BoundStore(cache)

# -- correct calls: no error ------------------------------------------------------------

s1: str = get(1)
s2: str = get(order_id=1)
get.invalidate(1)
k1: str = get.key_for(1)
s3: str = store.get(1)
s4: str = OrderStore.get(store, 1)
store.get.invalidate(1)
OrderStore.get.invalidate(store, 1)
k2: str = store.get.key_for(1)
k3: str = OrderStore.get.key_for(store, 1)
ids: list[int] = store.find("ada", limit=3)
s5: str = injected.get(1)
s6: str = InjectedStore.get(injected, 1)
injected.get.invalidate(1)
k4: str = injected.get.key_for(1)
s7: str = bound.get(1)
bound.get.invalidate(1)
k5: str = bound.get.key_for(1)
as_callable: Callable[[int], str] = store.get
as_function: Callable[[OrderStore, int], str] = OrderStore.get
injected_callable: Callable[[int], str] = injected.get
async_callable: Callable[[int], Coroutine[Any, Any, str]] = store.aget


async def correct_async() -> None:
    a1: str = await aget(1)
    a2: str = await store.aget(1)
    a3: str = await OrderStore.aget(store, 1)
    a4: str = await injected.aget(1)
    a5: str = await InjectedStore.aget(injected, 1)
    await aget.invalidate(1)
    await store.aget.invalidate(1)
    await injected.aget.invalidate(1)
    k: str = store.aget.key_for(1)
    print(a1, a2, a3, a4, a5, k)


# -- wrong calls: each line an error --------------------------------------------------

get("x")  # E: arg-type
get()  # E: call-arg
get(1, 2)  # E: call-arg
get(order=1)  # E: call-arg
n1: int = get(1)  # E: assignment
get.invalidate("x")  # E: arg-type
get.key_for()  # E: call-arg
n2: int = get.key_for(1)  # E: assignment

store.get("x")  # E: arg-type
store.get()  # E: call-arg
store.get(1, 2)  # E: call-arg
n3: int = store.get(1)  # E: assignment
store.get.invalidate("x")  # E: arg-type
store.get.key_for("x")  # E: arg-type
OrderStore.get(store, "x")  # E: arg-type
OrderStore.get(store)  # E: call-arg
OrderStore.get.invalidate(store, "x")  # E: arg-type
OrderStore.get(1)  # E: arg-type, call-arg
store.find("ada", 3)  # E: call-arg
store.find("ada", limit="3")  # E: arg-type
s8: str = store.find("ada")  # E: assignment

injected.get("x")  # E: arg-type
injected.get()  # E: call-arg
n4: int = injected.get(1)  # E: assignment
injected.get.invalidate("x")  # E: arg-type
InjectedStore.get(injected, "x")  # E: arg-type

bound.get("x")  # E: arg-type
n5: int = bound.get(1)  # E: assignment
bound.get.invalidate("x")  # E: arg-type

wrong_callable: Callable[[str], str] = store.get  # E: assignment
wrong_result: Callable[[int], int] = store.get  # E: assignment
wrong_unbound: Callable[[int], str] = OrderStore.get  # E: assignment
InjectedStore.get(1, 1)  # E: arg-type
# cached_method has no class-level invalidate (at run time neither: AttributeError).
InjectedStore.get.invalidate(injected, 1)  # E: attr-defined


@cached_method()  # E: arg-type
def no_self() -> int:
    return 1


async def wrong_async() -> None:
    await aget("x")  # E: arg-type
    await store.aget("x")  # E: arg-type
    await store.aget()  # E: call-arg
    await OrderStore.aget(store, "x")  # E: arg-type
    await injected.aget("x")  # E: arg-type
    await InjectedStore.aget(injected, "x")  # E: arg-type
    n: int = await store.aget(1)  # E: assignment
    m: int = await injected.aget(1)  # E: assignment
    await store.aget.invalidate("x")  # E: arg-type
    s: str = store.aget(1)  # E: assignment
    await get(1)  # E: misc
    await get.invalidate(1)  # E: func-returns-value, misc
    store.aget.invalidate(1)  # E: unused-coroutine
    injected.aget.invalidate(1)  # E: unused-coroutine
    print(n, m, s)
