"""
perfkit.fastapi on a small notes app of its own: the error envelope, Allow, the body
limit, pagination with Link headers, and OpenAPI.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import PlainTextResponse

from perfkit import (
    CircuitOpenError,
    CommitOutcomeUnknown,
    Conflict,
    CursorPage,
    InvalidCursor,
    InvalidInput,
    NotFound,
    Page,
    PerfkitError,
)
from perfkit.fastapi import (
    Paginated,
    Pagination,
    cursor_body,
    error_responses,
    install,
    page_body,
)
from perfkit.http import ERROR_SCHEMA

pytestmark = pytest.mark.anyio

LIMIT = 1024
ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}


class NewNote(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: str
    pinned: bool = False


class Notes:
    """An in-memory store of notes, newest last; keyset cursors are "after:<id>"."""

    def __init__(self, count: int) -> None:
        self.rows = [{"id": i, "text": f"note {i}"} for i in range(1, count + 1)]

    def page(self, page: int, limit: int) -> Page[dict[str, Any]]:
        start = (page - 1) * limit
        pages = -(-len(self.rows) // limit)
        return Page(
            tuple(self.rows[start : start + limit]), page=page, limit=limit,
            total=len(self.rows), pages=pages, has_next=page < pages, has_prev=page > 1,
        )  # fmt: skip

    def after(self, cursor: str | None, limit: int) -> CursorPage[dict[str, Any]]:
        if cursor is not None and not re.fullmatch(r"after:\d+", cursor):
            raise InvalidCursor("malformed")
        start = 0 if cursor is None else int(cursor.split(":")[1])
        items = tuple(self.rows[start : start + limit])
        end = start + len(items)
        has_next = end < len(self.rows)
        return CursorPage(
            items, limit, f"after:{end}" if has_next else None,
            f"after:{max(0, start - limit)}" if start else None, has_next, start > 0,
        )  # fmt: skip


RAISED: dict[str, PerfkitError] = {
    "not_found": NotFound("note", 9),
    "conflict": Conflict("a note with this text exists"),
    "invalid_input": InvalidInput("text", "must not be blank"),
    "invalid_cursor": InvalidCursor("malformed"),
    "circuit_open": CircuitOpenError("search", retry_after=2.2),
    "commit_outcome_unknown": CommitOutcomeUnknown("the connection died during COMMIT"),
}


Small = Annotated[Pagination, Depends(Pagination.dependency(default_limit=2, max_limit=5))]
PagesOnly = Annotated[Pagination, Depends(Pagination.dependency(cursor=False))]


def notes_app(*, notes: int = 12, **options: Any) -> FastAPI:
    """The notes app, installed with *options*."""
    app = FastAPI()
    install(app, **({"max_body_bytes": LIMIT} | options))
    store = Notes(notes)

    @app.get("/notes")
    def list_notes(paging: Paginated) -> dict[str, Any]:
        return paging.listing(
            lambda n: store.page(n, paging.limit), lambda c: store.after(c, paging.limit)
        )

    @app.get("/small")
    def small(paging: Small) -> dict[str, Any]:
        return paging.respond(store.page(paging.page, paging.limit), item=lambda row: row["id"])

    @app.get("/pages")
    def pages(paging: PagesOnly) -> dict[str, Any]:
        return paging.listing(lambda n: store.page(n, paging.limit))

    @app.post("/notes", status_code=201, responses=error_responses(Conflict))
    def create_note(note: NewNote) -> dict[str, Any]:
        if note.text == "taken":
            raise Conflict("a note with this text exists")
        return {"id": len(store.rows) + 1, "text": note.text}

    @app.get("/notes/{note_id}")
    def get_note(note_id: int) -> dict[str, Any]:
        if not 1 <= note_id <= len(store.rows):
            raise NotFound("note", note_id)
        return store.rows[note_id - 1]

    @app.patch("/notes/{note_id}")
    def edit_note(note_id: int, note: NewNote) -> dict[str, Any]:
        return {"id": note_id, "text": note.text}

    @app.delete("/notes/{note_id}", status_code=204)
    def delete_note(note_id: int) -> None:
        return None

    @app.get("/raise/{code}", responses=error_responses(CircuitOpenError))
    def raise_(code: str) -> None:
        raise RAISED[code]

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("password=hunter2")

    @app.get("/forbidden")
    def forbidden() -> None:
        raise HTTPException(403, detail="not yours")

    @app.get("/teapot")
    def teapot() -> None:
        raise HTTPException(418, detail={"reason": "short and stout"})

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    tags = APIRouter(prefix="/tags")

    @tags.get("/{tag}")
    def get_tag(tag: str) -> dict[str, str]:
        return {"tag": tag}

    @tags.put("/{tag}")
    def put_tag(tag: str) -> dict[str, str]:
        return {"tag": tag}

    app.include_router(tags)

    def plain(_request: Any) -> PlainTextResponse:
        return PlainTextResponse("plain")

    app.add_route("/plain", plain, methods=["GET"])
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=notes_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://notes") as test_client:
        yield test_client


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The envelope's error member, after checking the status, media type and code."""
    assert status == response.status_code, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert {"error"} == set(body)
    assert code == body["error"]["code"]
    assert body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


