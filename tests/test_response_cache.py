"""
The response cache on a plain Starlette app of the test's own (no FastAPI):
hits, tags, conditional requests, compression, users, streaming, single-flight.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import brotli
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from helpers import Reply, asgi_request
from perfkit.cache import Cache, MemoryBackend, RedisBackend, TieredBackend
from perfkit.http import CachedRoute, ResponseCache, tag_response

pytestmark = pytest.mark.anyio

BIG = {"items": [{"id": n, "text": f"note number {n} " * 4} for n in range(40)]}


class NotesApp:
    """A small app with its own data: what a user of perfkit.http would write."""

    def __init__(self) -> None:
        self.notes = {1: "first", 2: "second", 42: "answer"}
        self.calls: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None
        self.during: Any = None
        routes = [
            Route("/notes/{note_id:int}", self.note),
            Route("/notes", self.search),
            Route("/big", self.big),
            Route("/me", self.me),
            Route("/cookie", self.cookie),
            Route("/nostore", self.nostore),
            Route("/private", self.private),
            Route("/vary-star", self.vary_star),
            Route("/missing", self.missing),
            Route("/events", self.events),
            Route("/slow", self.slow),
            Route("/by-name/{name}", self.by_name),
            Route("/boom", self.boom),
            Route("/dated", self.dated),
        ]
        self.app = Starlette(routes=routes)

    async def note(self, request: Request) -> Response:
        note_id = request.path_params["note_id"]
        self.calls["note"] += 1
        if self.during is not None:
            self.during()
        if note_id not in self.notes:
            return JSONResponse({"error": "no such note"}, status_code=404)
        return JSONResponse(
            {"id": note_id, "text": self.notes[note_id]}, headers={"x-note": str(note_id)}
        )

    async def search(self, request: Request) -> Response:
        self.calls["search"] += 1
        return JSONResponse(dict(request.query_params))

    async def big(self, _request: Request) -> Response:
        self.calls["big"] += 1
        return JSONResponse(BIG)

    async def me(self, request: Request) -> Response:
        self.calls["me"] += 1
        return JSONResponse({"user": request.headers.get("authorization", "anonymous")})

    async def cookie(self, _request: Request) -> Response:
        self.calls["cookie"] += 1
        response = JSONResponse({"ok": True})
        response.set_cookie("session", "s3cr3t")
        return response

    async def nostore(self, _request: Request) -> Response:
        self.calls["nostore"] += 1
        return JSONResponse({"ok": True}, headers={"cache-control": "no-store"})

    async def private(self, _request: Request) -> Response:
        self.calls["private"] += 1
        return JSONResponse({"ok": True}, headers={"cache-control": "private, max-age=60"})

    async def vary_star(self, _request: Request) -> Response:
        self.calls["vary-star"] += 1
        return JSONResponse({"ok": True}, headers={"vary": "*"})

    async def missing(self, _request: Request) -> Response:
        self.calls["missing"] += 1
        return JSONResponse({"error": "gone"}, status_code=404)

    async def events(self, _request: Request) -> Response:
        self.calls["events"] += 1

        async def stream() -> AsyncIterator[bytes]:
            for n in range(3):
                yield f"data: {n}\n\n".encode()

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def slow(self, _request: Request) -> Response:
        self.calls["slow"] += 1
        assert self.gate is not None
        await self.gate.wait()
        return JSONResponse({"slow": True})

    def by_name(self, request: Request) -> Response:  # sync: Starlette runs it in a thread
        self.calls["by-name"] += 1
        name = request.path_params["name"]
        found = next(i for i, text in self.notes.items() if text == name)
        tag_response(f"note:{found}")
        return JSONResponse({"id": found})

    async def boom(self, _request: Request) -> Response:
        self.calls["boom"] += 1
        raise RuntimeError("the handler failed")

    async def dated(self, _request: Request) -> Response:
        self.calls["dated"] += 1
        return PlainTextResponse(
            "dated", headers={"last-modified": "Sun, 06 Nov 1994 08:49:37 GMT"}
        )


ROUTES = [
    CachedRoute("/notes/{note_id}", params={"note_id": int}, tags=["note:{note_id}"]),
    CachedRoute("/notes", tags=["notes"]),
    CachedRoute("/big", tags=["notes"]),
    CachedRoute("/me"),
    CachedRoute("/cookie"),
    CachedRoute("/nostore"),
    CachedRoute("/private"),
    CachedRoute("/vary-star"),
    CachedRoute("/missing"),
    CachedRoute("/events"),
    CachedRoute("/slow"),
    CachedRoute("/by-name/{name}"),
    CachedRoute("/boom"),
    CachedRoute("/dated"),
]


@pytest.fixture
def notes() -> NotesApp:
    """The user's app."""
    return NotesApp()


