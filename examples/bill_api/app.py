"""
The example bill/vote API: FastAPI over :mod:`perfkit.reference`.

Configuration comes from the environment:

``PERFKIT_DATABASE_URL``
    Database to serve (default: the SQLite demo file ``var/demo.sqlite3``).

``PERFKIT_REDIS_URL``
    Cache reads in an in-process L1 in front of this Redis, with invalidations
    delivered to every worker over pub/sub (default: none, an in-process cache
    per worker).
``PERFKIT_CACHE``
    ``off`` serves every read from the database (for baselines).
``PERFKIT_TIMING``
    ``off`` leaves out the timing middleware, query timing and ``/metrics``
    (for before/after benchmarks).
``PERFKIT_TEXT_URL``
    The bill-text service behind ``GET /bills/{id}/text``, called through a
    circuit breaker (default: none, the stored summary is served).

Every error is a JSON body ``{"error": {"code": ..., "message": ...}}`` with a
4xx status: 400 malformed JSON, 404 unknown id or route, 405 wrong method,
409 conflict, 413 body too large, 415 body not sent as JSON, 422 invalid
field or query parameter.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated, Any, Final

import sqlalchemy as sa
from fastapi import Body, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from bill_api import telemetry
from bill_api.text import BillText
from perfkit import (
    CircuitBreaker,
    CircuitOpenError,
    CommitOutcomeUnknown,
    Conflict,
    CursorPage,
    InvalidInput,
    NotFound,
    Page,
    PerfkitError,
    TimingMiddleware,
    instrument_engine,
)
from perfkit.cache import Cache, MemoryBackend, RedisBackend, TieredBackend
from perfkit.pagination import MAX_PAGE
from perfkit.reference import Stores, codec, open_stores

__all__ = ["DEFAULT_DATABASE_URL", "create_app"]

log = logging.getLogger("bill_api")

DEMO_DATABASE: Final = FilePath(__file__).resolve().parents[2] / "var" / "demo.sqlite3"
DEFAULT_DATABASE_URL: Final = f"sqlite:///{DEMO_DATABASE}"
MAX_BODY_BYTES: Final = 64 * 1024
MAX_ID: Final = 2**63 - 1
MAX_LIMIT: Final = 100

Id = Annotated[int, Path(ge=1, le=MAX_ID, description="A positive row id")]
PageNo = Annotated[int | None, Query(ge=1, le=MAX_PAGE, description="1-based page number")]
CursorParam = Annotated[
    str | None,
    Query(max_length=4096, description="keyset cursor from a previous page; empty for the first"),
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")]

_STATUS_OF: Final[dict[type[PerfkitError], int]] = {
    NotFound: 404,
    Conflict: 409,
    InvalidInput: 422,
    CircuitOpenError: 503,  # a dependency is down: come back later
    CommitOutcomeUnknown: 500,
}
_HTTP_CODES: Final = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class _Body(BaseModel):
    # strict: a JSON number is not a username and "5" is not an id.
    model_config = ConfigDict(extra="forbid", strict=True)


class NewUser(_Body):
    username: str
    email: str


class NewBill(_Body):
    title: str
    sponsor_id: int
    summary: str = ""
    status: str = "draft"


class BillChanges(_Body):
    title: str | None = None
    summary: str | None = None
    status: str | None = None


class NewVote(_Body):
    user_id: int
    choice: str


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """
    Return the JSON error envelope every non-2xx response uses.
    """
    return {"error": {"code": code, "message": message, **extra}}


def cursor_body(page: CursorPage[Any]) -> dict[str, Any]:
    """
    Return a keyset page of records with its cursors as JSON.
    """
    return {
        "items": [item.to_dict() for item in page.items],
        "limit": page.limit,
        "next_cursor": page.next_cursor,
        "prev_cursor": page.prev_cursor,
        "has_next": page.has_next,
        "has_prev": page.has_prev,
    }


def listing(
    page: int | None,
    cursor: str | None,
    by_page: Callable[[int], Page[Any]],
    by_cursor: Callable[[str | None], CursorPage[Any]],
) -> dict[str, Any]:
    """
    Answer a listing in page mode or, when ``cursor`` is given, keyset mode.

    An empty ``cursor`` asks for the first keyset page; ``page`` and
    ``cursor`` together are refused.
    """
    if cursor is None:
        return page_body(by_page(page or 1))
    if page is not None:
        raise InvalidInput("query", "use either page or cursor, not both")
    return cursor_body(by_cursor(cursor or None))


def page_body(page: Page[Any]) -> dict[str, Any]:
    """
    Return a page of records with its metadata as JSON.
    """
    return {
        "items": [item.to_dict() for item in page.items],
        "page": page.page,
        "limit": page.limit,
        "total": page.total,
        "pages": page.pages,
        "has_next": page.has_next,
        "has_prev": page.has_prev,
    }


def make_cache(redis_url: str | None) -> Cache:
    """
    The API's read cache: in Redis when *redis_url* is given, else in process.
    """
    if redis_url:
        # A dead Redis costs a request nothing once this breaker is open.
        guard = CircuitBreaker(name="bill_api-redis", fail_max=3, reset_timeout=5)
        l2 = RedisBackend(redis_url, prefix="bill_api", codec=codec(), breaker=guard)
        backend = TieredBackend(l2, l1=MemoryBackend(maxsize=100_000), l1_ttl=30)
        return Cache(backend, namespace="bill_api", ttl=300)
    return Cache(MemoryBackend(maxsize=100_000), namespace="bill_api", ttl=300)


def create_app(
    *,
    stores: Stores | None = None,
    database_url: str | None = None,
    text: BillText | None = None,
) -> FastAPI:
    """
    Build the API over *stores*, or over stores opened on *database_url*
    (default: ``PERFKIT_DATABASE_URL`` or the demo SQLite file) at startup.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if stores is not None:
            app.state.stores = stores
            yield
            return
        url = database_url or os.environ.get("PERFKIT_DATABASE_URL") or DEFAULT_DATABASE_URL
        cache = (
            None
            if os.environ.get("PERFKIT_CACHE") == "off"
            else make_cache(os.environ.get("PERFKIT_REDIS_URL"))
        )
        opened = open_stores(url, cache=cache)
        if provider is not None:
            instrument_engine(opened.engine, meter_provider=provider)
        app.state.stores = opened
        try:
            yield
        finally:
            opened.close()
            if cache is not None:
                cache.backend.close()  # the tiered listener thread and the Redis connections

    timing = os.environ.get("PERFKIT_TIMING") != "off"
    provider = telemetry.meter_provider() if timing else None
    options: dict[str, Any] = {}
    if provider is not None and "telemetry" in inspect.signature(FastAPI).parameters:
        # Recent FastAPI records http.server.request.duration itself: perfkit's
        # middleware does that (with the route template), so turn FastAPI's off.
        options["telemetry"] = {"metrics": False}
    app = _API(title="perfkit bill/vote API", version="0.1.0", lifespan=lifespan, **options)
    app.state.meter_provider = provider
    app.state.text = text or BillText(os.environ.get("PERFKIT_TEXT_URL") or None)
    if stores is not None:
        app.state.stores = stores
        if provider is not None:
            instrument_engine(stores.engine, meter_provider=provider)
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    _install_routes(app)
    return app


