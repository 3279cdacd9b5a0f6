"""
Redis cache backend on redis-py, sync and asyncio.
"""

from __future__ import annotations

import inspect
import json
import secrets
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, Final

from ._backend import MISSING, Leases
from ._codec import Codec, JSONCodec

if TYPE_CHECKING:
    import redis
    import redis.asyncio

    from perfkit.resilience import CircuitBreaker

__all__ = ["RedisBackend"]

# KEYS: seq, entry, fence:*, fence:key, fence:tag..., tagset...   ARGV: token, value, ttl_ms, ntags
_SET_IF_FRESH: Final = """
local token = tonumber(ARGV[1])
local ntags = tonumber(ARGV[4])
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
if seq < token then return 0 end  -- the sequence went back (Redis lost it): fences too
if seq > token then
  for i = 3, 4 + ntags do
    local fence = redis.call('GET', KEYS[i])
    if fence and tonumber(fence) > token then return 0 end
  end
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
for i = 5 + ntags, 4 + 2 * ntags do
  redis.call('SADD', KEYS[i], KEYS[2])
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[3]) then
    redis.call('PEXPIRE', KEYS[i], ARGV[3])
  end
end
return 1
"""

# KEYS: seq, entry..., fence:key..., tagset..., fence:tag...
# ARGV: nkeys, ntags, fence_ttl_ms, channel (or ''), message
_INVALIDATE: Final = """
local n = tonumber(ARGV[1])
local m = tonumber(ARGV[2])
local seq = redis.call('INCR', KEYS[1])
for i = 1, n do
  redis.call('DEL', KEYS[1 + i])
  redis.call('SET', KEYS[1 + n + i], seq, 'PX', ARGV[3])
end
for j = 1, m do
  local tagset = KEYS[1 + 2 * n + j]
  local members = redis.call('SMEMBERS', tagset)
  for k = 1, #members, 500 do
    redis.call('DEL', unpack(members, k, math.min(k + 499, #members)))
  end
  redis.call('DEL', tagset)
  redis.call('SET', KEYS[1 + 2 * n + m + j], seq, 'PX', ARGV[3])
end
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return seq
"""

# KEYS: lease   ARGV: holder token
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: entry   -> {value or false, milliseconds left}
_GET_WITH_TTL: Final = """
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
"""

_SCRIPTS: Final = {
    "set": _SET_IF_FRESH,
    "invalidate": _INVALIDATE,
    "release": _RELEASE,
    "get_with_ttl": _GET_WITH_TTL,
}
_SCAN_BATCH: Final = 500

DEFAULT_TIMEOUT: Final = 0.25
"""Socket timeout (seconds) of clients perfkit creates: a dead Redis must fail fast."""