@pytest.fixture
def memory_cache() -> Cache:
    """An in-process cache."""
    return Cache(MemoryBackend(), namespace="notes")


@pytest.fixture
def served(notes: NotesApp, memory_cache: Cache) -> ResponseCache:
    """The app behind the response cache."""
    return ResponseCache(notes.app, cache=memory_cache, routes=ROUTES)


async def get(app: Any, path: str, query: str = "", **headers: str) -> Reply:
    """GET *path* with *headers* (underscores become dashes)."""
    given = {k.replace("_", "-"): v for k, v in headers.items()}
    return await asgi_request(app, "GET", path, query=query, headers=given)


async def test_a_hit_answers_without_running_the_app(
    served: ResponseCache, notes: NotesApp
) -> None:
    """The second GET is answered from the cache with the same status, headers and body."""
    first = await get(served, "/notes/1")
    second = await get(served, "/notes/1")

    assert notes.calls["note"] == 1
    assert (second.status, second.body) == (200, b'{"id":1,"text":"first"}')
    assert first.body == second.body
    assert second.header("x-note") == "1"
    assert second.header("content-type") == "application/json"
    assert str(len(second.body)) == second.header("content-length")
    assert second.header("cache-control") == "no-cache"
    assert first.header("etag") == second.header("etag")
    assert second.header("etag").startswith('"')  # strong


async def test_a_tag_invalidation_drops_the_response(
    served: ResponseCache, notes: NotesApp, memory_cache: Cache
) -> None:
    """cache.invalidate_tags, the call a store's write makes, drops the response."""
    await get(served, "/notes/42")
    notes.notes[42] = "changed"
    memory_cache.invalidate_tags("note:42")

    reply = await get(served, "/notes/42")

    assert reply.body == b'{"id":42,"text":"changed"}'
    assert notes.calls["note"] == 2


async def test_a_typed_parameter_is_tagged_canonically(
    served: ResponseCache, notes: NotesApp, memory_cache: Cache
) -> None:
    """/notes/042 is the note 42 and is dropped by the tag note:42."""
    await get(served, "/notes/042")
    notes.notes[42] = "changed"
    memory_cache.invalidate_tags("note:42")

    assert b"changed" in (await get(served, "/notes/042")).body


async def test_a_write_during_the_fill_keeps_the_response_out(
    served: ResponseCache, notes: NotesApp, memory_cache: Cache
) -> None:
    """A response built while its tag was invalidated is served but not stored."""
    notes.during = lambda: memory_cache.invalidate_tags("note:1")
    await get(served, "/notes/1")
    notes.during = None

    await get(served, "/notes/1")

    assert notes.calls["note"] == 2


async def test_handler_tags_from_a_sync_handler(
    served: ResponseCache, notes: NotesApp, memory_cache: Cache
) -> None:
    """tag_response in a thread-pool handler tags the response it builds."""
    await get(served, "/by-name/answer")
    await get(served, "/by-name/answer")
    assert notes.calls["by-name"] == 1

    memory_cache.invalidate_tags("note:42")
    await get(served, "/by-name/answer")

    assert notes.calls["by-name"] == 2


async def test_the_query_is_part_of_the_key_in_canonical_order(
    served: ResponseCache, notes: NotesApp
) -> None:
    """Reordered parameters share an entry; other values do not."""
    a = await get(served, "/notes", "a=1&b=2")
    b = await get(served, "/notes", "b=2&a=1")
    c = await get(served, "/notes", "a=1&b=3")

    assert a.body == b.body
    assert c.body == b'{"a":"1","b":"3"}'
    assert notes.calls["search"] == 2


async def test_if_none_match_is_a_304_without_the_handler(
    served: ResponseCache, notes: NotesApp
) -> None:
    """A current ETag gets 304 with ETag, Cache-Control and no body."""
    etag = (await get(served, "/notes/1")).header("etag")

    reply = await get(served, "/notes/1", if_none_match=etag)

    assert reply.status == 304
    assert reply.body == b""
    assert etag == reply.header("etag")
    assert reply.header("cache-control") == "no-cache"
    assert reply.header("content-length") is None
    assert notes.calls["note"] == 1