class _API(FastAPI):
    """FastAPI with perfkit's TimingMiddleware around its whole middleware stack."""

    def build_middleware_stack(self) -> Any:
        # add_middleware() would put the timing inside Starlette's ServerErrorMiddleware,
        # and the 500s it answers for unhandled errors would go out without X-Request-ID
        # and Server-Timing. Outermost, it times those too, and still reads the route
        # template after routing (the scope is shared).
        stack = super().build_middleware_stack()
        provider = self.state.meter_provider
        if provider is None:
            return stack
        return TimingMiddleware(stack, meter_provider=provider, exclude=("/healthz", "/metrics"))


def _stores(request: Request) -> Stores:
    stores: Stores = request.app.state.stores
    return stores


def _install_routes(app: FastAPI) -> None:
    _install_operations_routes(app)

    @app.get("/users/{user_id}")
    def get_user(request: Request, user_id: Id) -> dict[str, Any]:
        user = _stores(request).users.get_by_id(user_id)
        if user is None:
            raise NotFound("user", user_id)
        return user.to_dict()

    @app.get("/users")
    def find_user(
        request: Request,
        username: Annotated[str | None, Query(max_length=64)] = None,
        email: Annotated[str | None, Query(max_length=320)] = None,
    ) -> dict[str, Any]:
        users = _stores(request).users
        if (username is None) == (email is None):
            raise InvalidInput("query", "give exactly one of username or email")
        if username is not None:
            user = users.get_by_username(username)
            field, key = "username", username
        else:
            assert email is not None
            user = users.get_by_email(email)
            field, key = "email", email
        if user is None:
            raise NotFound("user", key, field=field)
        return user.to_dict()

    @app.post("/users", status_code=201)
    def create_user(request: Request, body: Annotated[NewUser, Body()]) -> dict[str, Any]:
        return _stores(request).users.create(username=body.username, email=body.email).to_dict()

    @app.get("/bills")
    def list_bills(
        request: Request,
        page: PageNo = None,
        limit: Limit = 20,
        status: Annotated[str | None, Query(max_length=32)] = None,
        cursor: CursorParam = None,
    ) -> dict[str, Any]:
        bills = _stores(request).bills
        return listing(
            page,
            cursor,
            lambda n: bills.get_all(page=n, limit=limit, status=status),
            lambda after: bills.get_all_keyset(limit=limit, cursor=after, status=status),
        )

    @app.get("/bills/{bill_id}")
    def get_bill(request: Request, bill_id: Id) -> dict[str, Any]:
        bill = _stores(request).bills.get_by_id(bill_id)
        if bill is None:
            raise NotFound("bill", bill_id)
        return bill.to_dict()

    @app.get("/bills/{bill_id}/text")
    def bill_text(request: Request, bill_id: Id) -> dict[str, Any]:
        bill = _stores(request).bills.get_by_id(bill_id)
        if bill is None:
            raise NotFound("bill", bill_id)
        texts: BillText = request.app.state.text
        return texts.fetch(bill)

    @app.post("/bills", status_code=201)
    def create_bill(request: Request, body: Annotated[NewBill, Body()]) -> dict[str, Any]:
        bill = _stores(request).bills.create(
            title=body.title, sponsor_id=body.sponsor_id, summary=body.summary, status=body.status
        )
        return bill.to_dict()

    @app.patch("/bills/{bill_id}")
    def update_bill(
        request: Request, bill_id: Id, body: Annotated[BillChanges, Body()]
    ) -> dict[str, Any]:
        bill = _stores(request).bills.update(
            bill_id, title=body.title, summary=body.summary, status=body.status
        )
        return bill.to_dict()

    @app.get("/bills/{bill_id}/votes")
    def bill_votes(
        request: Request,
        bill_id: Id,
        page: PageNo = None,
        limit: Limit = 20,
        cursor: CursorParam = None,
    ) -> dict[str, Any]:
        votes = _stores(request).votes
        return listing(
            page,
            cursor,
            lambda n: votes.get_by_bill_id(bill_id, page=n, limit=limit),
            lambda after: votes.get_by_bill_id_keyset(bill_id, limit=limit, cursor=after),
        )

    @app.get("/bills/{bill_id}/votes/counts")
    def bill_vote_counts(request: Request, bill_id: Id) -> dict[str, Any]:
        return _stores(request).votes.counts(bill_id).to_dict()

    @app.post("/bills/{bill_id}/votes", status_code=201)
    def cast_vote(
        request: Request, bill_id: Id, body: Annotated[NewVote, Body()]
    ) -> dict[str, Any]:
        vote = _stores(request).votes.cast(
            bill_id=bill_id, user_id=body.user_id, choice=body.choice
        )
        return vote.to_dict()

    @app.get("/users/{user_id}/votes")
    def user_votes(
        request: Request,
        user_id: Id,
        page: PageNo = None,
        limit: Limit = 20,
        cursor: CursorParam = None,
    ) -> dict[str, Any]:
        votes = _stores(request).votes
        return listing(
            page,
            cursor,
            lambda n: votes.get_by_user_id(user_id, page=n, limit=limit),
            lambda after: votes.get_by_user_id_keyset(user_id, limit=limit, cursor=after),
        )


