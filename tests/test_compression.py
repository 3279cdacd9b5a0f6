"""
The Compression middleware and content negotiation, on a raw ASGI app.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import brotli
import pytest

from helpers import asgi_request
from perfkit.http import Compression
from perfkit.http._compression import compressible, encoders, negotiate

pytestmark = pytest.mark.anyio

TEXT = b'{"word":"' + b"compressible " * 100 + b'"}'


def app_sending(
    *chunks: bytes, content_type: bytes = b"application/json", extra: tuple[Any, ...] = ()
) -> Any:
    """A raw ASGI app that sends *chunks* as body messages."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", content_type), *extra]
        if len(chunks) == 1:
            headers.append((b"content-length", b"%d" % len(chunks[0])))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for index, chunk in enumerate(chunks):
            more = index < len(chunks) - 1
            await send({"type": "http.response.body", "body": chunk, "more_body": more})

    return app


async def test_a_whole_body_is_compressed_with_the_accepted_coding() -> None:
    """gzip and br clients get their coding, with a correct Content-Length."""
    app = Compression(app_sending(TEXT))

    zipped = await asgi_request(app, "GET", "/", headers={"accept-encoding": "gzip"})
    squeezed = await asgi_request(app, "GET", "/", headers={"accept-encoding": "br, gzip"})

    assert gzip.decompress(zipped.body) == TEXT
    assert brotli.decompress(squeezed.body) == TEXT
    assert zipped.header("content-length") == str(len(zipped.body))
    assert (zipped.header("content-encoding"), squeezed.header("content-encoding")) == (
        "gzip",
        "br",
    )
    assert zipped.header("vary") == "Accept-Encoding"


async def test_vary_is_sent_to_clients_that_did_not_ask() -> None:
    """A compressible response says Vary: Accept-Encoding even when sent as it is."""
    reply = await asgi_request(Compression(app_sending(TEXT)), "GET", "/")

    assert reply.body == TEXT
    assert reply.header("vary") == "Accept-Encoding"
    assert reply.header("content-encoding") is None


async def test_an_existing_vary_is_extended() -> None:
    """Vary: Accept-Language becomes Vary: Accept-Language, Accept-Encoding."""
    app = Compression(app_sending(TEXT, extra=((b"vary", b"Accept-Language"),)))

    reply = await asgi_request(app, "GET", "/", headers={"accept-encoding": "gzip"})

    assert reply.header("vary") == "Accept-Language, Accept-Encoding"


async def test_a_stream_is_compressed_chunk_by_chunk() -> None:
    """Each chunk is flushed: the client can decode it before the next arrives."""
    app = Compression(app_sending(b"first chunk " * 60, b"second chunk " * 60, b""))

    reply = await asgi_request(app, "GET", "/", headers={"accept-encoding": "gzip"})

    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert decoder.decompress(reply.chunks[0]) == b"first chunk " * 60
    assert decoder.decompress(reply.chunks[1]) == b"second chunk " * 60
    assert reply.header("content-length") is None


@pytest.mark.parametrize(
    ("content_type", "extra"),
    [
        (b"text/event-stream", ()),
        (b"image/png", ()),
        (b"application/json", ((b"content-encoding", b"gzip"),)),
    ],
)
async def test_what_is_never_compressed(content_type: bytes, extra: tuple[Any, ...]) -> None:
    """Event streams, binary types and already-encoded bodies pass untouched."""
    app = Compression(app_sending(TEXT, TEXT, content_type=content_type, extra=extra))

    reply = await asgi_request(app, "GET", "/", headers={"accept-encoding": "gzip, br"})

    assert reply.chunks == [TEXT, TEXT]
    assert reply.header("vary") is None


async def test_small_bodies_and_head_pass_untouched() -> None:
    """Under min_size, and HEAD requests, nothing changes."""
    small = await asgi_request(
        Compression(app_sending(b"{}")), "GET", "/", headers={"accept-encoding": "gzip"}
    )
    head = await asgi_request(
        Compression(app_sending(TEXT)), "HEAD", "/", headers={"accept-encoding": "gzip"}
    )

    assert (small.body, small.header("vary")) == (b"{}", None)
    assert head.header("content-encoding") is None


def test_negotiation_follows_q_values_then_the_server_order() -> None:
    """Highest q wins; ties go to br; q=0 refuses; * covers the rest."""
    available = encoders()
    names = [e.name for e in available]

    def pick(header: bytes) -> str:
        index = negotiate(header, available)
        return "identity" if index < 0 else names[index]

    assert pick(b"gzip, br") == "br"
    assert pick(b"gzip;q=1, br;q=0.5") == "gzip"
    assert pick(b"br;q=0, gzip") == "gzip"
    assert pick(b"gzip;q=0") == "identity"
    assert pick(b"*") == "br"
    assert pick(b"*;q=0.1, gzip;q=0.5") == "gzip"
    assert pick(b"deflate") == "identity"
    assert pick(b"gzip;q=junk") == "identity"


def test_compressible_types() -> None:
    """Text-like types compress; event streams, binaries and encoded bodies do not."""
    assert compressible(b"application/json; charset=utf-8", None)
    assert compressible(b"text/html", b"identity")
    assert compressible(b"application/problem+json", None)
    assert not compressible(b"text/event-stream", None)
    assert not compressible(b"image/jpeg", None)
    assert not compressible(b"application/json", b"br")
    assert not compressible(None, None)


async def test_ranges_are_never_compressed() -> None:
    """A 206 with Content-Range counts identity bytes: it passes untouched."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/plain"), (b"content-range", b"bytes 0-1299/5000")]
        await send({"type": "http.response.start", "status": 206, "headers": headers})
        await send({"type": "http.response.body", "body": TEXT})

    reply = await asgi_request(Compression(app), "GET", "/", headers={"accept-encoding": "gzip"})

    assert (reply.body, reply.header("content-encoding")) == (TEXT, None)


async def test_a_compressed_body_gets_a_weak_etag() -> None:
    """The app's strong ETag becomes weak once the bytes are compressed."""
    app = Compression(app_sending(TEXT, extra=((b"etag", b'"abc"'),)))

    reply = await asgi_request(app, "GET", "/", headers={"accept-encoding": "gzip"})

    assert reply.header("etag") == 'W/"abc"'