async def test_if_none_match_lists_and_weak_forms_match(served: ResponseCache) -> None:
    """Weak comparison: W/"x" matches "x", and any tag of a list matches."""
    etag = (await get(served, "/notes/1")).header("etag")

    listed = await get(served, "/notes/1", if_none_match=f'"other", W/{etag}')
    star = await get(served, "/notes/1", if_none_match="*")
    stale = await get(served, "/notes/1", if_none_match='"other"')

    assert (listed.status, star.status, stale.status) == (304, 304, 200)


async def test_a_miss_with_a_matching_etag_is_a_304(
    served: ResponseCache, notes: NotesApp, memory_cache: Cache
) -> None:
    """After an eviction, the same body has the same ETag: still a 304."""
    etag = (await get(served, "/notes/1")).header("etag")
    memory_cache.clear()

    reply = await get(served, "/notes/1", if_none_match=etag)

    assert reply.status == 304
    assert notes.calls["note"] == 2


async def test_the_etag_changes_with_the_body(
    served: ResponseCache, notes: NotesApp, memory_cache: Cache
) -> None:
    """A changed body has a new ETag, and the old one no longer matches."""
    old = (await get(served, "/notes/1")).header("etag")
    notes.notes[1] = "edited"
    memory_cache.invalidate_tags("note:1")

    reply = await get(served, "/notes/1", if_none_match=old)

    assert reply.status == 200
    assert old != reply.header("etag")


async def test_etags_are_the_same_in_every_process(notes: NotesApp) -> None:
    """Two caches (two workers) give one body the same ETag."""
    one = ResponseCache(notes.app, cache=Cache(MemoryBackend()), routes=ROUTES)
    two = ResponseCache(NotesApp().app, cache=Cache(MemoryBackend()), routes=ROUTES)

    assert (await get(one, "/notes/1")).header("etag") == (await get(two, "/notes/1")).header(
        "etag"
    )


async def test_if_modified_since_where_the_app_sent_last_modified(
    served: ResponseCache, notes: NotesApp
) -> None:
    """Last-Modified is kept; If-Modified-Since at or after it is a 304."""
    first = await get(served, "/dated")
    same = await get(served, "/dated", if_modified_since="Sun, 06 Nov 1994 08:49:37 GMT")
    older = await get(served, "/dated", if_modified_since="Sat, 05 Nov 1994 08:49:37 GMT")
    junk = await get(served, "/dated", if_modified_since="yesterday")

    assert first.header("last-modified") == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert (same.status, older.status, junk.status) == (304, 200, 200)
    assert same.header("last-modified") == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert notes.calls["dated"] == 1


async def test_head_is_served_from_the_get_entry(served: ResponseCache, notes: NotesApp) -> None:
    """HEAD fills and reads the GET entry and sends no body."""
    head = await asgi_request(served, "HEAD", "/notes/2")
    got = await get(served, "/notes/2")
    again = await asgi_request(served, "HEAD", "/notes/2")

    assert (head.status, head.body, again.body) == (200, b"", b"")
    assert got.header("content-length") == head.header("content-length")
    assert got.header("etag") == again.header("etag")
    assert notes.calls["note"] == 1


async def test_compressed_variants_are_made_once(served: ResponseCache, notes: NotesApp) -> None:
    """gzip and br clients get their coding from one stored entry; identity clients too."""
    plain = await get(served, "/big")
    zipped = await get(served, "/big", accept_encoding="gzip")
    squeezed = await get(served, "/big", accept_encoding="gzip, br")

    assert json.loads(plain.body) == BIG
    assert plain.body == gzip.decompress(zipped.body)
    assert plain.body == brotli.decompress(squeezed.body)
    assert (
        zipped.header("content-encoding"),
        squeezed.header("content-encoding"),
    ) == ("gzip", "br")
    assert plain.header("content-encoding") is None
    assert str(len(zipped.body)) == zipped.header("content-length")
    for reply in (plain, zipped, squeezed):
        assert reply.header("vary") == "Accept-Encoding"
    assert f"W/{plain.header('etag')}" == zipped.header("etag") == squeezed.header("etag")
    assert notes.calls["big"] == 1


async def test_a_compressed_304_carries_the_weak_tag(served: ResponseCache) -> None:
    """A gzip client revalidating gets 304 with the weak tag and Vary."""
    etag = (await get(served, "/big", accept_encoding="gzip")).header("etag")

    reply = await get(served, "/big", accept_encoding="gzip", if_none_match=etag)

    assert (304, etag, "Accept-Encoding") == (
        reply.status,
        reply.header("etag"),
        reply.header("vary"),
    )


