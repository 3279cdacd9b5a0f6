"""
Streamed exports: keyset_batches, the NDJSON/CSV encoders, ExportResponse, the stores'
exports and the example API's export routes.
"""

from __future__ import annotations

import asyncio
import csv
import enum
import io
import json
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bill_api import create_app
from perfkit import db
from perfkit.fastapi import ExportResponse
from perfkit.http import CSVEncoder, acsv_chunks, andjson_chunks, csv_chunks, ndjson_chunks
from perfkit.pagination import akeyset_batches, keyset_batches
from perfkit.reference import Bill, Stores, Vote, open_stores, seed
from perfkit.testing import count_queries

ITEMS = sa.table("items", sa.column("id", sa.Integer), sa.column("kind", sa.String))


def _items_table(engine: Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS items")
        conn.exec_driver_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, kind VARCHAR(8))")
        conn.execute(
            ITEMS.insert(),
            [{"id": i, "kind": "odd" if i % 2 else "even"} for i in range(1, rows + 1)],
        )


_MODEL = sa.MetaData()
ITEM_TABLE = sa.Table(
    "items", _MODEL, sa.Column("id", sa.Integer, primary_key=True), sa.Column("kind", sa.String(8))
)


# -- keyset_batches ------------------------------------------------------------------------------


def test_keyset_batches_walk_every_row_once_in_order(engine: Engine) -> None:
    """Each batch has batch_size rows but the last; the rows are the query's, in order."""
    _items_table(engine, 23)
    stmt = sa.select(ITEM_TABLE.c.id).where(ITEM_TABLE.c.kind == "odd").order_by(ITEM_TABLE.c.id)
    with count_queries(engine) as log:
        batches = list(keyset_batches(engine, stmt, batch_size=5))
    assert [[row.id for row in batch] for batch in batches] == [
        [1, 3, 5, 7, 9],
        [11, 13, 15, 17, 19],
        [21, 23],
    ]
    assert log.count == 3  # a short batch is the last: no empty query after it


def test_keyset_batches_descending_and_on_a_connection(engine: Engine) -> None:
    """Any ORDER BY works; a Connection runs every batch on itself."""
    _items_table(engine, 7)
    stmt = sa.select(ITEM_TABLE).order_by(ITEM_TABLE.c.kind, ITEM_TABLE.c.id.desc())
    with engine.connect() as conn:
        rows = [row.id for batch in keyset_batches(conn, stmt, batch_size=2) for row in batch]
    assert rows == [6, 4, 2, 7, 5, 3, 1]


def test_stopping_the_walk_runs_no_further_query(engine: Engine) -> None:
    """Abandon the generator after one batch: one query ran, none after."""
    _items_table(engine, 100)
    stmt = sa.select(ITEM_TABLE.c.id).order_by(ITEM_TABLE.c.id)
    with count_queries(engine) as log:
        walk = keyset_batches(engine, stmt, batch_size=10)
        first = next(walk)
        walk.close()
    assert (len(first), log.count) == (10, 1)


@pytest.mark.parametrize("size", [0, 100_001, 1.0, True])
def test_keyset_batches_refuse_a_bad_batch_size(size: Any, sqlite_engine: Engine) -> None:
    """batch_size is an integer from 1 to 100,000; checked when called, not on first next()."""
    with pytest.raises(ValueError, match="batch_size"):
        keyset_batches(sqlite_engine, sa.select(Bill.id).order_by(Bill.id), batch_size=size)
    with pytest.raises(ValueError, match="ORDER BY"):
        keyset_batches(sqlite_engine, sa.select(Bill.id))
    unselected = sa.select(Bill.title, Bill.status).order_by(Bill.created_at)
    with pytest.raises(ValueError, match="needs the ORDER BY columns"):
        keyset_batches(sqlite_engine, unselected)


