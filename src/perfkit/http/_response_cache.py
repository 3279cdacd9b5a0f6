"""
:class:`ResponseCache`: whole HTTP responses in a :class:`~perfkit.cache.Cache`,
served before the framework runs, dropped by the same tags as the data.

A cached response goes through the data cache's fill protocol
(:mod:`perfkit.cache._fill`): a token taken before the app runs fences the
store, so a write that invalidates a tag while the response is being built
keeps that response out of the cache; concurrent misses of one key run the
app once; pending invalidations (backend down) make reads bypass the cache.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, NamedTuple
from urllib.parse import unquote_plus

from perfkit._context import CURRENT
from perfkit.cache import _fill
from perfkit.cache._backend import MISSING
from perfkit.cache._flights import TaskFlights

from ._asgi import ASGIApp, Message, Receive, Scope, Send
from ._compression import MIN_SIZE, Encoder, compressible, encoders, negotiate, vary_names
from ._conditional import etag_of, none_match, not_modified_since, parse_http_date, weak
from ._routes import CachedRoute

if TYPE_CHECKING:
    from perfkit.cache import Cache

__all__ = ["ResponseCache", "tag_response"]

log = logging.getLogger("perfkit.http")

_TAGS: Final[contextvars.ContextVar[list[str] | None]] = contextvars.ContextVar(
    "perfkit_response_tags", default=None
)
_MAX_KEY: Final = 200
_MAX_BODY: Final = 1024 * 1024
# Request headers the app must not see while a response for everyone is built:
# it would answer 304 for one client, or compress for one client's encodings.
_FILL_STRIPPED: Final = frozenset(
    {b"accept-encoding", b"if-none-match", b"if-modified-since", b"if-match", b"range"}
)
# Response headers the cache sets itself, per representation.
_OWN: Final = frozenset(
    {b"content-length", b"etag", b"vary", b"cache-control", b"surrogate-key", b"last-modified"}
)
_MAX_NEGOTIATED: Final = 256


def tag_response(*tags: str) -> None:
    """
    Add tags to the response being cached (no-op outside a cached route).

    For tags known only once the handler ran, such as the id of a record
    looked up by name::

        user = users.get_by_username(name)
        tag_response(f"user:{user.id}")

    Works from sync handlers run in a thread pool too (the context is copied).

    .. versionadded:: 0.2.0
    """
    given: tuple[object, ...] = tags  # typed callers aside, anything may come
    for tag in given:
        if not isinstance(tag, str):
            msg = f"tags are strings, not {type(tag).__qualname__}"
            raise TypeError(msg)
    found = _TAGS.get()
    if found is not None:
        found.extend(tags)


class _Variant(NamedTuple):
    """One representation: its headers for a 200 and for a 304, its body and tag."""

    encoding: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    not_modified: tuple[tuple[bytes, bytes], ...]
    body: bytes
    etag: bytes


class _Entry(NamedTuple):
    """What the cache holds for one response (immutable, so shared without copies)."""

    status: int
    variants: tuple[_Variant, ...]  # identity first
    last_modified: float | None
    tags: tuple[str, ...]  # backend tag names
    encodings: tuple[bytes, ...]  # of variants[1:]


class _EntryTags:
    """The fill protocol's view of a response's tags: they travel with the entry."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def tags(self, args: Any, kwargs: Any, value: _Entry) -> tuple[str, ...]:
        return value.tags


