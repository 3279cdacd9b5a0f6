"""
What every cache backend must do, as a pytest suite to subclass.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid
from typing import Any, ClassVar

import pytest

from perfkit.cache import MISSING, Backend, Cache, Leases

__all__ = ["BackendContract"]


class BackendContract:
    """
    The cache backend contract: subclass it and provide a ``backend`` fixture.

    Each test gets a fresh backend from the fixture; key names start with
    ``ns:`` and tags with ``ns#``, so a backend shared with other data only
    needs a prefix of its own. The concurrency cases run real threads and
    asyncio tasks against a writer and check every read that began after an
    invalidation returned; their size is :attr:`stress_writes`.

    Example::

        from perfkit.testing import BackendContract

        class TestMyBackend(BackendContract):
            @pytest.fixture
            def backend(self) -> Iterator[MyBackend]:
                backend = MyBackend(...)
                yield backend
                backend.close()

    .. versionadded:: 0.2.0
    """

    stress_writes: ClassVar[int] = 150
    """Writes (each followed by an invalidation) in each concurrency case."""

    stress_readers: ClassVar[int] = 6
    """Reader threads or tasks in each concurrency case."""

    @pytest.fixture
    def backend(self) -> Backend:  # pragma: no cover - subclasses provide it
        """The backend under test: override in the subclass."""
        msg = "subclass BackendContract and define a `backend` fixture"
        raise NotImplementedError(msg)

    # -- the protocol ------------------------------------------------------------------

    def test_is_a_backend(self, backend: Backend) -> None:
        """The backend satisfies the runtime-checkable protocol, leases included."""
        assert isinstance(backend, Backend)
        assert backend.leases is None or isinstance(backend.leases, Leases)

    def test_absent_key_is_missing(self, backend: Backend) -> None:
        """get(), peek() and get_entry() of a key never set are MISSING, which is falsy."""
        assert backend.get("ns:nothing") is MISSING
        assert backend.peek("ns:nothing") is MISSING
        assert backend.get_entry("ns:nothing") == (MISSING, ())
        assert not MISSING

    def test_set_then_get(self, backend: Backend) -> None:
        """A fresh fill is stored and read back equal, None included."""
        token = backend.fill_token()

        assert backend.set("ns:a", {"x": [1, 2]}, ttl=30, tags=(), token=token)
        assert backend.set("ns:none", None, ttl=30, tags=(), token=token)
        assert backend.get("ns:a") == {"x": [1, 2]}
        assert backend.get("ns:none") is None

    def test_peek_answers_only_from_this_process(self, backend: Backend) -> None:
        """peek() returns the stored value or MISSING, never anything else."""
        backend.set("ns:p", "value", ttl=30, tags=(), token=backend.fill_token())

        assert backend.peek("ns:p") in ("value", MISSING)

    def test_entries_keep_their_tags(self, backend: Backend) -> None:
        """get_entry() returns the value and the tags it was stored with."""
        backend.set("ns:e", 5, ttl=30, tags=["ns#a", "ns#b"], token=backend.fill_token())

        value, tags = backend.get_entry("ns:e")

        assert (value, sorted(tags)) == (5, ["ns#a", "ns#b"])

    def test_values_are_not_shared(self, backend: Backend) -> None:
        """Changing a stored or a returned value changes nothing another reader gets."""
        original: dict[str, Any] = {"votes": [1, 2], "title": "Act"}
        backend.set("ns:m", original, ttl=30, tags=(), token=backend.fill_token())
        original["votes"].append(3)

        first = backend.get("ns:m")
        first["votes"].append(4)
        first["title"] = "changed"

        assert backend.get("ns:m") == {"votes": [1, 2], "title": "Act"}

    def test_invalidated_key_fences_older_fills(self, backend: Backend) -> None:
        """A fill that began before the key was invalidated is refused."""
        token = backend.fill_token()
        backend.invalidate(keys=["ns:a"])

        assert not backend.set("ns:a", "old", ttl=30, tags=(), token=token)
        assert backend.get("ns:a") is MISSING
        assert backend.set("ns:b", "other key", ttl=30, tags=(), token=token)
        assert backend.set("ns:a", "new", ttl=30, tags=(), token=backend.fill_token())
        assert backend.get("ns:a") == "new"

    def test_invalidated_tag_fences_older_fills(self, backend: Backend) -> None:
        """A fill carrying a tag invalidated after it began is refused."""
        token = backend.fill_token()
        backend.invalidate(tags=["ns#user:1"])

        assert not backend.set("ns:doc", "old", ttl=30, tags=["ns#user:1"], token=token)
        assert backend.set("ns:doc", "ok", ttl=30, tags=["ns#user:2"], token=token)

    def test_tag_invalidation_drops_every_member(self, backend: Backend) -> None:
        """Invalidating a tag drops all entries carrying it, and only them."""
        token = backend.fill_token()
        backend.set("ns:1", 1, ttl=30, tags=["ns#t", "ns#u"], token=token)
        backend.set("ns:2", 2, ttl=30, tags=["ns#t"], token=token)
        backend.set("ns:3", 3, ttl=30, tags=["ns#u"], token=token)

        backend.invalidate(tags=["ns#t"])

        assert [backend.get(f"ns:{n}") for n in (1, 2, 3)] == [MISSING, MISSING, 3]

    def test_key_invalidation_drops_the_entry(self, backend: Backend) -> None:
        """invalidate(keys=...) drops exactly those entries."""
        token = backend.fill_token()
        backend.set("ns:1", 1, ttl=30, tags=(), token=token)
        backend.set("ns:2", 2, ttl=30, tags=(), token=token)

        backend.invalidate(keys=["ns:1"])

        assert [backend.get("ns:1"), backend.get("ns:2")] == [MISSING, 2]

    def test_clear_drops_everything_and_fences(self, backend: Backend) -> None:
        """clear() empties the backend and refuses fills that began before it."""
        token = backend.fill_token()
        backend.set("ns:1", 1, ttl=30, tags=["ns#t"], token=token)

        backend.clear()

        assert backend.get("ns:1") is MISSING
        assert not backend.set("ns:1", 1, ttl=30, tags=(), token=token)

    def test_tokens_never_go_back(self, backend: Backend) -> None:
        """Each invalidation moves the sequence forward."""
        first = backend.fill_token()
        backend.invalidate(keys=["ns:x"])
        second = backend.fill_token()
        backend.invalidate(tags=["ns#y"])

        assert first < second < backend.fill_token()

    def test_leases_exclude_each_other(self, backend: Backend) -> None:
        """A held lease refuses a second holder until it is released (if leases exist)."""
        leases = backend.leases
        if leases is None:
            pytest.skip("this backend declares no leases")
        key = f"ns:lease-{uuid.uuid4().hex}"
        holder = leases.acquire(key, 30)

        assert holder is not None
        assert leases.held(key)
        assert leases.acquire(key, 30) is None
        leases.release(key, "someone else")
        assert leases.held(key)
        leases.release(key, holder)
        assert not leases.held(key)

    def test_async_twins(self, backend: Backend) -> None:
        """The async methods follow the same protocol."""

        async def scenario() -> list[Any]:
            try:
                token = await backend.afill_token()
                await backend.ainvalidate(keys=["ns:a"])
                refused = await backend.aset("ns:a", "old", ttl=30, tags=(), token=token)
                fresh = await backend.afill_token()
                stored = await backend.aset("ns:a", "new", ttl=30, tags=["ns#t"], token=fresh)
                read = await backend.aget("ns:a")
                entry = await backend.aget_entry("ns:a")
                await backend.ainvalidate(tags=["ns#t"])
                dropped = await backend.aget("ns:a")
                await backend.aset("ns:b", 1, ttl=30, tags=(), token=await backend.afill_token())
                await backend.aclear()
                cleared = await backend.aget("ns:b")
                if backend.leases is not None:
                    key = f"ns:alease-{uuid.uuid4().hex}"
                    holder = await backend.leases.aacquire(key, 30)
                    assert holder is not None
                    assert await backend.leases.aheld(key)
                    await backend.leases.arelease(key, holder)
                    assert not await backend.leases.aheld(key)
                return [refused, stored, read, entry, dropped, cleared]
            finally:
                await backend.aclose()

        expected = [False, True, "new", ("new", ("ns#t",)), MISSING, MISSING]
        assert expected == asyncio.run(scenario())

    # -- freshness under concurrency -----------------------------------------------------

    def test_reads_after_an_invalidation_are_fresh_in_threads(self, backend: Backend) -> None:
        """Reader threads never see a value older than an invalidation that returned."""
        stale = _stress_threads(backend, self.stress_writes, self.stress_readers)

        assert stale[:5] == [], f"{len(stale)} stale reads (floor, seen)"

    def test_reads_after_an_invalidation_are_fresh_in_tasks(self, backend: Backend) -> None:
        """Reader tasks never see a value older than an invalidation that returned."""
        stale = asyncio.run(_stress_tasks(backend, self.stress_writes, self.stress_readers))

        assert stale[:5] == [], f"{len(stale)} stale reads (floor, seen)"


def _stress_cache(backend: Backend) -> Cache:
    return Cache(backend, namespace=f"stress{uuid.uuid4().hex[:12]}", ttl=60, jitter=0)


def _invalidate(version: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Alternate key and tag invalidations, so both fences are exercised."""
    return (("item",), ()) if version % 2 else ((), ("item-tag",))