def test_akeyset_batches_walk_an_async_engine(tmp_path: Path) -> None:
    """The async twin yields the same batches on an AsyncEngine."""
    path = tmp_path / "a.sqlite3"
    _items_table(db.create_engine(f"sqlite:///{path}"), 12)
    stmt = sa.select(ITEM_TABLE.c.id).order_by(ITEM_TABLE.c.id)

    async def walk() -> list[list[int]]:
        engine = db.create_async_engine(f"sqlite+aiosqlite:///{path}")
        try:
            return [[r.id for r in b] async for b in akeyset_batches(engine, stmt, batch_size=5)]
        finally:
            await engine.dispose()

    assert asyncio.run(walk()) == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12]]


def test_an_export_under_concurrent_writes_has_no_duplicate_or_skipped_row(
    engine: Engine,
) -> None:
    """Votes cast on the bill while its export runs: every vote stored before the export
    began comes out exactly once, ids ascending."""
    seed(engine, users=400, bills=2, votes=0)
    with open_stores(engine) as stores:
        stores.votes.cast_many({"bill_id": 1, "user_id": u, "choice": "yes"} for u in range(1, 201))
        with engine.connect() as conn:
            before = set(conn.execute(sa.select(Vote.id).where(Vote.bill_id == 1)).scalars())
        done = threading.Event()
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                for user in range(201, 401):
                    stores.votes.cast(bill_id=1, user_id=user, choice="no")
                    if done.is_set():
                        return
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=writer)
        thread.start()
        exported: list[int] = []
        for batch in stores.votes.export_by_bill(1, batch_size=7):
            exported.extend(vote.id for vote in batch)
        done.set()
        thread.join(timeout=60)
    assert errors == []
    assert (exported, len(exported)) == (sorted(exported), len(set(exported)))
    assert before <= set(exported)


def test_export_memory_stays_flat_as_rows_grow(sqlite_engine: Engine) -> None:
    """Peak traced memory exporting 20,000 votes is within 1.5x of exporting 2,000."""
    seed(sqlite_engine, users=20_000, bills=2, votes=0)

    def peak(stores: Stores, bill_id: int) -> int:
        tracemalloc.start()
        try:
            size = sum(len(c) for c in ndjson_chunks(stores.votes.export_by_bill(bill_id)))
            assert size > 0
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    with open_stores(sqlite_engine) as stores:
        stores.votes.cast_many(
            {"bill_id": 1, "user_id": u, "choice": "abstain"} for u in range(1, 2_001)
        )
        stores.votes.cast_many(
            {"bill_id": 2, "user_id": u, "choice": "yes"} for u in range(1, 20_001)
        )
        peak(stores, 1)  # warm: statement caches, compiled SQL
        small, large = peak(stores, 1), peak(stores, 2)
    assert large < 1.5 * small, (small, large)


# -- encoders ------------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"


@dataclass(frozen=True)
class Row:
    id: int
    name: str | None
    when: datetime
    color: Color
    done: bool


ROWS = [
    Row(1, "plain", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), Color.RED, True),
    Row(2, 'comma, "quote"\nline', datetime(2026, 1, 2, tzinfo=UTC), Color.RED, False),
    Row(3, None, datetime(2026, 1, 2, tzinfo=UTC), Color.RED, False),
    Row(4, "=HYPERLINK(1)", datetime(2026, 1, 2, tzinfo=UTC), Color.RED, False),
]


def test_csv_round_trips_through_a_csv_reader_with_formulas_defused() -> None:
    """Header, quoting, ISO datetimes, enum values, empty None, and no live formula."""
    body = b"".join(csv_chunks([ROWS[:2], [], ROWS[2:]], Row)).decode()
    parsed = list(csv.reader(io.StringIO(body, newline="")))
    assert parsed[0] == ["id", "name", "when", "color", "done"]
    assert parsed[1] == ["1", "plain", "2026-01-02T03:04:05+00:00", "red", "true"]
    assert parsed[2][1] == 'comma, "quote"\nline'
    assert (parsed[3][1], parsed[4][1]) == ("", "'=HYPERLINK(1)")
    assert body.endswith("\r\n")