class RedisBackend:
    """
    A cache in Redis, shared by every process that points at it.

    A hit is one ``GET``; a fill is one ``GET`` of the invalidation sequence
    before the load and one script call after it; an invalidation is one
    script call that deletes the keys and every member of the tags, fences
    in-flight fills and (for :class:`TieredBackend`) publishes the change.
    Values go through *codec* — JSON by default, never pickle.

    Args:
        client: A ``redis://`` URL, or a ``redis.Redis`` client. From a URL
            perfkit makes sync and asyncio clients with 250 ms socket
            timeouts and no retries, so a dead Redis costs little.
        async_client: A ``redis.asyncio.Redis`` for coroutine functions
            (default: made from the URL, or from the sync client's settings).
        codec: How values are serialised (default: :class:`JSONCodec`).
        prefix: Prefix of every Redis key perfkit writes.
        max_load: Fills that took longer than this many seconds are not stored.
        channel: Pub/sub channel on which invalidations are announced
            (``None``: not announced).
        breaker: A :class:`~perfkit.CircuitBreaker` every Redis command goes
            through: once it opens, a dead Redis costs a request no timeout
            at all (the cache serves from the loader) until a trial call
            finds it back.

    Not for Redis Cluster: the scripts touch keys in several hash slots.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        client: str | redis.Redis,
        *,
        async_client: redis.asyncio.Redis | None = None,
        codec: Codec | None = None,
        prefix: str = "perfkit",
        max_load: float = 60.0,
        channel: str | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        import redis as _redis  # noqa: PLC0415 - optional dependency, loaded on use

        self._url = client if isinstance(client, str) else None
        self.client: redis.Redis = (
            _redis.Redis.from_url(client, **_fail_fast()) if isinstance(client, str) else client
        )
        self._async_client = async_client
        self.codec: Codec = codec if codec is not None else JSONCodec()
        self.prefix = prefix
        self.max_load = max_load
        self.channel = channel
        self.breaker = breaker
        self._run: Callable[..., Any] = breaker.call if breaker is not None else _direct
        self._arun: Callable[..., Any] = breaker.acall if breaker is not None else _adirect
        self._seq = f"{prefix}:seq"
        self._fence_ttl_ms = str(int((max_load + 5) * 1000))
        self._set_script = self.client.register_script(_SET_IF_FRESH)
        self._invalidate_script = self.client.register_script(_INVALIDATE)
        self._release_script = self.client.register_script(_RELEASE)
        self._get_with_ttl_script = self.client.register_script(_GET_WITH_TTL)
        self._ascripts: dict[str, Any] = {}
        self.leases: Leases | None = _RedisLeases(
            run=self._run,
            arun=self._arun,
            client=self.client,
            async_client=lambda: self.async_client,
            name=self._lease,
            release=self._release_script,
            ascript=self._ascript,
        )
        """Cross-process single-flight leases (``SET NX PX`` keys), through the breaker."""

    def __repr__(self) -> str:
        kwargs = self.client.connection_pool.connection_kwargs
        where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
        return f"RedisBackend({where!r}, prefix={self.prefix!r})"

    @property
    def db(self) -> int:
        """The number of the Redis database the sync client works on."""
        return int(self.client.connection_pool.connection_kwargs.get("db", 0))

    @property
    def async_client(self) -> redis.asyncio.Redis:
        """The asyncio client, made on first use."""
        if self._async_client is None:
            import redis.asyncio as _aioredis  # noqa: PLC0415

            if self._url is not None:
                self._async_client = _aioredis.Redis.from_url(self._url, **_fail_fast(asyncio=True))
            else:
                self._async_client = _aioredis.Redis(**_async_options(self.client))
        return self._async_client

    def close(self) -> None:
        """Close the sync client's connections."""
        self.client.close()

    async def aclose(self) -> None:
        """Close the asyncio client's connections (in the loop that used them)."""
        if self._async_client is not None:
            client, self._async_client = self._async_client, None
            self._ascripts.clear()
            await client.aclose()

    # -- naming --------------------------------------------------------------------

    def _entry(self, key: str) -> str:
        return f"{self.prefix}:e:{key}"

    def _fence(self, name: str) -> str:
        return f"{self.prefix}:f:{name}"

    def _tagset(self, tag: str) -> str:
        return f"{self.prefix}:t:{tag}"

    def _lease(self, key: str) -> str:
        return f"{self.prefix}:l:{key}"

    def _set_args(
        self, key: str, value: Any, ttl: float, tags: Collection[str], token: int
    ) -> tuple[list[str], list[Any]]:
        keys = [self._seq, self._entry(key), self._fence("*"), self._fence("k:" + key)]
        keys.extend(self._fence("t:" + tag) for tag in tags)
        keys.extend(self._tagset(tag) for tag in tags)
        ttl_ms = max(1, int(ttl * 1000))
        return keys, [token, _frame(tags, self.codec.dumps(value)), ttl_ms, len(tags)]

    def _invalidate_args(
        self, keys: Collection[str], tags: Collection[str]
    ) -> tuple[list[str], list[Any]]:
        script_keys = [self._seq]
        script_keys.extend(self._entry(key) for key in keys)
        script_keys.extend(self._fence("k:" + key) for key in keys)
        script_keys.extend(self._tagset(tag) for tag in tags)
        script_keys.extend(self._fence("t:" + tag) for tag in tags)
        message = _message(keys, tags) if self.channel else b""
        args = [len(keys), len(tags), self._fence_ttl_ms, self.channel or "", message]
        return script_keys, args

    def _decode(self, raw: Any) -> Any:
        if raw is None:
            return MISSING
        return self.codec.loads(_payload(raw))

    def _decode_entry(self, raw: Any) -> tuple[Any, tuple[str, ...]]:
        if raw is None:
            return MISSING, ()
        return self.codec.loads(_payload(raw)), _tags(raw)

    # -- sync ----------------------------------------------------------------------

    def peek(self, key: str) -> Any:
        """Always :data:`MISSING`: nothing is held in this process."""
        return MISSING

    def get(self, key: str) -> Any:
        return self._decode(self._run(self.client.get, self._entry(key)))

    def get_entry(self, key: str) -> tuple[Any, tuple[str, ...]]:
        """The value under *key* (or :data:`MISSING`) and the tags it was stored with."""
        return self._decode_entry(self._run(self.client.get, self._entry(key)))

    def get_entry_with_ttl(self, key: str) -> tuple[Any, tuple[str, ...], float]:
        """:meth:`get_entry` and the seconds the entry has left, in one round trip."""
        raw, ms = self._run(self._get_with_ttl_script, keys=[self._entry(key)])
        value, tags = self._decode_entry(raw or None)
        return value, tags, max(0, int(ms)) / 1000

    def fill_token(self) -> int:
        return int(self._run(self.client.get, self._seq) or 0)

    def set(self, key: str, value: Any, *, ttl: float, tags: Collection[str], token: int) -> bool:
        keys, args = self._set_args(key, value, ttl, tags, token)
        return bool(self._run(self._set_script, keys=keys, args=args))

    def invalidate(self, *, keys: Collection[str] = (), tags: Collection[str] = ()) -> None:
        if keys or tags:
            script_keys, args = self._invalidate_args(keys, tags)
            self._run(self._invalidate_script, keys=script_keys, args=args)

    def clear(self) -> None:
        """Drop every entry under this backend's prefix and fence running fills."""
        run, client = self._run, self.client
        seq = run(client.incr, self._seq)
        run(client.set, self._fence("*"), seq, px=int(self._fence_ttl_ms))
        for pattern in (f"{self.prefix}:e:*", f"{self.prefix}:t:*"):
            cursor = 0
            while True:
                cursor, names = run(client.scan, cursor, match=pattern, count=_SCAN_BATCH)
                if names:
                    run(client.delete, *names)
                if not cursor:
                    break
        if self.channel:
            run(client.publish, self.channel, _message((), ("*",)))

    # -- async ---------------------------------------------------------------------

    async def aget(self, key: str) -> Any:
        return self._decode(await self._arun(self.async_client.get, self._entry(key)))

    async def aget_entry(self, key: str) -> tuple[Any, tuple[str, ...]]:
        """Async :meth:`get_entry`."""
        return self._decode_entry(await self._arun(self.async_client.get, self._entry(key)))

    async def aget_entry_with_ttl(self, key: str) -> tuple[Any, tuple[str, ...], float]:
        """Async :meth:`get_entry_with_ttl`."""
        script = self._ascript("get_with_ttl")
        raw, ms = await self._arun(script, keys=[self._entry(key)])
        value, tags = self._decode_entry(raw or None)
        return value, tags, max(0, int(ms)) / 1000

    async def afill_token(self) -> int:
        return int(await self._arun(self.async_client.get, self._seq) or 0)

    async def aset(
        self, key: str, value: Any, *, ttl: float, tags: Collection[str], token: int
    ) -> bool:
        keys, args = self._set_args(key, value, ttl, tags, token)
        return bool(await self._arun(self._ascript("set"), keys=keys, args=args))

    async def ainvalidate(self, *, keys: Collection[str] = (), tags: Collection[str] = ()) -> None:
        if keys or tags:
            script_keys, args = self._invalidate_args(keys, tags)
            await self._arun(self._ascript("invalidate"), keys=script_keys, args=args)

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        arun, client = self._arun, self.async_client
        seq = await arun(client.incr, self._seq)
        await arun(client.set, self._fence("*"), seq, px=int(self._fence_ttl_ms))
        for pattern in (f"{self.prefix}:e:*", f"{self.prefix}:t:*"):
            cursor = 0
            while True:
                cursor, names = await arun(client.scan, cursor, match=pattern, count=_SCAN_BATCH)
                if names:
                    await arun(client.delete, *names)
                if not cursor:
                    break
        if self.channel:
            await arun(client.publish, self.channel, _message((), ("*",)))

    def _ascript(self, name: str) -> Any:
        """The asyncio client's registered script *name* (registered on first use)."""
        script = self._ascripts.get(name)
        if script is None:
            script = self._ascripts[name] = self.async_client.register_script(_SCRIPTS[name])
        return script