class ResponseCache:
    """
    Pure ASGI middleware caching whole ``GET``/``HEAD`` responses by route.

    A request for one of *routes* is looked up before the app runs: a hit is
    answered from the cache (status, headers, body) without routing,
    validation, the handler or serialization; a miss runs the app once for
    all concurrent identical requests and stores what it answered. The key
    is the path, the query string with its parameters in a canonical order,
    the values of the route's ``vary`` headers, and the principal when the
    route has one.

    Responses are stored under the route's tags plus the ones the handler
    adds with :func:`tag_response`, in the same :class:`~perfkit.cache.Cache`
    as the data, so one ``cache.invalidate(tags=...)`` after a write drops
    the data and the responses built from it; a response built while such a
    write was being invalidated is not stored (the data cache's fill fence).

    Never stored: responses with ``Set-Cookie``, ``Cache-Control: no-store``
    or ``private`` (unless the route has a principal), ``Vary: *`` or a
    ``Vary`` on a header the route does not key on, statuses outside the
    route's (default 200/203), ``text/event-stream`` and bodies over
    *max_body* bytes (those stream through untouched). Requests carrying
    ``Authorization`` or ``Cookie`` are passed through unless the route has a
    ``principal``.

    Each stored response gets a strong ``ETag`` (a digest of its body, the
    same in every process) and, when it is text-like and at least *min_size*
    bytes, compressed variants (``br``, ``gzip``) made once at store time,
    each with the weak form of that tag. ``If-None-Match`` and, where the app
    sent ``Last-Modified``, ``If-Modified-Since`` are answered with 304 and
    no body. The cache's counters (``Cache.stats``, ``Server-Timing``) count
    response hits and misses with the data's.

    Args:
        app: The ASGI app to wrap (outermost but for the timing middleware).
        cache: The cache holding the data the responses are built from.
        routes: The routes to cache.
        compress: Store and serve compressed variants.
        min_size: Smallest body worth compressing.
        max_body: Largest body stored.
        surrogate_keys: Send the tags in a ``Surrogate-Key`` header (for a CDN
            that purges by tag).
        gzip_level: zlib level for stored gzip variants.
        brotli_quality: Brotli quality for stored ``br`` variants.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        cache: Cache,
        routes: Iterable[CachedRoute],
        compress: bool = True,
        min_size: int = MIN_SIZE,
        max_body: int = _MAX_BODY,
        surrogate_keys: bool = False,
        gzip_level: int = 9,
        brotli_quality: int = 6,
    ) -> None:
        self.app = app
        self.cache = cache
        self.routes = tuple(routes)
        self.min_size = min_size
        self.max_body = max_body
        self.surrogate_keys = surrogate_keys
        self._encoders: tuple[Encoder, ...] = (
            encoders(gzip_level=gzip_level, brotli_quality=brotli_quality) if compress else ()
        )
        self._static: dict[str, CachedRoute] = {}
        self._dynamic: list[CachedRoute] = []
        given: tuple[object, ...] = self.routes
        for route in given:
            if not isinstance(route, CachedRoute):
                msg = f"routes= takes CachedRoute objects, not {type(route).__qualname__}"
                raise TypeError(msg)
            if route.static:
                self._static.setdefault(route.path, route)
            else:
                self._dynamic.append(route)
        self._runtime = cache._runtime  # one library: the data cache's runtime, shared
        self._prefix = cache.key("http:")
        self._flights = TaskFlights()
        self._contexts = {
            route: _fill.FillContext(
                runtime=self._runtime,
                keys=_EntryTags(self._prefix + route.path),  # type: ignore[arg-type]
                ttl=cache.ttl if route.ttl is None else route.ttl,
                none_ttl=1.0,
                jitter=cache.jitter,
                cache_none=False,
            )
            for route in self.routes
        }
        self._chosen: dict[tuple[bytes | None, tuple[bytes, ...]], int] = {}

    async def __call__(  # noqa: PLR0912, PLR0915 - the hit path, inline: no call it can spare
        self, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if scope["type"] != "http" or (method := scope["method"]) not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = self._static.get(path)
        params: dict[str, Any] | None = None
        if route is None:
            for candidate in self._dynamic:
                params = candidate.match(path)
                if params is not None:
                    route = candidate
                    break
            else:
                await self.app(scope, receive, send)
                return
        match_tag = since = accept = None
        credentials = False
        varied: list[bytes] | None = [] if route.vary else None
        for name, value in scope["headers"]:
            if name == b"accept-encoding":
                accept = value if accept is None else accept + b"," + value
            elif name == b"if-none-match":
                match_tag = value if match_tag is None else match_tag + b"," + value
            elif name == b"if-modified-since":
                since = value
            elif name in {b"authorization", b"cookie"}:
                credentials = True
            if varied is not None and name in route.vary:
                varied.append(name + b"=" + value)
        key = self._key(path, scope.get("query_string", b""), varied)
        if route.principal is not None:
            who = route.principal(scope)
            if who is None and credentials:
                await self.app(scope, receive, send)  # credentials it cannot vouch for
                return
            key += "@" + _escape(who or "")
        elif credentials:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # what the timing middleware reports as http.route
        runtime = self._runtime
        entry: Any = MISSING
        if not runtime.pending:
            try:
                entry = runtime.backend.peek(key)
            except Exception:  # the full path below counts it and fails open
                entry = MISSING
        if entry is not MISSING:
            if type(entry) is not _Entry:
                entry = _revive(entry)
            runtime.hits += 1
            timing = CURRENT.get()
            if timing is not None:
                timing.cache_hits += 1
        else:
            fill = _Fill(self, route, params or {}, scope, receive, send)
            steps = _fill.call_steps(self._contexts[route], self._flights, key, (), {})
            entry = await _fill.arun(steps, fill, runtime.clock)
            if entry is not None and type(entry) is not _Entry:
                entry = _revive(entry)
            if entry is None:  # not storable: answered by the app itself
                if fill.error is not None:
                    raise fill.error
                if not fill.answered:  # a follower of an answer that was not for sharing
                    await self.app(scope, receive, send)
                return
        await self._answer(entry, method == "HEAD", accept, match_tag, since, send)

    def _key(self, path: str, query: bytes, varied: list[bytes] | None) -> str:
        # The separators are escaped inside each part, so two requests never share a key.
        key = _escape(path) if _SEPARATORS.search(path) else path
        if query:
            key += "?" + _escape(_canonical_query(query))
        if varied:
            key += "|" + _escape(b"\x1f".join(sorted(varied)).decode("latin-1"))
        if len(key) > _MAX_KEY:
            key = "#" + hashlib.blake2b(key.encode("utf-8", "surrogatepass")).hexdigest()
        return self._prefix + key

    async def _answer(  # noqa: PLR0917 - once per hit: no keywords to pack
        self,
        entry: _Entry,
        head: bool,
        accept: bytes | None,
        match_tag: bytes | None,
        since: bytes | None,
        send: Send,
    ) -> None:
        variant = entry.variants[self._variant(entry, accept) if entry.encodings else 0]
        if entry.status < 300 and (  # a 304 stands for a 2xx (RFC 9110 section 15.4.5)
            (
                match_tag is not None
                and (match_tag == variant.etag or none_match(match_tag, variant.etag))
            )
            or (
                match_tag is None
                and since is not None
                and entry.last_modified is not None
                and not_modified_since(since, entry.last_modified)
            )
        ):
            await send(
                {"type": "http.response.start", "status": 304, "headers": variant.not_modified}
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await send(
            {"type": "http.response.start", "status": entry.status, "headers": variant.headers}
        )
        await send({"type": "http.response.body", "body": b"" if head else variant.body})

    def _variant(self, entry: _Entry, accept: bytes | None) -> int:
        slot = (accept, entry.encodings)
        found = self._chosen.get(slot)
        if found is None:
            usable = tuple(e for e in self._encoders if e.token in entry.encodings)
            choice = -1 if accept is None else negotiate(accept, usable)
            found = 0 if choice < 0 else 1 + entry.encodings.index(usable[choice].token)
            if len(self._chosen) < _MAX_NEGOTIATED:
                self._chosen[slot] = found
        return found

    # -- building an entry -------------------------------------------------------

    def storable(self, route: CachedRoute, status: int, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether a response with *status* and *headers* may be stored for *route*."""
        if status not in route.statuses:
            return False
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"set-cookie":
                return False
            if lowered == b"cache-control":
                control = value.lower()
                if b"no-store" in control or (b"private" in control and route.principal is None):
                    return False
            elif lowered == b"content-type" and value.split(b";", 1)[0].strip().lower() == (
                b"text/event-stream"
            ):
                return False
        varies = vary_names(headers) - {b"accept-encoding"}
        return b"*" not in varies and varies <= set(route.vary)

    def entry(  # noqa: PLR0912, PLR0917 - one pass over the headers
        self,
        route: CachedRoute,
        params: dict[str, Any],
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        added: list[str],
    ) -> _Entry:
        """The cache entry of a response the app sent."""
        names = list(dict.fromkeys([*route.tags_for(params), *added]))
        kept: list[tuple[bytes, bytes]] = []
        control = route.cache_control
        own_etag = None
        content_type = content_encoding = last_modified = None
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"cache-control":
                control = value
            elif lowered == b"etag":
                own_etag = value
            elif lowered == b"content-type":
                content_type = value
            elif lowered == b"content-encoding":
                content_encoding = value
            elif lowered == b"last-modified":
                last_modified = value
            if lowered not in _OWN:
                kept.append((lowered, value))
        squeeze = (
            bool(self._encoders)
            and len(body) >= self.min_size
            and compressible(content_type, content_encoding)
        )
        vary = sorted(
            vary_names(headers) | set(route.vary) | ({b"accept-encoding"} if squeeze else set())
        )
        common = [(b"cache-control", control)]
        if vary:
            common.append((b"vary", b", ".join(_VARY_NAMES.get(v, v) for v in vary)))
        if self.surrogate_keys and names:
            common.append((b"surrogate-key", " ".join(names).encode("utf-8")))
        if last_modified is not None:
            common.append((b"last-modified", last_modified))
        etag = own_etag or etag_of(body)
        variants = [_variant(b"", kept, common, body, etag)]
        encodings: list[bytes] = []
        if squeeze:
            for encoder in self._encoders:
                squeezed = encoder.compress(body)
                if len(squeezed) < len(body):
                    encoded = [*kept, (b"content-encoding", encoder.token)]
                    variants.append(_variant(encoder.token, encoded, common, squeezed, weak(etag)))
                    encodings.append(encoder.token)
        return _Entry(
            status=status,
            variants=tuple(variants),
            last_modified=None if last_modified is None else parse_http_date(last_modified),
            tags=tuple(map(self.cache.tag, names)),
            encodings=tuple(encodings),
        )