def _stress_threads(backend: Backend, writes: int, readers: int) -> list[tuple[int, int]]:
    """
    One writer changes the source and invalidates; reader threads read through the cache.

    A reader notes the last version whose invalidation had returned before
    its read began (the floor); a read that returns less is stale.
    """
    cache = _stress_cache(backend)
    source = [0]
    committed = [0]
    reads = [0]
    stale: list[tuple[int, int]] = []
    stop = threading.Event()

    @cache.cached(key="item", tags=["item-tag"])
    def read() -> int:
        value = source[0]
        time.sleep(0)  # a real loader does I/O here: let the writer run between read and store
        return value

    def reader() -> None:
        while not stop.is_set():
            floor = committed[0]
            seen = read()
            reads[0] += 1
            if seen < floor:
                stale.append((floor, seen))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: more interleavings per write
    threads = [threading.Thread(target=reader, daemon=True) for _ in range(readers)]
    try:
        for thread in threads:
            thread.start()
        for version in range(1, writes + 1):
            source[0] = version
            keys, tags = _invalidate(version)
            cache.invalidate(keys=keys, tags=tags)
            committed[0] = version
            _wait_for_reads(reads, reads[0] + readers, stop)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        sys.setswitchinterval(interval)
    return stale


def _wait_for_reads(reads: list[int], target: int, stop: threading.Event) -> None:
    """Yield the GIL until the readers have made *target* reads in all (boundedly)."""
    for _ in range(20_000):
        if reads[0] >= target or stop.is_set():
            return
        time.sleep(0)


async def _stress_tasks(backend: Backend, writes: int, readers: int) -> list[tuple[int, int]]:
    """:func:`_stress_threads` with asyncio tasks and the async API."""
    cache = _stress_cache(backend)
    source = [0]
    committed = [0]
    reads = [0]
    stale: list[tuple[int, int]] = []
    done = asyncio.Event()

    @cache.cached(key="item", tags=["item-tag"])
    async def read() -> int:
        value = source[0]
        await asyncio.sleep(0)  # let the writer run between the load and the store
        return value

    async def reader() -> None:
        while not done.is_set():
            floor = committed[0]
            seen = await read()
            reads[0] += 1
            if seen < floor:
                stale.append((floor, seen))
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(reader()) for _ in range(readers)]
    try:
        for version in range(1, writes + 1):
            source[0] = version
            keys, tags = _invalidate(version)
            await cache.ainvalidate(keys=keys, tags=tags)
            committed[0] = version
            mark = reads[0]
            for _ in range(1_000):
                if reads[0] >= mark + readers:
                    break
                await asyncio.sleep(0)
    finally:
        done.set()
        await asyncio.gather(*tasks)
        await backend.aclose()
    return stale