class _RedisLeases:
    """
    Leases as Redis keys (``SET NX PX``), every command through the backend's breaker.
    """

    __slots__ = ("_arun", "_ascript", "_async_client", "_client", "_name", "_release", "_run")

    def __init__(
        self,
        *,
        run: Callable[..., Any],
        arun: Callable[..., Any],
        client: redis.Redis,
        async_client: Callable[[], redis.asyncio.Redis],
        name: Callable[[str], str],
        release: Any,
        ascript: Callable[[str], Any],
    ) -> None:
        self._run, self._arun = run, arun
        self._client, self._async_client = client, async_client
        self._name, self._release, self._ascript = name, release, ascript

    def acquire(self, key: str, seconds: float) -> str | None:
        holder = secrets.token_hex(8)
        px = max(1, int(seconds * 1000))
        taken = self._run(self._client.set, self._name(key), holder, nx=True, px=px)
        return holder if taken else None

    def held(self, key: str) -> bool:
        return bool(self._run(self._client.exists, self._name(key)))

    def release(self, key: str, holder: str) -> None:
        self._run(self._release, keys=[self._name(key)], args=[holder])

    async def aacquire(self, key: str, seconds: float) -> str | None:
        holder = secrets.token_hex(8)
        px = max(1, int(seconds * 1000))
        client = self._async_client()
        taken = await self._arun(client.set, self._name(key), holder, nx=True, px=px)
        return holder if taken else None

    async def aheld(self, key: str) -> bool:
        return bool(await self._arun(self._async_client().exists, self._name(key)))

    async def arelease(self, key: str, holder: str) -> None:
        await self._arun(self._ascript("release"), keys=[self._name(key)], args=[holder])


