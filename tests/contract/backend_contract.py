"""
What every cache backend must do: subclass and provide a ``backend`` fixture.
"""

from __future__ import annotations

import pytest

from perfkit.cache import MISSING, Backend


class BackendContract:
    """
    The freshness protocol of :mod:`perfkit.cache._backend`, checked on one backend.
    """

    def test_is_a_backend(self, backend: Backend) -> None:
        """The backend satisfies the runtime-checkable protocol."""
        assert isinstance(backend, Backend)

    def test_absent_key_is_missing(self, backend: Backend) -> None:
        """get() of a key never set is MISSING, which is falsy but not None."""
        assert backend.get("ns:nothing") is MISSING

    def test_set_then_get(self, backend: Backend) -> None:
        """A fresh fill is stored and read back equal, None included."""
        token = backend.fill_token()

        assert backend.set("ns:a", {"x": [1, 2]}, ttl=30, tags=(), token=token)
        assert backend.set("ns:none", None, ttl=30, tags=(), token=token)
        assert backend.get("ns:a") == {"x": [1, 2]}
        assert backend.get("ns:none") is None

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

    @pytest.mark.anyio
    async def test_async_twins(self, backend: Backend) -> None:
        """The async methods follow the same protocol."""
        try:
            token = await backend.afill_token()
            await backend.ainvalidate(keys=["ns:a"])

            assert not await backend.aset("ns:a", "old", ttl=30, tags=(), token=token)
            fresh = await backend.afill_token()
            assert await backend.aset("ns:a", "new", ttl=30, tags=["ns#t"], token=fresh)
            assert await backend.aget("ns:a") == "new"
            await backend.ainvalidate(tags=["ns#t"])
            assert await backend.aget("ns:a") is MISSING
        finally:
            aclose = getattr(backend, "aclose", None)
            if aclose is not None:
                await aclose()