def test_csv_encoder_options_and_dict_items() -> None:
    """Dict items, no header, formulas kept when asked; bad fields are refused."""
    encoder = CSVEncoder(["a", "b"], header=False, escape_formulas=False)
    assert (
        b"".join(csv_chunks([[{"a": -1, "b": "=x"}, {"b": date(2026, 1, 2)}]], encoder))
        == b"-1,=x\r\n,2026-01-02\r\n"
    )
    with pytest.raises(ValueError, match="non-empty"):
        CSVEncoder("ab")
    with pytest.raises(TypeError, match="dataclass"):
        CSVEncoder(int)


def test_ndjson_has_one_object_per_line() -> None:
    """Each record is one JSON line; an empty batch sends no chunk."""
    chunks = list(ndjson_chunks([ROWS[:1], [], [{"x": 1}]]))
    assert len(chunks) == 2
    lines = b"".join(chunks).decode().splitlines()
    assert [json.loads(lines[0])["id"], json.loads(lines[1])] == [1, {"x": 1}]


def test_async_encoders_match_the_sync_ones() -> None:
    """andjson_chunks/acsv_chunks send what their sync twins send."""

    async def batches() -> AsyncIterator[list[Row]]:
        for batch in (ROWS[:2], ROWS[2:]):
            yield batch

    async def collect() -> tuple[bytes, bytes]:
        ndjson = b"".join([c async for c in andjson_chunks(batches())])
        text = b"".join([c async for c in acsv_chunks(batches(), Row)])
        return ndjson, text

    assert (
        b"".join(ndjson_chunks([ROWS[:2], ROWS[2:]])),
        b"".join(csv_chunks([ROWS[:2], ROWS[2:]], Row)),
    ) == asyncio.run(collect())


def test_export_response_refuses_what_it_cannot_send() -> None:
    """CSV without fields and an unknown format are ValueErrors."""
    with pytest.raises(ValueError, match="fields="):
        ExportResponse([], format="csv")
    with pytest.raises(ValueError, match="format must be one of"):
        ExportResponse([], format="xml")  # type: ignore[arg-type]


def test_export_response_names_the_download_in_ascii_and_utf8() -> None:
    """Content-Disposition carries an ASCII fallback and the RFC 8187 name."""
    response = ExportResponse([], filename='vötes "2026"')
    expected = (
        'attachment; filename="v_tes _2026_.ndjson"; '
        "filename*=UTF-8''v%C3%B6tes%20%222026%22.ndjson"
    )
    assert expected == response.headers["content-disposition"]
    assert (
        response.headers["cache-control"],
        response.media_type,
    ) == ("no-store", "application/x-ndjson")


# -- the example API -----------------------------------------------------------------------------


@pytest.fixture
def api_stores(engine: Engine) -> Iterator[Stores]:
    seed(engine, users=30, bills=4, votes=0)
    with open_stores(engine) as stores:
        stores.votes.cast_many(
            {"bill_id": 2, "user_id": u, "choice": "no" if u % 3 else "yes"} for u in range(1, 31)
        )
        yield stores


def _client(stores: Stores) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(stores=stores))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.mark.anyio
async def test_api_exports_votes_as_csv_and_ndjson(api_stores: Stores) -> None:
    """Both formats carry every vote of the bill, as the store has them."""
    expected = [v for b in api_stores.votes.export_by_bill(2) for v in b]
    async with _client(api_stores) as client:
        as_csv = await client.get("/bills/2/votes/export", params={"format": "csv"})
        as_ndjson = await client.get("/bills/2/votes/export")
    assert (as_csv.status_code, as_csv.headers["content-type"]) == (200, "text/csv; charset=utf-8")
    assert 'filename="bill-2-votes.csv"' in as_csv.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(as_csv.text, newline="")))
    assert [str(v.id) for v in expected] == [row["id"] for row in rows]
    assert [v.choice.value for v in expected] == [row["choice"] for row in rows]
    lines = [json.loads(line) for line in as_ndjson.text.splitlines()]
    assert [v.id for v in expected] == [line["id"] for line in lines]