def _install_operations_routes(app: FastAPI) -> None:
    @app.get("/healthz")
    def healthz(request: Request) -> JSONResponse:
        try:
            with _stores(request).engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            log.exception("health check failed")
            return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        if app.state.meter_provider is None:
            raise NotFound("route", "/metrics", field="path")
        return Response(telemetry.prometheus_text(), media_type=telemetry.CONTENT_TYPE_LATEST)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PerfkitError)
    async def perfkit_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PerfkitError)
        status = next((code for cls, code in _STATUS_OF.items() if isinstance(exc, cls)), 500)
        return JSONResponse(error_body(exc.code, exc.message), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        body_errors = any(error["loc"][:1] == ("body",) for error in errors)
        if body_errors and not _is_json(request.headers.get("content-type", "")):
            return JSONResponse(
                error_body("unsupported_media_type", "send the body as application/json"),
                status_code=415,
            )
        if any(error.get("type") == "json_invalid" for error in errors):
            return JSONResponse(
                error_body("malformed_json", "the request body is not valid JSON"),
                status_code=400,
            )
        # Never echo the input back: it may be a megabyte, or a secret.
        fields = [
            {"field": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
            for error in errors
        ]
        message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return JSONResponse(error_body("validation_error", message, fields=fields), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            error_body("internal_error", "the server failed to handle the request"),
            status_code=500,
        )


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """
    Refuse request bodies over *max_bytes* with 413 before the app buffers them.

    A declared ``Content-Length`` is checked up front; a chunked body is
    counted as it streams in.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = JSONResponse(error_body(*self._too_large()), status_code=413)
                await response(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI lets HTTPException through its body parsing;
                    # the app's handler turns it into the JSON 413.
                    raise StarletteHTTPException(413, detail=self._too_large()[1])
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self) -> tuple[str, str]:
        return "payload_too_large", f"the request body exceeds {self.max_bytes} bytes"