async def test_q_values_are_honoured(served: ResponseCache) -> None:
    """br;q=0 refuses br; gzip;q=0 with identity gets the identity body."""
    assert (await get(served, "/big", accept_encoding="br;q=0, gzip")).header(
        "content-encoding"
    ) == "gzip"
    assert (await get(served, "/big", accept_encoding="gzip;q=0")).header(
        "content-encoding"
    ) is None


async def test_small_bodies_are_not_compressed_and_do_not_vary(served: ResponseCache) -> None:
    """A body under min_size could not have been compressed: no Vary."""
    reply = await get(served, "/notes/1", accept_encoding="gzip")

    assert reply.header("content-encoding") is None
    assert reply.header("vary") is None


async def test_requests_with_credentials_are_never_shared(
    served: ResponseCache, notes: NotesApp
) -> None:
    """Authorization or Cookie without a principal: the app answers every time."""
    alice = await get(served, "/me", authorization="Bearer alice")
    bob = await get(served, "/me", authorization="Bearer bob")
    cookie = await get(served, "/me", cookie="session=carol")
    anonymous = await get(served, "/me")

    assert alice.body == b'{"user":"Bearer alice"}'
    assert bob.body == b'{"user":"Bearer bob"}'
    assert anonymous.body == b'{"user":"anonymous"}'
    assert cookie.status == 200
    assert notes.calls["me"] == 4


async def test_a_principal_route_caches_per_user(notes: NotesApp, memory_cache: Cache) -> None:
    """With a principal, each user gets their own entry, marked private."""

    def principal(scope: Any) -> str | None:
        for name, value in scope["headers"]:
            if name == b"authorization" and value.startswith(b"Bearer "):
                return value[7:].decode()
        return None

    served = ResponseCache(
        notes.app, cache=memory_cache, routes=[CachedRoute("/me", principal=principal)]
    )
    replies = [
        await get(served, "/me", authorization=f"Bearer {who}")
        for who in ("alice", "bob", "alice", "bob")
    ]
    unknown = await get(served, "/me", cookie="session=who-knows")

    assert [json.loads(r.body)["user"][7:].encode() for r in replies] == [
        b"alice",
        b"bob",
        b"alice",
        b"bob",
    ]
    assert replies[2].header("cache-control") == "private, no-cache"
    assert unknown.status == 200
    assert notes.calls["me"] == 3  # alice, bob, and the unverifiable cookie


@pytest.mark.parametrize("path", ["/cookie", "/nostore", "/private", "/vary-star", "/missing"])
async def test_responses_that_must_not_be_stored(
    served: ResponseCache, notes: NotesApp, path: str
) -> None:
    """Set-Cookie, no-store, private, Vary: * and a 404 reach the client as sent, every time."""
    first = await get(served, path)
    second = await get(served, path)

    assert notes.calls[path.strip("/")] == 2
    assert first.headers == second.headers
    assert first.header("etag") is None


async def test_set_cookie_reaches_its_own_client(served: ResponseCache) -> None:
    """The response that sets a cookie goes out with it, untouched."""
    reply = await get(served, "/cookie")

    assert "session=s3cr3t" in reply.header("set-cookie")


async def test_event_streams_pass_through_as_streamed(
    served: ResponseCache, notes: NotesApp
) -> None:
    """text/event-stream is not buffered, stored or compressed."""
    reply = await get(served, "/events", accept_encoding="gzip")
    again = await get(served, "/events", accept_encoding="gzip")

    assert [c for c in reply.chunks if c] == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
    assert reply.header("content-encoding") is None
    assert again.chunks == reply.chunks
    assert notes.calls["events"] == 2


async def test_bodies_over_max_body_stream_through(notes: NotesApp, memory_cache: Cache) -> None:
    """A body larger than max_body is sent whole, and not stored."""
    served = ResponseCache(notes.app, cache=memory_cache, routes=ROUTES, max_body=100)

    first = await get(served, "/big")
    second = await get(served, "/big")

    assert BIG == json.loads(first.body) == json.loads(second.body)
    assert notes.calls["big"] == 2