# -- the envelope ------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("not_found", 404),
        ("conflict", 409),
        ("invalid_input", 422),
        ("invalid_cursor", 422),
        ("circuit_open", 503),
        ("commit_outcome_unknown", 503),
    ],
)
async def test_perfkit_errors_have_their_status(
    client: httpx.AsyncClient, code: str, status: int
) -> None:
    """Each perfkit error is its status, its code and its message."""
    error = error_of(await client.get(f"/raise/{code}"), status, code)

    assert RAISED[code].message == error["message"]


async def test_an_open_circuit_says_when_to_come_back(client: httpx.AsyncClient) -> None:
    """A CircuitOpenError is a 503 with Retry-After in whole seconds, rounded up."""
    response = await client.get("/raise/circuit_open")

    assert response.headers["retry-after"] == "3"


def _database_errors_app(**options: Any) -> FastAPI:
    import sqlite3  # noqa: PLC0415

    import sqlalchemy as sa  # noqa: PLC0415

    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5  # type: ignore[attr-defined]
    errors: dict[str, Exception] = {
        "busy": sa.exc.OperationalError("UPDATE bills SET title = ?", ("secret",), busy),
        "pool": sa.exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached"),
        "integrity": sa.exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("CHECK")),
    }
    app = FastAPI()
    install(app, **options)

    @app.get("/db/{kind}")
    def fail(kind: str) -> None:
        raise errors[kind]

    return app


