"""
Cursor keys: given, rotated by hand, shared through the database with key ids and rotation,
and shared by real example-API processes with nothing configured but the database URL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from helpers import free_port, wait_until
from perfkit import db, migrations
from perfkit.errors import InvalidCursor
from perfkit.pagination import (
    KEYS_TABLE,
    CursorKeys,
    SharedCursorKeys,
    apaginate_keyset,
    paginate_keyset,
)
from perfkit.reference import seed

ROOT = Path(__file__).resolve().parents[1]

items = sa.Table(
    "items",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("n", sa.Integer),
)
LIST = sa.select(items).order_by(items.c.id)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with perfkit's branch migrated (the key table) and 10 items."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'keys.sqlite3'}"
    else:
        url = request.getfixturevalue("fresh_pg_url")
    engine = db.create_engine(url)
    migrations.upgrade(engine, "perfkit")
    items.create(engine)
    with engine.begin() as conn:
        conn.execute(items.insert(), [{"id": i, "n": i} for i in range(1, 11)])
    engine.dispose()
    return url


@pytest.fixture
def engines(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on the database: two processes' worth of state, nothing configured."""
    monkeypatch.delenv("PERFKIT_CURSOR_SECRET", raising=False)
    first, second = db.create_engine(url), db.create_engine(url)
    yield first, second
    first.dispose()
    second.dispose()


class Clock:
    """Wall-clock seconds, moved by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _ids(page: Any) -> list[int]:
    return [row.id for row in page.items]


def test_with_nothing_configured_the_database_key_signs_for_every_engine(
    engines: tuple[Engine, Engine],
) -> None:
    """A cursor from one engine's page verifies on another engine's (the table holds the key);
    its key id is the day's."""
    first, second = engines
    page = paginate_keyset(first, LIST, limit=4)
    assert page.next_cursor is not None
    assert page.next_cursor.startswith("d")
    following = paginate_keyset(second, LIST, limit=4, cursor=page.next_cursor)
    assert _ids(following) == [5, 6, 7, 8]
    with first.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(sa.table(KEYS_TABLE))).scalar() == 1
        )


def test_a_key_rotates_each_period_and_the_previous_one_still_verifies(
    engines: tuple[Engine, Engine],
) -> None:
    """Period 0's cursor verifies in period 1 (the overlap) and is refused in period 2, with
    the error naming a rotated key."""
    first, _ = engines
    clock = Clock(5.0)
    keys = SharedCursorKeys(first, rotate_every=10, clock=clock)
    old = paginate_keyset(first, LIST, limit=3, secret=keys).next_cursor
    assert old is not None
    assert old.startswith("d0.")
    clock.now = 15.0
    assert _ids(paginate_keyset(first, LIST, limit=3, cursor=old, secret=keys)) == [4, 5, 6]
    assert keys.signing()[0] == "d1"
    clock.now = 25.0
    with pytest.raises(InvalidCursor, match="rotated out"):
        paginate_keyset(first, LIST, limit=3, cursor=old, secret=keys)


def test_a_cursor_of_the_next_period_makes_a_process_behind_read_the_table_again(
    engines: tuple[Engine, Engine],
) -> None:
    """One instance's clock crossed into period 1 first and signed with its new key; an
    instance still in period 0 reads the table once and accepts the cursor; an id two
    periods ahead is refused without a read."""
    first, second = engines
    behind_clock = Clock(9.0)
    behind = SharedCursorKeys(first, rotate_every=10, clock=behind_clock)
    ahead = SharedCursorKeys(second, rotate_every=10, clock=Clock(10.5))
    assert behind.signing()[0] == "d0"
    cursor = paginate_keyset(second, LIST, limit=2, secret=ahead).next_cursor
    assert cursor is not None
    assert cursor.startswith("d1.")
    assert _ids(paginate_keyset(first, LIST, limit=2, cursor=cursor, secret=behind)) == [3, 4]
    assert behind.verifying("d3") is None