async def test_concurrent_misses_run_the_handler_once(
    served: ResponseCache, notes: NotesApp
) -> None:
    """Single-flight: ten tasks missing together share one handler run."""
    notes.gate = asyncio.Event()
    tasks = [asyncio.create_task(get(served, "/slow")) for _ in range(10)]
    await asyncio.sleep(0.05)
    notes.gate.set()
    replies = await asyncio.gather(*tasks)

    assert {b'{"slow":true}'} == {r.body for r in replies}
    assert notes.calls["slow"] == 1


async def test_followers_of_an_unshareable_answer_ask_the_app(
    notes: NotesApp, memory_cache: Cache
) -> None:
    """Concurrent requests for a Set-Cookie response each get their own."""
    served = ResponseCache(notes.app, cache=memory_cache, routes=[CachedRoute("/cookie")])
    replies = await asyncio.gather(*(get(served, "/cookie") for _ in range(5)))

    assert all("session=" in r.header("set-cookie") for r in replies)
    assert notes.calls["cookie"] == 5


async def test_a_failing_handler_raises_for_its_own_request(
    served: ResponseCache, notes: NotesApp
) -> None:
    """A handler's exception reaches the server (Starlette's 500 is sent first)."""
    with pytest.raises(RuntimeError, match="the handler failed"):
        await get(served, "/boom")
    with pytest.raises(RuntimeError):
        await get(served, "/boom")

    assert notes.calls["boom"] == 2


async def test_other_methods_and_routes_pass_through(
    served: ResponseCache, notes: NotesApp
) -> None:
    """POST to a cached path, and GET of an unlisted path, reach the app."""
    post = await asgi_request(served, "POST", "/notes/1")
    unknown = await get(served, "/nowhere")

    assert (post.status, unknown.status) == (405, 404)


async def test_surrogate_keys_carry_the_tags(notes: NotesApp, memory_cache: Cache) -> None:
    """surrogate_keys=True sends the tags for a CDN to purge by."""
    served = ResponseCache(notes.app, cache=memory_cache, routes=ROUTES, surrogate_keys=True)

    assert (await get(served, "/notes/1")).header("surrogate-key") == "note:1"


async def test_route_templates_are_checked() -> None:
    """Tags naming unknown parameters, bad params= and strings for lists are refused."""
    with pytest.raises(ValueError, match="may only use"):
        CachedRoute("/notes/{note_id}", tags=["note:{id}"])
    with pytest.raises(ValueError, match="does not have"):
        CachedRoute("/notes/{note_id}", params={"id": int})
    with pytest.raises(TypeError, match="int, str or uuid"):
        CachedRoute("/notes/{note_id}", params={"note_id": float})
    with pytest.raises(TypeError, match="collections"):
        CachedRoute("/notes", tags="notes")
    with pytest.raises(ValueError, match="starts with"):
        CachedRoute("notes")
    with pytest.raises(TypeError, match="strings"):
        tag_response(42)  # type: ignore[arg-type]


@pytest.fixture
def remote_caches(redis_url: str, redis_prefix: str) -> Iterator[list[Cache]]:
    """A Redis cache and a tiered cache on it."""
    redis_backend = RedisBackend(redis_url, prefix=redis_prefix)
    tiered = TieredBackend(RedisBackend(redis_url, prefix=redis_prefix + "t"))
    caches = [Cache(redis_backend, namespace="notes"), Cache(tiered, namespace="notes")]
    yield caches
    for cache in caches:
        cache.backend.close()


async def test_redis_and_tiered_backends_hold_responses(
    remote_caches: list[Cache], notes: NotesApp
) -> None:
    """Entries survive the trip through Redis's codec, variants and all."""
    for cache in remote_caches:
        notes.calls.clear()
        served = ResponseCache(notes.app, cache=cache, routes=ROUTES)
        first = await get(served, "/big", accept_encoding="gzip")
        other = ResponseCache(notes.app, cache=cache, routes=ROUTES)  # a second worker
        second = await get(other, "/big", accept_encoding="gzip")
        not_modified = await get(
            other, "/big", accept_encoding="gzip", if_none_match=first.header("etag")
        )
        await cache.ainvalidate_tags("notes")
        third = await get(other, "/big")

        assert first.body == second.body
        assert first.headers == second.headers
        assert not_modified.status == 304
        assert json.loads(third.body) == BIG
        assert notes.calls["big"] == 2
        await cache.backend.aclose()


async def test_an_unreachable_backend_leaves_the_app_answering(notes: NotesApp) -> None:
    """Redis down: every request is answered by the app, none fails."""
    dead = RedisBackend("redis://127.0.0.1:1/0")
    served = ResponseCache(notes.app, cache=Cache(dead, namespace="notes"), routes=ROUTES)
    try:
        replies = [await get(served, "/notes/1") for _ in range(3)]
    finally:
        await dead.aclose()
        dead.close()

    assert [r.status for r in replies] == [200, 200, 200]
    assert notes.calls["note"] == 3