@pytest.mark.parametrize(("kind", "status", "code"), [
    ("busy", 503, "unavailable"),
    ("pool", 503, "unavailable"),
    ("integrity", 500, "internal_error"),
])  # fmt: skip
async def test_a_database_that_stays_unreachable_is_503_never_500(
    kind: str, status: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Transient database failures are 503 with Retry-After; a broken constraint is a bug."""
    transport = httpx.ASGITransport(app=_database_errors_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://db") as test_client:
        response = await test_client.get(f"/db/{kind}")

    error_of(response, status, code)
    assert ("retry-after" in response.headers) == (status == 503)
    assert "secret" not in response.text
    assert "secret" not in caplog.text  # the statement's parameters are never logged


async def test_the_retry_after_of_an_unavailable_database_is_configurable() -> None:
    """install(retry_after=) sets the header; a negative one is refused."""
    app = _database_errors_app(retry_after=7)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://db") as test_client:
        response = await test_client.get("/db/busy")
    assert response.headers["retry-after"] == "7"
    with pytest.raises(ValueError, match="retry_after"):
        install(FastAPI(), retry_after=-1)


async def test_validation_errors_list_fields_and_never_echo_input(
    client: httpx.AsyncClient,
) -> None:
    """A body that fails validation is a 422 naming each field, the input left out."""
    secret = "s3cr3t-" * 10
    response = await client.post("/notes", json={"text": 5, "pinned": "yes", "extra": secret})

    error = error_of(response, 422, "validation_error")
    assert secret not in response.text
    assert {"body.text", "body.pinned", "body.extra"} == {f["field"] for f in error["fields"]}
    assert all(set(field) == {"field", "message"} for field in error["fields"])


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("GET", "/notes/abc", {}, 422, "validation_error"),
        ("GET", "/notes/99", {}, 404, "not_found"),
        ("GET", "/nowhere", {}, 404, "not_found"),
        ("POST", "/notes", {"content": b"{nope", "headers": {"content-type": "application/json"}},
         400, "malformed_json"),
        ("POST", "/notes", {"content": b"{nope"}, 415, "unsupported_media_type"),
        ("POST", "/notes", {"content": b"text=a", "headers": {"content-type": "text/plain"}},
         415, "unsupported_media_type"),
        ("POST", "/notes", {"json": {"text": "taken"}}, 409, "conflict"),
        ("POST", "/notes", {"json": {"text": "x" * 2000}}, 413, "payload_too_large"),
        ("PUT", "/notes/1", {}, 405, "method_not_allowed"),
        ("GET", "/forbidden", {}, 403, "forbidden"),
    ],
)  # fmt: skip
async def test_framework_errors_use_the_envelope(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    """FastAPI's and Starlette's own errors come out in the same envelope as perfkit's."""
    error_of(await client.request(method, path, **kwargs), status, code)


async def test_a_json_media_type_with_a_suffix_is_json(client: httpx.AsyncClient) -> None:
    """application/merge-patch+json is JSON: a valid body is accepted."""
    response = await client.patch(
        "/notes/1",
        content=b'{"text": "edited"}',
        headers={"content-type": "application/merge-patch+json"},
    )

    assert (response.status_code, response.json()["text"]) == (200, "edited")


async def test_a_detail_that_is_not_text_is_kept_apart(client: httpx.AsyncClient) -> None:
    """An HTTPException with a structured detail keeps it under detail, with the status phrase."""
    error = error_of(await client.get("/teapot"), 418, "http_error")

    assert error["message"] == "I'm a Teapot"
    assert error["detail"] == {"reason": "short and stout"}


async def test_unexpected_errors_are_a_generic_logged_500(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug is a 500 that leaks nothing, and is logged with its traceback."""
    with caplog.at_level(logging.ERROR, logger="perfkit.fastapi"):
        response = await client.get("/boom")

    error_of(response, 500, "internal_error")
    assert "hunter2" not in response.text
    [record] = [r for r in caplog.records if r.name == "perfkit.fastapi"]
    assert "GET /boom" in record.getMessage()
    assert record.exc_info is not None


def test_installing_twice_warns_and_changes_nothing() -> None:
    """A second install() warns at the caller and adds no second body limit."""
    app = notes_app()
    middleware = list(app.user_middleware)

    with pytest.warns(UserWarning, match="already called") as caught:
        install(app)

    assert __file__ == caught[0].filename
    assert middleware == app.user_middleware


# -- 405 and Allow -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/notes/1", "GET, PATCH, DELETE"),
        ("POST", "/notes/1", "GET, PATCH, DELETE"),
        ("DELETE", "/notes", "GET, POST"),
        ("DELETE", "/tags/red", "GET, PUT"),
        ("POST", "/plain", "GET, HEAD"),
    ],
)
async def test_allow_lists_every_method_of_the_path(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    """The 405's Allow lists the methods of every route on the path, not the first one's."""
    response = await client.request(method, path)

    error_of(response, 405, "method_not_allowed")
    assert allow == response.headers["allow"]


async def test_every_method_allow_lists_is_routed(client: httpx.AsyncClient) -> None:
    """No method that Allow lists answers 405 itself."""
    allow = (await client.put("/notes/1")).headers["allow"]

    for method in allow.split(", "):
        response = await client.request(method, "/notes/1", json={"text": "t"})
        assert response.status_code != 405, method


# -- the body limit ----------------------------------------------------------


async def test_a_declared_length_over_the_limit_is_refused(client: httpx.AsyncClient) -> None:
    """A Content-Length over the limit is a 413 on any route, naming the limit."""
    response = await client.post("/echo", content=b"x" * (LIMIT + 1))

    assert f"{LIMIT}" in error_of(response, 413, "payload_too_large")["message"]


async def test_a_body_at_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    """Exactly max_body_bytes is still accepted."""
    response = await client.post("/echo", content=b"x" * LIMIT)

    assert response.json() == {"bytes": LIMIT}


@pytest.mark.parametrize("path", ["/notes", "/echo"])
async def test_a_chunked_body_over_the_limit_is_413(client: httpx.AsyncClient, path: str) -> None:
    """A streamed body with no Content-Length is cut off at the limit with the 413 envelope."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(8):
            yield b"x" * 256
        yield b'"}'

    response = await client.post(
        path, content=chunks(), headers={"content-type": "application/json"}
    )

    error_of(response, 413, "payload_too_large")


async def test_no_limit_when_asked_for_none() -> None:
    """max_body_bytes=None adds no limit and documents no 413."""
    app = notes_app(max_body_bytes=None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://notes") as client:
        response = await client.post("/echo", content=b"x" * (LIMIT * 4))
        spec = (await client.get("/openapi.json")).json()

    assert response.json() == {"bytes": LIMIT * 4}
    assert "413" not in spec["paths"]["/notes"]["post"]["responses"]


# -- pagination --------------------------------------------------------------


def links(response: httpx.Response) -> dict[str, str]:
    """The Link header as {rel: target}."""
    found = re.findall(r'<([^>]*)>; rel="([a-z]+)"', response.headers.get("link", ""))
    return {rel: target for target, rel in found}


async def test_page_mode_body_and_links(client: httpx.AsyncClient) -> None:
    """A page has its metadata, and Link first/prev/next/last keeping the other parameters."""
    response = await client.get("/notes", params={"page": 2, "limit": 5, "q": "a b"})

    body = response.json()
    assert [note["id"] for note in body["items"]] == [6, 7, 8, 9, 10]
    assert {
        key: body[key] for key in ("page", "limit", "total", "pages", "has_next", "has_prev")
    } == {"page": 2, "limit": 5, "total": 12, "pages": 3, "has_next": True, "has_prev": True}
    assert links(response) == {
        "first": "/notes?limit=5&q=a+b&page=1",
        "prev": "/notes?limit=5&q=a+b&page=1",
        "next": "/notes?limit=5&q=a+b&page=3",
        "last": "/notes?limit=5&q=a+b&page=3",
    }


async def test_first_and_last_pages_link_no_further(client: httpx.AsyncClient) -> None:
    """Page 1 has no prev; the last page has no next."""
    first = await client.get("/notes", params={"limit": 5})
    last = await client.get("/notes", params={"limit": 5, "page": 3})

    assert {"first", "next", "last"} == set(links(first))
    assert {"first", "prev", "last"} == set(links(last))


async def test_links_are_relative_and_ignore_the_host_header(client: httpx.AsyncClient) -> None:
    """A Host header never reaches the Link targets (a shared cache may keep them)."""
    response = await client.get("/notes", headers={"host": "evil.example"})

    assert all(target.startswith("/notes?") for target in links(response).values())


async def test_cursor_mode_walks_every_note_once(client: httpx.AsyncClient) -> None:
    """An empty cursor starts keyset mode; following Link rel=next visits each note once."""
    seen: list[int] = []
    response = await client.get("/notes", params={"cursor": "", "limit": 5})
    assert {"items", "limit", "next_cursor", "prev_cursor", "has_next", "has_prev"} == set(
        response.json()
    )
    while True:
        seen += [note["id"] for note in response.json()["items"]]
        if "next" not in links(response):
            break
        response = await client.get(links(response)["next"])

    assert list(range(1, 13)) == seen
    assert links(response)["first"] == "/notes?limit=5&cursor="
    assert "prev" in links(response)


async def test_page_and_cursor_together_are_refused(client: httpx.AsyncClient) -> None:
    """?page= with ?cursor= is a 422 invalid_input."""
    response = await client.get("/notes", params={"page": 2, "cursor": ""})

    assert (
        (error_of(response, 422, "invalid_input")["message"])
        == "query: use either page or cursor, not both"
    )


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=0", "query.page"),
        ("page=x", "query.page"),
        ("limit=0", "query.limit"),
        ("limit=101", "query.limit"),
        ("cursor=" + "a" * 5000, "query.cursor"),
    ],
)
async def test_bad_paging_parameters_are_validation_errors(
    client: httpx.AsyncClient, query: str, field: str
) -> None:
    """Out-of-range page, limit or cursor is a 422 naming the parameter."""
    error = error_of(await client.get(f"/notes?{query}"), 422, "validation_error")

    assert [field] == [f["field"] for f in error["fields"]]


async def test_a_bad_cursor_is_the_store_s_invalid_cursor(client: httpx.AsyncClient) -> None:
    """A cursor the store refuses is a 422 invalid_cursor."""
    error_of(await client.get("/notes", params={"cursor": "garbage"}), 422, "invalid_cursor")


async def test_a_configured_dependency_has_its_own_bounds(client: httpx.AsyncClient) -> None:
    """default_limit and max_limit are the route's; item maps each item."""
    default = (await client.get("/small")).json()
    too_many = await client.get("/small", params={"limit": 6})

    assert (default["items"], default["limit"]) == ([1, 2], 2)
    error_of(too_many, 422, "validation_error")


async def test_a_page_only_listing_takes_no_cursor(client: httpx.AsyncClient) -> None:
    """cursor=False: ?cursor= is ignored like any unknown parameter, and not documented."""
    response = await client.get("/pages", params={"cursor": "after:3", "page": 2, "limit": 5})
    spec = (await client.get("/openapi.json")).json()

    assert response.json()["page"] == 2
    names = {p["name"] for p in spec["paths"]["/pages"]["get"]["parameters"]}
    assert {"page", "limit"} == names


def test_dependency_refuses_a_default_over_the_maximum() -> None:
    """default_limit above max_limit is a ValueError when the route is declared."""
    with pytest.raises(ValueError, match="default_limit"):
        Pagination.dependency(default_limit=50, max_limit=10)


def test_bodies_of_pages() -> None:
    """page_body and cursor_body give the listing JSON, items mapped by item=."""
    notes = Notes(3)

    assert page_body(notes.page(1, 2), item=lambda row: row["id"]) == {
        "items": [1, 2], "page": 1, "limit": 2, "total": 3, "pages": 2,
        "has_next": True, "has_prev": False,
    }  # fmt: skip
    assert cursor_body(notes.after("after:2", 2)) == {
        "items": [{"id": 3, "text": "note 3"}], "limit": 2, "next_cursor": None,
        "prev_cursor": "after:0", "has_next": False, "has_prev": True,
    }  # fmt: skip


# -- OpenAPI -----------------------------------------------------------------


@pytest.fixture
def spec() -> dict[str, Any]:
    return notes_app().openapi()


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("get", "/notes", {404, 405, 422, 500, 503}),
        ("post", "/notes", {400, 404, 405, 409, 413, 415, 422, 500, 503}),
        ("get", "/notes/{note_id}", {404, 405, 422, 500, 503}),
        ("patch", "/notes/{note_id}", {400, 404, 405, 413, 415, 422, 500, 503}),
        ("get", "/raise/{code}", {404, 405, 422, 500, 503}),
        ("get", "/boom", {404, 405, 500, 503}),
        ("get", "/tags/{tag}", {404, 405, 422, 500, 503}),
    ],
)
def test_openapi_documents_every_error_status(
    spec: dict[str, Any], method: str, path: str, statuses: set[int]
) -> None:
    """Each route lists each error status it can answer, each with the envelope's schema."""
    responses = spec["paths"][path][method]["responses"]

    assert statuses == {int(status) for status in responses if int(status) >= 400}
    for status in statuses:
        assert responses[str(status)]["content"]["application/json"]["schema"] == ENVELOPE
        assert responses[str(status)]["description"]