_VARY_NAMES: Final = {b"accept-encoding": b"Accept-Encoding"}


def _variant(
    encoding: bytes,
    kept: list[tuple[bytes, bytes]],
    common: list[tuple[bytes, bytes]],
    body: bytes,
    etag: bytes,
) -> _Variant:
    tagged = [*common, (b"etag", etag)]
    # A 304 carries what the 200 would have of ETag, Cache-Control, Vary, Last-Modified
    # (RFC 9110 section 15.4.5), and no Content-Length: it has no content.
    return _Variant(
        encoding=encoding,
        headers=(*kept, *tagged, (b"content-length", b"%d" % len(body))),
        not_modified=tuple(tagged),
        body=body,
        etag=etag,
    )


def _revive(value: Any) -> _Entry:
    """An entry a remote backend decoded as plain tuples."""
    status, variants, last_modified, tags, encodings = value
    return _Entry(
        status,
        tuple(
            _Variant(enc, tuple(map(tuple, h)), tuple(map(tuple, nm)), body, etag)
            for enc, h, nm, body, etag in variants
        ),
        last_modified,
        tuple(tags),
        tuple(encodings),
    )


def _canonical_query(query: bytes) -> str:
    """
    The query string, its parameters sorted by decoded name (a name's values keep their
    order, however each was spelt: ``a=1&%61=2`` and ``%61=2&a=1`` stay apart).
    """
    parts = [part for part in query.split(b"&") if part]
    if len(parts) > 1:
        parts.sort(key=_decoded_name)
    return b"&".join(parts).decode("latin-1")


