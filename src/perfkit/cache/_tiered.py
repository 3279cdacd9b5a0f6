"""
Two-level cache backend: an in-process L1 in front of a shared Redis L2.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Collection
from typing import Any, Final

from ._backend import MISSING, Leases
from ._memory import MemoryBackend
from ._redis import RedisBackend, parse_message

__all__ = ["TieredBackend"]

log = logging.getLogger("perfkit.cache")

_L1_BITS: Final = 40
_L1_MASK: Final = (1 << _L1_BITS) - 1


class TieredBackend:
    """
    An in-process :class:`MemoryBackend` (L1) in front of a :class:`RedisBackend` (L2).

    Reads try L1, then L2 (copying a hit into L1 for at most *l1_ttl*
    seconds), then load. Writes fence and store in both levels. An
    invalidation fences and drops L2 (whose script publishes it on a Redis
    channel), then fences and drops L1 in this process, so a read that
    begins after ``invalidate()`` returned cannot find the old value in
    either level. A listener thread in every process drops the same keys and
    tags from its own L1 when the message arrives.

    L1 is used only while the listener is subscribed. When the subscription
    is lost (Redis restarted, connection dropped) L1 is flushed and bypassed —
    reads go to L2, or to the loader if L2 is down too — until the listener
    has subscribed again, and L1 is flushed once more then, since messages may
    have been missed in between.

    Args:
        l1: The in-process level (default: ``MemoryBackend()``).
        l2: The shared level; its ``channel`` is set to *channel*.
        l1_ttl: The longest an entry lives in L1, bounding staleness should a
            message ever be lost without the subscription dropping.
        channel: The pub/sub channel (default:
            ``"<l2 prefix>:db<l2 db>:invalidations"``: Redis pub/sub ignores
            database numbers, so the default names the database, and two apps
            on different databases never see each other's invalidations).
        on_message: Called in the listener thread after each message has been
            applied (for metrics, and for measuring delivery latency).
        reconnect_delay: Seconds between two subscription attempts.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       The default channel names the Redis database; invalidations go to L2
       before L1.
    """

    def __init__(
        self,
        l2: RedisBackend,
        *,
        l1: MemoryBackend | None = None,
        l1_ttl: float = 30.0,
        channel: str | None = None,
        on_message: Callable[[list[str], list[str]], None] | None = None,
        reconnect_delay: float = 1.0,
    ) -> None:
        self.l1 = l1 if l1 is not None else MemoryBackend()
        self.l2 = l2
        self.l1_ttl = l1_ttl
        self.channel = channel or f"{l2.prefix}:db{l2.db}:invalidations"
        l2.channel = self.channel
        self.max_load = l2.max_load
        self.leases: Leases | None = l2.leases
        self._l1_get = self.l1.get
        # L1 holds entries only while subscribed: losing the channel clears it, and fills
        # that began before are fenced by that clear. So peek() reads L1 without a check.
        self.peek: Callable[[str], Any] = self.l1.get
        self._use_l1 = False  # mirrors _subscribed for the hit path (a plain attribute read)
        self._on_message = on_message
        self._reconnect_delay = reconnect_delay
        self._start_listening()
        _TIERED.add(self)

    def _start_listening(self) -> None:
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._listener = threading.Thread(
            target=self._listen, name=f"perfkit-tiered-{self.channel}", daemon=True
        )
        self._listener.start()

    def _after_fork_in_child(self) -> None:
        """
        A forked worker (gunicorn ``--preload``) has no listener thread: its parent's did not
        come along. Without one it would keep using an L1 that no invalidation reaches, stale
        for up to ``l1_ttl``. So: L1 off and emptied (with a fresh lock: the parent's listener
        may have held it at the fork), and a listener of its own, which turns L1 back on once
        subscribed.
        """
        self._use_l1 = False
        self.l1._after_fork_in_child()
        if not self._stop.is_set():  # not closed before the fork
            self._start_listening()

    def __repr__(self) -> str:
        state = "subscribed" if self._subscribed.is_set() else "L1 bypassed"
        return f"TieredBackend({self.l1!r}, {self.l2!r}, {state})"

    @property
    def subscribed(self) -> bool:
        """Whether invalidations are being received (and L1 is in use)."""
        return self._subscribed.is_set()

    def wait_subscribed(self, timeout: float | None = None) -> bool:
        """Block until the listener is subscribed; False on timeout."""
        return self._subscribed.wait(timeout)

    def close(self) -> None:
        """Stop the listener thread and close the Redis clients' sync connections."""
        self._stop.set()
        self._use_l1 = False
        self.l1.clear()  # nothing would drop its entries any more
        self.l2.close()  # drops the listener's connection too, which wakes it
        self._listener.join(timeout=5)

    async def aclose(self) -> None:
        """Close the asyncio Redis client (in the loop that used it)."""
        await self.l2.aclose()

    # -- tokens --------------------------------------------------------------------

    def _token(self, l2_token: int) -> int:
        return (l2_token << _L1_BITS) | (self.l1.fill_token() & _L1_MASK)

    @staticmethod
    def _split(token: int) -> tuple[int, int]:
        return token >> _L1_BITS, token & _L1_MASK

    def _keep(
        self, key: str, value: Any, tags: tuple[str, ...], left: float, l1_token: int
    ) -> None:
        """Copy an L2 hit into L1 for no longer than it has left, fenced by the L1 token."""
        if value is not MISSING and self._use_l1 and left > 0:
            self.l1.set(key, value, ttl=min(self.l1_ttl, left), tags=tags, token=l1_token)

    # -- sync ----------------------------------------------------------------------

    def get(self, key: str) -> Any:
        if self._use_l1:
            value = self._l1_get(key)
            if value is not MISSING:
                return value
        return self.get_entry(key)[0]

    def get_entry(self, key: str) -> tuple[Any, tuple[str, ...]]:
        if self._use_l1:
            found = self.l1.get_entry(key)
            if found[0] is not MISSING:
                return found
        l1_token = self.l1.fill_token()  # before the L2 read: fences what L2 had then
        value, tags, left = self.l2.get_entry_with_ttl(key)
        self._keep(key, value, tags, left, l1_token)
        return value, tags

    def fill_token(self) -> int:
        return self._token(self.l2.fill_token())

    def set(self, key: str, value: Any, *, ttl: float, tags: Collection[str], token: int) -> bool:
        l2_token, l1_token = self._split(token)
        if not self.l2.set(key, value, ttl=ttl, tags=tags, token=l2_token):
            return False
        if self._use_l1:
            self.l1.set(key, value, ttl=min(ttl, self.l1_ttl), tags=tags, token=l1_token)
        return True

    def invalidate(self, *, keys: Collection[str] = (), tags: Collection[str] = ()) -> None:
        # L2 first: a reader that misses L1 meanwhile and copies the old L2 entry into L1
        # took its L1 token before the L1 invalidation below, which then fences that copy.
        try:
            self.l2.invalidate(keys=keys, tags=tags)  # everyone: fenced, then published
        finally:  # this process: before returning, even if L2 failed (and will be replayed)
            self.l1.invalidate(keys=keys, tags=tags)

    def clear(self) -> None:
        self.l2.clear()
        self.l1.clear()

    # -- async ---------------------------------------------------------------------

    async def aget(self, key: str) -> Any:
        if self._use_l1:
            value = self._l1_get(key)
            if value is not MISSING:
                return value
        return (await self.aget_entry(key))[0]

    async def aget_entry(self, key: str) -> tuple[Any, tuple[str, ...]]:
        if self._use_l1:
            found = self.l1.get_entry(key)
            if found[0] is not MISSING:
                return found
        l1_token = self.l1.fill_token()
        value, tags, left = await self.l2.aget_entry_with_ttl(key)
        self._keep(key, value, tags, left, l1_token)
        return value, tags

    async def afill_token(self) -> int:
        return self._token(await self.l2.afill_token())

    async def aset(
        self, key: str, value: Any, *, ttl: float, tags: Collection[str], token: int
    ) -> bool:
        l2_token, l1_token = self._split(token)
        if not await self.l2.aset(key, value, ttl=ttl, tags=tags, token=l2_token):
            return False
        if self._use_l1:
            self.l1.set(key, value, ttl=min(ttl, self.l1_ttl), tags=tags, token=l1_token)
        return True

    async def ainvalidate(self, *, keys: Collection[str] = (), tags: Collection[str] = ()) -> None:
        try:
            await self.l2.ainvalidate(keys=keys, tags=tags)
        finally:
            self.l1.invalidate(keys=keys, tags=tags)

    async def aclear(self) -> None:
        await self.l2.aclear()
        self.l1.clear()

    # -- the listener --------------------------------------------------------------

    def _lost(self, reason: object) -> None:
        if self._subscribed.is_set():
            log.warning(
                "cache invalidation channel %r lost (%s); L1 bypassed", self.channel, reason
            )
        self._use_l1 = False
        self._subscribed.clear()
        self.l1.clear()

    def _listen(self) -> None:
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self.l2.client.pubsub()
                pubsub.subscribe(self.channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is not None:
                        self._handle(message)
            except Exception as exc:  # any failure means "not listening"
                if self._stop.is_set():
                    break  # closed on purpose
                self._lost(exc)
                self._stop.wait(self._reconnect_delay)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # closing a dead connection
                        pubsub.close()
        self._use_l1 = False
        self._subscribed.clear()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            # Whatever was published while we were not listening is lost: start clean.
            self.l1.clear()
            self._use_l1 = True
            self._subscribed.set()
            log.info("cache invalidation channel %r subscribed; L1 in use", self.channel)
        elif kind == "message":
            keys, tags = parse_message(message["data"])
            if tags == ["*"]:
                self.l1.clear()
            else:
                self.l1.invalidate(keys=keys, tags=tags)
            if self._on_message is not None:
                self._on_message(keys, tags)


_TIERED: weakref.WeakSet[TieredBackend] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for backend in list(_TIERED):
        backend._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