def _versioned_app(cache: Cache) -> tuple[ResponseCache, dict[str, int]]:
    """A sync (thread-pool) handler over a counter; a write commits, then invalidates."""
    state = {"version": 0}

    def read(_request: Request) -> Response:
        return JSONResponse({"version": state["version"]})

    def write(_request: Request) -> Response:
        state["version"] += 1  # the commit
        cache.invalidate_tags("counter")  # then the invalidation, as the stores do
        return JSONResponse(state)

    app = Starlette(routes=[Route("/counter", read), Route("/counter", write, methods=["POST"])])
    return ResponseCache(
        app, cache=cache, routes=[CachedRoute("/counter", tags=["counter"])]
    ), state


async def _readers_never_go_back(cache: Cache) -> int:
    served, state = _versioned_app(cache)
    committed = 0
    stale: list[tuple[int, int]] = []
    reads = 0
    done = False

    async def writer() -> None:
        nonlocal committed, done
        for _ in range(60):
            reply = await asgi_request(served, "POST", "/counter")
            committed = json.loads(reply.body)["version"]
            await asyncio.sleep(0)
        done = True

    async def reader() -> None:
        nonlocal reads
        while not done:
            floor = committed  # every write acknowledged before this read began
            seen = json.loads((await get(served, "/counter")).body)["version"]
            reads += 1
            if seen < floor:
                stale.append((seen, floor))
            await asyncio.sleep(0)  # a hit never suspends: let the writer run

    await asyncio.gather(writer(), *(reader() for _ in range(8)))
    assert stale == []
    assert state["version"] == 60
    return reads


async def test_concurrent_readers_never_see_a_response_older_than_a_write(
    memory_cache: Cache,
) -> None:
    """Eight reader tasks (handlers in threads) and a writer: no read older than its floor."""
    reads = await _readers_never_go_back(memory_cache)

    stats = memory_cache.stats
    assert reads > 60
    assert stats.loads < stats.hits + stats.misses  # reads were served by hits and shared loads


async def test_concurrent_readers_through_a_tiered_cache(redis_url: str, redis_prefix: str) -> None:
    """The same race on the tiered backend (L1 in process, L2 in Redis)."""
    cache = Cache(TieredBackend(RedisBackend(redis_url, prefix=redis_prefix)), namespace="notes")
    try:
        await _readers_never_go_back(cache)
    finally:
        await cache.backend.aclose()
        cache.backend.close()


async def test_a_stored_404_is_never_a_304(notes: NotesApp, memory_cache: Cache) -> None:
    """statuses= may store a 404; revalidating it answers the 404 again, not 304."""
    served = ResponseCache(
        notes.app, cache=memory_cache, routes=[CachedRoute("/missing", statuses={200, 404})]
    )
    first = await get(served, "/missing")

    again = await get(served, "/missing", if_none_match=first.header("etag"))

    assert (first.status, again.status) == (404, 404)
    assert notes.calls["missing"] == 1


async def test_separators_in_the_path_or_query_never_make_two_requests_one_key(
    notes: NotesApp, memory_cache: Cache
) -> None:
    """/by-name/a?b (a decoded %3F) and /by-name/a with query b are two entries."""
    served = ResponseCache(notes.app, cache=memory_cache, routes=[CachedRoute("/by-name/{name}")])

    assert served._key("/x/a?b", b"", None) != served._key("/x/a", b"b", None)
    assert served._key("/x", b"a=1|v=fr", None) != served._key("/x", b"a=1", [b"v=fr"])


async def test_names_spelt_two_ways_keep_their_order(served: ResponseCache) -> None:
    """a=1&%61=2 and %61=2&a=1 ask different things of the app: different entries."""
    one = await get(served, "/notes", "a=1&%61=2")
    two = await get(served, "/notes", "%61=2&a=1")

    assert one.body != two.body


async def test_a_response_cut_short_is_not_stored(memory_cache: Cache) -> None:
    """An app that ends without the final body message leaves nothing in the cache."""
    calls = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})

    served = ResponseCache(app, cache=memory_cache, routes=[CachedRoute("/cut")])
    first = await get(served, "/cut")
    await get(served, "/cut")

    assert first.body == b"part"
    assert calls == 2