def _decoded_name(part: bytes) -> str:
    return unquote_plus(part.split(b"=", 1)[0].decode("latin-1"))


_SEPARATORS: Final = re.compile(r"[%?|@#]")


def _escape(part: str) -> str:
    """*part* with the key's separators percent-escaped."""
    if not _SEPARATORS.search(part):
        return part
    return (
        part.replace("%", "%25").replace("?", "%3F").replace("|", "%7C").replace("@", "%40")
    ).replace("#", "%23")


class _Fill:
    """
    The loader of one miss: runs the app on a copy of the request made for
    everyone, and captures its response, or forwards it when it may not be stored.
    """

    __slots__ = (
        "added",
        "answered",
        "body",
        "cache",
        "complete",
        "error",
        "forwarding",
        "head",
        "headers",
        "params",
        "receive",
        "route",
        "scope",
        "send",
        "size",
        "started",
        "status",
    )

    def __init__(  # noqa: PLR0917 - the request's parts, once per miss
        self,
        cache: ResponseCache,
        route: CachedRoute,
        params: dict[str, Any],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        self.cache = cache
        self.route = route
        self.params = params
        self.scope = scope
        self.receive = receive
        self.send = send
        self.head = scope["method"] == "HEAD"
        self.answered = False
        self.forwarding = False
        self.error: BaseException | None = None
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.added: list[str] = []
        self.started = self.complete = False

    async def __call__(self) -> _Entry | None:
        scope = dict(self.scope)
        scope["method"] = "GET"  # a HEAD miss fills the GET entry it will be served from
        scope["headers"] = [(n, v) for n, v in self.scope["headers"] if n not in _FILL_STRIPPED]
        token = _TAGS.set(self.added)
        try:
            await self.cache.app(scope, self.receive, self._capture)
        except Exception as exc:
            # Kept for this request alone: concurrent followers run the app themselves.
            self.error = exc
            return None
        finally:
            _TAGS.reset(token)
        if self.forwarding:
            return None
        if not self.complete:  # nothing sent, or cut short (a client gone mid-stream): not stored
            self.answered = True
            if self.started:
                await self._start_forwarding(more=True)
            return None
        return self.cache.entry(
            self.route, self.params, self.status, self.headers, b"".join(self.body), self.added
        )

    async def _capture(self, message: Message) -> None:
        kind = message["type"]
        if self.forwarding:
            await self._forward(message)
            return
        if not self.started and kind != "http.response.start":
            await self.send(message)  # an extension's message before the response: not ours
            return
        if kind == "http.response.start":
            self.started = True
            self.status = message["status"]
            self.headers = list(message.get("headers", ()))
            if not self.cache.storable(self.route, self.status, self.headers):
                await self._start_forwarding(more=True)
            return
        if kind == "http.response.body":
            chunk = message.get("body", b"")
            self.size += len(chunk)
            self.body.append(chunk)
            self.complete = not message.get("more_body", False)
            if self.size > self.cache.max_body:
                await self._start_forwarding(more=bool(message.get("more_body", False)))
            return
        await self._start_forwarding(more=True)  # trailers or an extension: not for storing
        await self._forward(message)

    async def _start_forwarding(self, *, more: bool) -> None:
        """Send what was held back, then pass everything on as it comes."""
        self.forwarding = self.answered = True
        start = {"type": "http.response.start", "status": self.status, "headers": self.headers}
        await self.send(start)
        body, self.body = b"".join(self.body), []
        if body or not more:
            await self._forward({"type": "http.response.body", "body": body, "more_body": more})

    async def _forward(self, message: Message) -> None:
        if self.head and message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await self.send(message)