@pytest.mark.anyio
async def test_api_exports_bills_filtered_by_status(api_stores: Stores) -> None:
    """GET /bills/export?status= streams only those bills; a bad status is a 422."""
    async with _client(api_stores) as client:
        everything = await client.get("/bills/export")
        drafts = await client.get("/bills/export", params={"status": "draft"})
        bad = await client.get("/bills/export", params={"status": "vetoed"})
        unknown = await client.get("/bills/99/votes/export")
        wrong = await client.get("/bills/2/votes/export", params={"format": "xml"})
    all_bills = [json.loads(line) for line in everything.text.splitlines()]
    assert [bill["id"] for bill in all_bills] == [1, 2, 3, 4]
    assert {"draft"} >= {json.loads(line)["status"] for line in drafts.text.splitlines()}
    assert [bad.status_code, unknown.status_code, wrong.status_code] == [422, 404, 422]
    assert bad.json()["error"]["code"] == "invalid_input"


@pytest.mark.anyio
async def test_a_client_that_disconnects_stops_the_export(sqlite_engine: Engine) -> None:
    """The client goes away after the first chunk: the export's queries stop there."""
    seed(sqlite_engine, users=5_000, bills=1, votes=0)
    with open_stores(sqlite_engine) as stores:
        stores.votes.cast_many(
            {"bill_id": 1, "user_id": u, "choice": "yes"} for u in range(1, 5_001)
        )
        app = create_app(stores=stores)
        first_chunk = asyncio.Event()
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            if not chunks and not first_chunk.is_set():
                await asyncio.sleep(0)
            await first_chunk.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                chunks.append(message["body"])
                first_chunk.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/bills/1/votes/export",
            "raw_path": b"/bills/1/votes/export",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 1234),
            "server": ("testserver", 80),
        }
        with count_queries(sqlite_engine) as log:
            await asyncio.wait_for(app(scope, receive, send), timeout=30)
            await asyncio.sleep(0.2)  # a batch still running in the thread pool finishes
    batches = [s for s in log.statements if "FROM votes" in s]
    assert 1 <= len(batches) <= 3, log.describe()  # of the 5 the whole export takes
    assert b"".join(chunks).count(b"\n") < 5_000


def test_a_client_that_hangs_up_on_uvicorn_stops_the_export(sqlite_engine: Engine) -> None:
    """Over a real socket: the client reads a little and closes; the queries stop."""
    import socket  # noqa: PLC0415

    from fault_load import serve  # noqa: PLC0415

    seed(sqlite_engine, users=20_000, bills=1, votes=0)
    with open_stores(sqlite_engine) as stores:
        stores.votes.cast_many(
            {"bill_id": 1, "user_id": u, "choice": "yes"} for u in range(1, 20_001)
        )
        with serve(create_app(stores=stores)) as url, count_queries(sqlite_engine) as log:
            port = int(url.rsplit(":", 1)[1])
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.connect(("127.0.0.1", port))
            client.sendall(
                b"GET /bills/1/votes/export HTTP/1.1\r\nHost: t\r\n"
                b"Accept-Encoding: identity\r\n\r\n"
            )
            assert client.recv(1024).startswith(b"HTTP/1.1 200")
            client.close()
            settled, deadline = -1, time.monotonic() + 20
            while time.monotonic() < deadline:  # until no batch has run for 0.5 s
                time.sleep(0.5)
                if log.count == settled:
                    break
                settled = log.count
    batches = [s for s in log.statements if "FROM votes" in s]
    assert len(batches) < 20, f"{len(batches)} of the 20 batches ran"