def test_openapi_has_the_envelope_and_not_fastapi_s_default(spec: dict[str, Any]) -> None:
    """The envelope replaces HTTPValidationError, which is gone from the components."""
    schemas = spec["components"]["schemas"]

    assert schemas["ErrorEnvelope"] == ERROR_SCHEMA
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    assert "HTTPValidationError" not in str(spec)


def test_openapi_documents_the_headers_of_405_and_503(spec: dict[str, Any]) -> None:
    """405 documents Allow; a declared CircuitOpenError's 503 documents Retry-After."""
    operation = spec["paths"]["/raise/{code}"]["get"]["responses"]

    assert "Allow" in operation["405"]["headers"]
    assert "Retry-After" in operation["503"]["headers"]
    assert "`circuit_open`" in operation["503"]["description"]


def test_error_responses_groups_errors_by_status() -> None:
    """Errors of one status share its entry, each named by its code."""
    responses = error_responses(NotFound, InvalidInput, InvalidCursor)

    assert {404, 422} == set(responses)
    assert "`invalid_input`" in responses[422]["description"]
    assert "`invalid_cursor`" in responses[422]["description"]
    with pytest.raises(TypeError, match="PerfkitError subclass"):
        error_responses(ValueError)  # type: ignore[arg-type]


def test_a_declared_error_status_of_the_user_keeps_its_description() -> None:
    """responses={403: {...}} of the user's own gets the envelope's schema, its text kept."""
    app = FastAPI()
    install(app)

    @app.get("/secret", responses={403: {"description": "Not yours"}})
    def secret() -> None:
        raise HTTPException(403)

    response = app.openapi()["paths"]["/secret"]["get"]["responses"]["403"]

    assert response["description"] == "Not yours"
    assert response["content"]["application/json"]["schema"] == ENVELOPE


def test_json_bytes_encodes_records_as_to_dict_does() -> None:
    """JSONBytes of a frozen dataclass record: the JSON of its to_dict(), timestamps alike."""
    import datetime as dt  # noqa: PLC0415
    import json  # noqa: PLC0415

    from perfkit.fastapi import JSONBytes  # noqa: PLC0415
    from perfkit.reference import BillRecord, BillStatus  # noqa: PLC0415

    moment = dt.datetime(2026, 12, 1, 9, 30, 15, 250000, tzinfo=dt.UTC)
    bill = BillRecord(
        id=1, title="t", summary="s", status=BillStatus.DRAFT, sponsor_id=2,
        created_at=moment, updated_at=moment.replace(microsecond=0),
    )  # fmt: skip

    body = JSONBytes(bill).body

    assert json.loads(body) == bill.to_dict()
    assert b'"2026-12-01T09:30:15+00:00"' in body
    assert JSONBytes(b'{"raw":1}').body == b'{"raw":1}'
    assert JSONBytes({"a": 1}).headers["content-type"] == "application/json"