def _direct(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


async def _adirect(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await fn(*args, **kwargs)


def _fail_fast(*, asyncio: bool = False) -> dict[str, Any]:
    """
    Client options for a backend made from a URL: short timeouts, no retries (the breaker
    and fail-open decide). An asyncio client gets redis-py's asyncio retry class: since
    redis-py 8.2 a sync one is converted with a ``UserWarning``.
    """
    from redis.backoff import NoBackoff  # noqa: PLC0415

    if asyncio:
        from redis.asyncio.retry import Retry as AsyncRetry  # noqa: PLC0415

        retry: Any = AsyncRetry(NoBackoff(), 0)
    else:
        from redis.retry import Retry  # noqa: PLC0415

        retry = Retry(NoBackoff(), 0)
    return {
        "socket_timeout": DEFAULT_TIMEOUT,
        "socket_connect_timeout": DEFAULT_TIMEOUT,
        "retry": retry,
    }


def _async_options(client: redis.Redis) -> dict[str, Any]:
    """
    Options for an asyncio client that reaches what the sync *client* reaches, as it does.

    The sync pool's connection options, less those only the sync client knows (redis-py 8.2
    keeps ``himport_registry`` and ``orig_*`` bookkeeping there, which the asyncio client
    refuses); TLS when the pool's connections are TLS ones (the pool keeps that in its
    connection class, not in its options); the pool's size; a Unix socket's ``path`` under
    its asyncio name; and a sync retry policy as its asyncio twin: the same backoff, count
    and errors (what redis-py 8.2's own conversion copies, without its warning). A blocking
    pool's wait is not carried over: the asyncio client gets a plain pool.
    """
    import redis as _redis  # noqa: PLC0415
    import redis.asyncio as _aioredis  # noqa: PLC0415
    from redis.asyncio.retry import Retry as AsyncRetry  # noqa: PLC0415
    from redis.retry import Retry  # noqa: PLC0415

    pool = client.connection_pool
    given = dict(pool.connection_kwargs)
    if "path" in given:
        given["unix_socket_path"] = given.pop("path")
    if issubclass(pool.connection_class, _redis.SSLConnection):
        given["ssl"] = True
    given.setdefault("max_connections", getattr(pool, "max_connections", None))
    accepted = inspect.signature(_aioredis.Redis.__init__).parameters
    options = {name: value for name, value in given.items() if name in accepted}
    retry = options.get("retry")
    if isinstance(retry, Retry):  # redis-py's asyncio Retry is not one
        options["retry"] = AsyncRetry(retry._backoff, retry._retries, retry._supported_errors)
    return options


def _frame(tags: Collection[str], payload: bytes) -> bytes:
    """An entry as stored: the length of a JSON tag list, the list, the payload."""
    header = json.dumps(list(tags), separators=(",", ":")).encode() if tags else b""
    return len(header).to_bytes(4, "big") + header + payload


def _payload(raw: bytes | str) -> bytes:
    data = raw.encode() if isinstance(raw, str) else raw
    return data[4 + int.from_bytes(data[:4], "big") :]


def _tags(raw: bytes | str) -> tuple[str, ...]:
    data = raw.encode() if isinstance(raw, str) else raw
    size = int.from_bytes(data[:4], "big")
    return tuple(json.loads(data[4 : 4 + size])) if size else ()


def _message(keys: Collection[str], tags: Collection[str]) -> bytes:
    """The pub/sub announcement of an invalidation."""
    return json.dumps({"k": list(keys), "t": list(tags)}, separators=(",", ":")).encode()


def parse_message(data: bytes | str) -> tuple[list[str], list[str]]:
    """Keys and tags of an announcement made by :func:`_message`."""
    decoded = json.loads(data)
    return [str(k) for k in decoded["k"]], [str(t) for t in decoded["t"]]