def test_processes_that_start_together_agree_on_one_key(url: str) -> None:
    """Eight engines make their first cursor at the same moment: one key is inserted, all sign
    with it."""
    engines = [db.create_engine(url) for _ in range(8)]
    start = threading.Barrier(len(engines))
    signed: list[tuple[str, bytes]] = []
    errors: list[BaseException] = []

    def first_cursor(engine: Engine) -> None:
        keys = SharedCursorKeys(engine)
        start.wait()
        try:
            signed.append(keys.signing())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_cursor, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        engine.dispose()
    assert errors == []
    assert len(set(signed)) == 1


def test_keys_given_by_hand_rotate_with_the_old_one_kept(
    engines: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CursorKeys("new", "old") and PERFKIT_CURSOR_SECRET="new,old" verify a cursor signed
    with "old" and sign with "new"; an empty secret is refused."""
    first, _ = engines
    old = paginate_keyset(first, LIST, limit=5, secret="old").next_cursor
    rotated = CursorKeys("new", "old")
    page = paginate_keyset(first, LIST, limit=5, cursor=old, secret=rotated)
    assert _ids(page) == [6, 7, 8, 9, 10]
    assert rotated.signing() == CursorKeys("new").signing()
    monkeypatch.setenv("PERFKIT_CURSOR_SECRET", "new,old")
    assert _ids(paginate_keyset(first, LIST, limit=5, cursor=old)) == [6, 7, 8, 9, 10]
    with pytest.raises(ValueError, match="non-empty"):
        CursorKeys("")


@pytest.mark.anyio
async def test_the_async_twin_shares_the_same_key(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cursor made on a sync engine verifies through an AsyncEngine, and the other way."""
    monkeypatch.delenv("PERFKIT_CURSOR_SECRET", raising=False)
    sync = db.create_engine(url)
    aengine = db.create_async_engine(url)
    try:
        cursor = paginate_keyset(sync, LIST, limit=3).next_cursor
        page = await apaginate_keyset(aengine, LIST, limit=3, cursor=cursor)
        assert _ids(page) == [4, 5, 6]
        back = paginate_keyset(sync, LIST, limit=3, cursor=page.next_cursor)
        assert _ids(back) == [7, 8, 9]
    finally:
        sync.dispose()
        await aengine.dispose()


# -- real processes -----------------------------------------------------------------------------


def _serve(url: str, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "PERFKIT_CURSOR_SECRET"}
    env.update(PYTHONPATH=str(ROOT / "examples"), PERFKIT_CACHE="off", PERFKIT_TIMING="off")
    command = [sys.executable, "-m", "uvicorn", "bill_api.app:create_app", "--factory",
               "--port", str(port), "--ws", "none", "--log-level", "warning"]  # fmt: skip
    return subprocess.Popen(
        command, env={**env, "PERFKIT_DATABASE_URL": url}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_a_keyset_walk_alternating_api_processes_needs_nothing_configured(
    fresh_pg_url: str,
) -> None:
    """Three example-API processes on one PostgreSQL, no PERFKIT_CURSOR_SECRET, no response
    cache: a keyset walk of /bills taking each page from the next process gets 200 every
    time and every bill once (0.1 signed per process: 12 of 12 cross-process uses refused)."""
    engine = db.create_engine(fresh_pg_url)
    migrations.upgrade(engine, "perfkit", "perfkit_reference")
    seed(engine, users=20, bills=47, votes=0, random_seed=7)
    engine.dispose()
    ports = [free_port() for _ in range(3)]
    servers = [_serve(fresh_pg_url, port) for port in ports]
    try:
        with httpx.Client(timeout=10) as client:
            for port in ports:
                wait_until(lambda p=port: _up(client, p), timeout=60)
            seen: list[int] = []
            statuses: list[int] = []
            cursor: str | None = None
            for turn in range(100):
                query = {"limit": 5, "cursor": cursor or ""}
                answer = client.get(f"http://127.0.0.1:{ports[turn % 3]}/bills", params=query)
                statuses.append(answer.status_code)
                body = answer.json()
                seen += [bill["id"] for bill in body["items"]]
                cursor = body["next_cursor"]
                if cursor is None:
                    break
    finally:
        for server in servers:
            server.terminate()
            server.communicate(timeout=30)
    assert statuses == [200] * 10
    assert sorted(seen) == list(range(1, 48))
    assert len(seen) == 47


def _up(client: httpx.Client, port: int) -> bool:
    try:
        return client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except httpx.TransportError:
        return False
