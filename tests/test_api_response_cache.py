"""
Freshness through HTTP: the example API with its response cache on answers
every GET as the same API with every cache off does, after any sequence of writes.

A Hypothesis state machine sends random writes (POST users, bills and votes,
PATCH bills) through the cached app and random GETs, some with the ETag last
seen (``If-None-Match``) and some accepting gzip, to both apps over one
database. A 304 must stand for the body the uncached app serves now; one ETag
never stands for two bodies. On the memory backend and on the tiered one (L1
in process, L2 in real Redis).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from bill_api.app import create_app
from helpers import delete_keys
from perfkit import db
from perfkit.cache import Backend, Cache, MemoryBackend, RedisBackend, TieredBackend
from perfkit.reference import codec, open_stores
from test_cache_invalidation import REMOTE_SETTINGS, _seed

names = st.sampled_from(["ada", "bob", "cyd", "dee", "eve"])
ids = st.integers(1, 5)
limits = st.integers(1, 3)
pages = st.integers(1, 3)
choices = st.sampled_from(["yes", "no", "abstain"])
statuses = st.sampled_from(["draft", "introduced", "passed", "failed"])


def _paths() -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds("/bills/{}".format, ids),
        st.builds("/users/{}".format, ids),
        st.builds("/users?username={}".format, names),
        st.builds("/bills/{}/votes/counts".format, ids),
        st.builds("/bills?page={}&limit={}".format, pages, limits),
        st.builds("/bills?limit={}&status={}".format, limits, statuses),
        st.builds("/bills?cursor=&limit={}".format, limits),
        st.builds("/bills/{}/votes?page={}&limit={}".format, ids, pages, limits),
        st.builds("/users/{}/votes?limit={}&page={}".format, ids, limits, pages),
    )


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


class HTTPFreshness(RuleBasedStateMachine):
    """Random writes and GETs; the cached API must answer as the uncached one."""

    make_backend: Callable[[], Backend] = staticmethod(MemoryBackend)
    cleanup: Callable[[Backend], None] = staticmethod(lambda backend: None)

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="perfkit-http-"))
        self.engine = db.create_engine(f"sqlite:///{self.directory / 'api.sqlite3'}")
        self.backend = self.make_backend()
        cached = open_stores(
            self.engine, cache=Cache(self.backend, namespace="http"), schema="create"
        )
        truth = open_stores(self.engine, schema="none")
        _seed(self.engine)
        self.loop = asyncio.new_event_loop()
        self.cached = _client(create_app(stores=cached))
        self.truth = _client(create_app(stores=truth))
        self.seen: dict[tuple[str, bool], tuple[str, Any]] = {}  # (path, gzip) -> last (etag, body)
        self.bodies: dict[tuple[str, bool, str], Any] = {}  # (path, gzip, etag) -> body

    def teardown(self) -> None:
        for client in (self.cached, self.truth):
            self.loop.run_until_complete(client.aclose())
        self.loop.run_until_complete(self.backend.aclose())  # the response cache's connections
        self.loop.close()
        type(self).cleanup(self.backend)
        self.engine.dispose()
        shutil.rmtree(self.directory, ignore_errors=True)

    def send(self, client: httpx.AsyncClient, method: str, path: str, **options: Any) -> Any:
        return self.loop.run_until_complete(client.request(method, path, **options))

    def write(self, method: str, path: str, body: dict[str, Any]) -> None:
        reply = self.send(self.cached, method, path, json=body)
        assert reply.status_code < 500, reply.text

    @rule(name=names)
    def create_user(self, name: str) -> None:
        self.write("POST", "/users", {"username": name, "email": f"{name}@example.org"})

    @rule(sponsor=ids, title=names, status=statuses)
    def create_bill(self, sponsor: int, title: str, status: str) -> None:
        self.write("POST", "/bills", {"title": title, "sponsor_id": sponsor, "status": status})

    @rule(bill=ids, title=st.none() | names, status=st.none() | statuses)
    def update_bill(self, bill: int, title: str | None, status: str | None) -> None:
        changes = {k: v for k, v in {"title": title, "status": status}.items() if v is not None}
        self.write("PATCH", f"/bills/{bill}", changes)

    @rule(bill=ids, user=ids, choice=choices)
    def cast(self, bill: int, user: int, choice: str) -> None:
        self.write("POST", f"/bills/{bill}/votes", {"user_id": user, "choice": choice})

    @rule(path=_paths(), revalidate=st.booleans(), gzip=st.booleans())
    def get(self, path: str, revalidate: bool, gzip: bool) -> None:
        headers = {"accept-encoding": "gzip" if gzip else "identity"}
        last = self.seen.get((path, gzip))
        if revalidate and last is not None:
            headers["if-none-match"] = last[0]
        reply = self.send(self.cached, "GET", path, headers=headers)
        expected = self.send(self.truth, "GET", path)
        if reply.status_code == 304:
            assert last is not None
            assert (expected.status_code, expected.json()) == (200, last[1])
            assert reply.headers["etag"] == last[0]
            return
        assert (reply.status_code, reply.json()) == (expected.status_code, expected.json())
        assert reply.headers.get("link") == expected.headers.get("link")
        etag = reply.headers.get("etag")
        if etag is None:
            return
        body = reply.json()
        known = self.bodies.setdefault((path, gzip, etag), body)
        assert known == body, "one ETag stood for two bodies"
        self.seen[(path, gzip)] = (etag, body)


@pytest.mark.slow
def test_cached_api_answers_as_the_uncached_one_in_memory() -> None:
    """Memory backend: every GET, 304s included, agrees with the uncached API (half the
    examples of the cache's own machines: each step runs the whole ASGI stack twice)."""
    run_state_machine_as_test(HTTPFreshness, settings=REMOTE_SETTINGS)


@pytest.mark.slow
def test_cached_api_answers_as_the_uncached_one_tiered(redis_url: str) -> None:
    """Tiered backend (Redis L2): the same property."""

    class TieredMachine(HTTPFreshness):
        @staticmethod
        def make_backend() -> Backend:
            l2 = RedisBackend(redis_url, prefix=f"pkhttp{uuid.uuid4().hex[:8]}", codec=codec())
            return TieredBackend(l2)

        @staticmethod
        def cleanup(backend: Backend) -> None:
            assert isinstance(backend, TieredBackend)
            l2 = backend.l2
            assert isinstance(l2, RedisBackend)
            backend.close()
            delete_keys(l2.client, l2.prefix)

    run_state_machine_as_test(TieredMachine, settings=REMOTE_SETTINGS)
