"""
Response compression: content negotiation and encoders (no I/O), and the
:class:`Compression` middleware for responses the response cache does not hold.

gzip comes from the standard library. Brotli comes from Google's ``brotli``
package (the reference implementation's own bindings, wheels for every
platform) when it is installed (``perfkit[http]``): every browser accepts
``br``, and it makes the example's JSON pages 11% smaller than gzip. zstd is
not offered: browsers that accept it also accept ``br``.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterable
from typing import Any, Final

from ._asgi import ASGIApp, Message, Receive, Scope, Send
from ._conditional import weak

__all__ = [
    "Compression",
    "Encoder",
    "compressible",
    "encoders",
    "negotiate",
]

MIN_SIZE: Final = 512
"""Bodies shorter than this are sent as they are: the headers would cost more than the saving."""

_TEXT_TYPES: Final = frozenset(
    {
        b"application/json",
        b"application/javascript",
        b"application/xml",
        b"application/x-ndjson",
        b"application/geo+json",
        b"image/svg+xml",
    }
)
_NEVER: Final = frozenset({b"text/event-stream"})  # a compressor buffers; events must not wait
_MAX_NEGOTIATED: Final = 256


class Encoder:
    """
    One content coding: its name and how to compress a whole body or a stream.
    """

    __slots__ = ("compress", "name", "stream", "token")

    def __init__(
        self,
        name: str,
        compress: Callable[[bytes], bytes],
        stream: Callable[[], Callable[[bytes, bool], bytes]],
    ) -> None:
        self.name = name
        self.token = name.encode("ascii")
        self.compress = compress
        self.stream = stream

    def __repr__(self) -> str:
        return f"Encoder({self.name!r})"


def _gzip(level: int) -> Encoder:
    def compress(body: bytes) -> bytes:
        return gzip.compress(body, compresslevel=level, mtime=0)

    def stream() -> Callable[[bytes, bool], bytes]:
        compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

        def feed(chunk: bytes, last: bool) -> bytes:
            # A sync flush after each chunk: a streamed response stays streamed.
            out = compressor.compress(chunk)
            return out + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)

        return feed

    return Encoder("gzip", compress, stream)


def _brotli(quality: int) -> Encoder | None:
    try:
        import brotli  # type: ignore[import-untyped]  # noqa: PLC0415 - optional: perfkit[http]
    except ImportError:
        return None
    mod: Any = brotli

    def compress(body: bytes) -> bytes:
        return bytes(mod.compress(body, quality=quality))

    def stream() -> Callable[[bytes, bool], bytes]:
        compressor = mod.Compressor(quality=quality)

        def feed(chunk: bytes, last: bool) -> bytes:
            out = compressor.process(chunk)
            return bytes(out + (compressor.finish() if last else compressor.flush()))

        return feed

    return Encoder("br", compress, stream)


def encoders(*, gzip_level: int = 6, brotli_quality: int = 5) -> tuple[Encoder, ...]:
    """
    The available encoders, in the server's order of preference (``br``, then ``gzip``).

    Args:
        gzip_level: zlib level, 1 (fastest) to 9 (smallest).
        brotli_quality: Brotli quality, 0 to 11 (11 is far slower for a few percent).
    """
    found = [_brotli(brotli_quality), _gzip(gzip_level)]
    return tuple(encoder for encoder in found if encoder is not None)


def compressible(content_type: bytes | None, content_encoding: bytes | None) -> bool:
    """
    Whether a response of *content_type* is worth compressing (text-like, not yet encoded).
    """
    if content_encoding is not None and content_encoding.strip().lower() not in (b"", b"identity"):
        return False
    if content_type is None:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    if media in _NEVER:
        return False
    return media.startswith(b"text/") or media in _TEXT_TYPES or media.endswith((b"+json", b"+xml"))


class _Negotiator:
    """Parses ``Accept-Encoding`` values, remembering the few distinct ones clients send."""

    __slots__ = ("_known", "encoders")

    def __init__(self, available: tuple[Encoder, ...]) -> None:
        self.encoders = available
        self._known: dict[bytes, int] = {}

    def __call__(self, accept_encoding: bytes | None) -> int:
        """The index of the encoder to use in ``encoders``, or -1 for identity."""
        if accept_encoding is None:
            return -1
        found = self._known.get(accept_encoding)
        if found is None:
            found = negotiate(accept_encoding, self.encoders)
            if len(self._known) < _MAX_NEGOTIATED:
                self._known[accept_encoding] = found
        return found


def negotiate(accept_encoding: bytes, available: tuple[Encoder, ...]) -> int:
    """
    Pick a content coding for an ``Accept-Encoding`` value (RFC 9110 section 12.5.3).

    Returns the index in *available* of the coding with the highest ``q``
    (ties go to the server's order), or -1 for identity.
    """
    weights: dict[bytes, float] = {}
    for item in accept_encoding.lower().split(b","):
        name, _, params = item.strip().partition(b";")
        q = 1.0
        params = params.strip()
        if params.startswith(b"q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        weights[name.strip()] = q
    star = weights.get(b"*", 0.0)
    best, best_q = -1, 0.0
    for index, encoder in enumerate(available):
        q = weights.get(encoder.token, star)
        if q > best_q:
            best, best_q = index, q
    return best


class Compression:
    """
    Pure ASGI middleware: compress responses the client accepts compressed.

    Compresses text-like bodies (``text/*``, JSON, XML, JavaScript, SVG) of at
    least *min_size* bytes with the best coding the client accepts (``br``
    when ``brotli`` is installed, else ``gzip``); a streamed body (several
    body messages) is compressed as it streams, flushed after each chunk.
    ``Vary: Accept-Encoding`` is added to every response that could have been
    compressed, whether or not this client asked for it, so no shared cache
    hands a compressed body to a client that cannot read it. Never touches
    ``text/event-stream``, bodies already encoded, or ``HEAD`` responses.

    Put it inside :class:`~perfkit.http.ResponseCache` (which compresses what
    it stores once, and asks the app for uncompressed bodies).

    Args:
        app: The ASGI app to wrap.
        min_size: Smallest body, in bytes, worth compressing.
        gzip_level: zlib level, 1-9.
        brotli_quality: Brotli quality, 0-11.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        min_size: int = MIN_SIZE,
        gzip_level: int = 6,
        brotli_quality: int = 4,
    ) -> None:
        self.app = app
        self.min_size = min_size
        self._negotiate = _Negotiator(
            encoders(gzip_level=gzip_level, brotli_quality=brotli_quality)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD":
            await self.app(scope, receive, send)
            return
        accept = None
        for name, value in scope.get("headers", ()):
            if name == b"accept-encoding":
                accept = value if accept is None else accept + b"," + value
        choice = self._negotiate(accept)
        encoder = None if choice < 0 else self._negotiate.encoders[choice]
        await self.app(scope, receive, _Compressing(send, encoder, self.min_size))


class _Compressing:
    """The ``send`` of one response going through :class:`Compression`."""

    __slots__ = ("encoder", "feed", "min_size", "send", "start")

    def __init__(self, send: Send, encoder: Encoder | None, min_size: int) -> None:
        self.send = send
        self.encoder = encoder
        self.min_size = min_size
        self.start: Message | None = None
        self.feed: Callable[[bytes, bool], bytes] | None = None

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            headers = message.get("headers", ())
            content_type = content_encoding = None
            ranged = False
            for name, value in headers:
                lowered = name.lower()
                if lowered == b"content-type":
                    content_type = value
                elif lowered == b"content-encoding":
                    content_encoding = value
                elif lowered == b"content-range" or (
                    lowered == b"cache-control" and b"no-transform" in value.lower()
                ):
                    ranged = True  # a byte range counts identity bytes; no-transform forbids it
            if (
                compressible(content_type, content_encoding)
                and not ranged
                and message.get("status", 200) not in (204, 206, 304)
            ):
                self.start = message  # held until the first body chunk tells the size
                return
            await self.send(message)
            return
        if kind != "http.response.body" or (self.start is None and self.feed is None):
            if self.start is not None:  # another message kind while the start is held
                start, self.start = self.start, None
                await self.send(start)
            await self.send(message)
            return
        await self._body(message)

    async def _body(self, message: Message) -> None:
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        start = self.start
        if start is not None:  # the first body message
            self.start = None
            headers = list(start.get("headers", ()))
            if not more and len(body) < self.min_size:  # could not have been compressed
                start["headers"] = headers
                await self.send(start)
                await self.send(message)
                return
            _add_vary(headers)
            if self.encoder is not None:
                headers = [
                    (n, weak(v) if n.lower() == b"etag" else v)  # other bytes, same content
                    for n, v in headers
                    if n.lower() != b"content-length"
                ]
                headers.append((b"content-encoding", self.encoder.token))
                if not more:
                    body = self.encoder.compress(body)
                    headers.append((b"content-length", b"%d" % len(body)))
                else:
                    self.feed = self.encoder.stream()
                    body = self.feed(body, False)
            start["headers"] = headers
            await self.send(start)
            await self.send({"type": "http.response.body", "body": body, "more_body": more})
            return
        if self.feed is not None:
            body = self.feed(body, not more)
        await self.send({"type": "http.response.body", "body": body, "more_body": more})


def _add_vary(headers: list[tuple[bytes, bytes]]) -> None:
    for index, (name, value) in enumerate(headers):
        if name.lower() == b"vary":
            names = {part.strip().lower() for part in value.split(b",")}
            if b"accept-encoding" not in names and b"*" not in names:
                headers[index] = (name, value + b", Accept-Encoding")
            return
    headers.append((b"vary", b"Accept-Encoding"))


def vary_names(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """The lower-cased header names listed in the ``Vary`` headers of *headers*."""
    names: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"vary":
            names.update(part.strip().lower() for part in value.split(b",") if part.strip())
    return names
