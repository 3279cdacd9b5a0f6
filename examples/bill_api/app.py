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
    ``off`` serves every read from the database (for baselines); ``data``
    caches store reads but not whole responses.
``PERFKIT_TIMING``
    ``off`` leaves out the timing middleware, query timing and ``/metrics``
    (for before/after benchmarks).
``PERFKIT_HISTOGRAMS``
    ``sdk`` records the request and statement durations through the OpenTelemetry
    SDK's histograms (the default only where traces are configured: exemplars need
    them) instead of :class:`perfkit.observability.Histograms` (for benchmarks).
``PERFKIT_BUDGETS``
    The budgets file whose latency thresholds the request histogram gets bucket
    boundaries at (default: the repository's ``budgets.json``).
``PERFKIT_AMQP_URL``
    Send the API's events (vote casts, bill status changes, written to an
    outbox in each write's transaction) through this RabbitMQ, relayed by
    ``python -m bill_api.relay`` and consumed by ``dramatiq bill_api.worker``
    (default: none, a relay thread in this process consumes them;
    :mod:`bill_api.events`).
``PERFKIT_WEBHOOKS_ALLOW_PRIVATE``
    ``1`` lets webhook endpoints be on loopback and private addresses (a
    receiver on this machine); by default they must resolve to public ones.
``PERFKIT_TEXT_URL``
    The bill-text service behind ``GET /bills/{id}/text``, called through a
    circuit breaker (default: none, the stored summary is served).

Bulk writes (``POST /users/batch``, ``/bills/batch``, ``/votes/batch``; at most
1,000 items) answer 200 with one result per item, each with the status it would
have had alone. Exports (``GET /bills/export``, ``/bills/{id}/votes/export``;
``?format=ndjson`` or ``csv``) stream every row in keyset batches.

Webhooks: ``POST /webhooks`` subscribes an endpoint (URL, secret, event types) to the
API's events (``vote.cast``, ``bill.status_changed``), delivered per the Standard
Webhooks spec; ``GET /webhooks/{id}`` shows its state (disabled after a 410) and counts,
``GET /webhooks/{id}/deliveries?status=dead`` its dead letters, and
``POST /webhooks/{id}/deliveries/{delivery_id}/retry`` starts one again.

Every error is a JSON body ``{"error": {"code": ..., "message": ...}}`` with a
4xx status: 400 malformed JSON, 404 unknown id or route, 405 wrong method,
409 conflict, 413 body too large, 415 body not sent as JSON, 422 invalid
field or query parameter; or 503 with ``Retry-After`` while the database
cannot be reached (the stores retry first), never 500 for that.

``GET /healthz`` is liveness (the process answers); ``GET /readyz`` is
readiness (the database answers; the cache is reported, but fails open).
"""

from __future__ import annotations

import gc
import inspect
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated, Any, Final, Literal

import sqlalchemy as sa
from fastapi import Body, Depends, FastAPI, Path, Query, Request
from fastapi.responses import Response
from opentelemetry.sdk.metrics import MeterProvider
from pydantic import BaseModel, ConfigDict, Field

from bill_api import events, telemetry
from bill_api.text import BillText
from perfkit import (
    CircuitBreaker,
    Conflict,
    InvalidInput,
    NotFound,
    TimingMiddleware,
    instrument_engine,
)
from perfkit.cache import Cache, MemoryBackend, RedisBackend, TieredBackend
from perfkit.fastapi import (
    ExportFormat,
    ExportResponse,
    JSONBytes,
    Pagination,
    error_responses,
    health_routes,
    install,
)
from perfkit.http import (
    BATCH_SCHEMA,
    CachedRoute,
    Compression,
    ResponseCache,
    StreamLimit,
    batch_body,
    cache_probe,
    database_probe,
    drain_on_sigterm,
    tag_response,
)
from perfkit.observability import InstanceMetrics
from perfkit.outbox import InProcessPublisher, Outbox, Relay
from perfkit.reference import (
    BillRecord,
    Stores,
    VoteRecord,
    cache_keys,
    codec,
    open_stores,
)
from perfkit.webhooks import Webhooks, WebhookWorker

__all__ = ["DEFAULT_DATABASE_URL", "create_app"]

log = logging.getLogger("bill_api")

DEMO_DATABASE: Final = FilePath(__file__).resolve().parents[2] / "var" / "demo.sqlite3"
DEFAULT_DATABASE_URL: Final = f"sqlite:///{DEMO_DATABASE}"
MAX_BODY_BYTES: Final = 64 * 1024
MAX_ID: Final = 2**63 - 1
MAX_LIMIT: Final = 100
MAX_BATCH: Final = 1_000
OPERATIONS_PATHS: Final = ("/healthz", "/readyz", "/metrics")

Id = Annotated[int, Path(ge=1, le=MAX_ID, description="A positive row id")]
# ?page= or ?cursor= (empty for the first keyset page), and ?limit=; Link headers on the answer.
Paging = Annotated[Pagination, Depends(Pagination.dependency(max_limit=MAX_LIMIT))]


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


class Ballot(NewVote):
    bill_id: int


# Bulk bodies: {"items": [...]}, 1 to 1,000 items. A malformed item (a wrong type, a
# missing field) fails the request (422); one the stores refuse fails alone.
class NewUsers(_Body):
    items: Annotated[list[NewUser], Field(min_length=1, max_length=MAX_BATCH)]


class NewBills(_Body):
    items: Annotated[list[NewBill], Field(min_length=1, max_length=MAX_BATCH)]


class Ballots(_Body):
    items: Annotated[list[Ballot], Field(min_length=1, max_length=MAX_BATCH)]


BATCH_REPLY: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "Every item's result, in input order",
        "content": {"application/json": {"schema": BATCH_SCHEMA}},
    }
}
Format = Annotated[ExportFormat, Query(description="ndjson (one JSON object per line) or csv")]


def _record(record: Any) -> dict[str, Any]:
    as_dict: dict[str, Any] = record.to_dict()
    return as_dict


# Whole responses cached under the tags the stores' writes invalidate
# (perfkit.reference.cache_keys), so a write drops the record and its responses at once.
# GET /bills/{id}/text is not here: when the text service is down it answers a fallback.
CACHED_ROUTES: Final = (
    CachedRoute("/users/{user_id}", params={"user_id": int}, tags=[cache_keys.USER]),
    CachedRoute("/users"),  # tagged by the handler with the id it found
    CachedRoute("/bills", tags=["table:bills"]),
    CachedRoute("/bills/{bill_id}", params={"bill_id": int}, tags=[cache_keys.BILL]),
    CachedRoute("/bills/{bill_id}/votes", params={"bill_id": int}, tags=["votes:bill:{bill_id}"]),
    CachedRoute(
        "/bills/{bill_id}/votes/counts", params={"bill_id": int}, tags=["votes:bill:{bill_id}"]
    ),
    CachedRoute("/users/{user_id}/votes", params={"user_id": int}, tags=["votes:user:{user_id}"]),
)


def _export_limit() -> StreamLimit | None:
    """Exports at once per worker: ``PERFKIT_EXPORTS`` (default 4; 0: unbounded)."""
    concurrent = int(os.environ.get("PERFKIT_EXPORTS", "4"))
    return StreamLimit(concurrent, send_timeout=30) if concurrent > 0 else None


EXPORTS: Final = _export_limit()


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

    caching = os.environ.get("PERFKIT_CACHE", "on")
    if stores is not None:
        cache = stores.cache
    else:
        cache = None if caching == "off" else make_cache(os.environ.get("PERFKIT_REDIS_URL"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if stores is not None:
            app.state.stores = stores
            yield
            app.state.webhooks.close()
            return
        url = database_url or os.environ.get("PERFKIT_DATABASE_URL") or DEFAULT_DATABASE_URL
        outbox = events.outbox()
        opened = open_stores(url, cache=cache, outbox=outbox)
        app.state.stores = opened
        stop_operations = _operations(app, opened.engine, provider)
        stop_consumers = _consume_events(app, opened.engine, outbox)
        restore = _tune_gc()
        try:
            yield
        finally:
            stop_operations()
            restore()
            stop_consumers()
            opened.close()
            if cache is not None:
                await cache.backend.aclose()  # the response cache's async connections
                cache.backend.close()  # the tiered listener thread and the Redis connections

    timing = os.environ.get("PERFKIT_TIMING") != "off"
    provider = telemetry.meter_provider() if timing else None
    options: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI).parameters:
        # Recent FastAPI records http.server.request.duration itself: perfkit's
        # middleware does that (with the route template), so FastAPI's is off. Its tracing
        # and logs stay on only where a tracer provider is configured: otherwise they would
        # do nothing but look the providers up again on every request (docs/benchmarks.md).
        options["telemetry"] = {"metrics": False, "tracing": telemetry.tracing(), "logs": False}
    app = _API(title="perfkit bill/vote API", version="0.1.0", lifespan=lifespan, **options)
    app.state.meter_provider = provider
    app.state.instance_metrics = None
    app.state.response_cache = cache if caching != "data" else None
    app.state.text = text or BillText(os.environ.get("PERFKIT_TEXT_URL") or None)
    app.state.webhook_worker = None
    if stores is not None:
        _serve(app, stores)
    install(app, max_body_bytes=MAX_BODY_BYTES)
    app.state.readiness = health_routes(
        app, [database_probe(lambda: _engine(app)), cache_probe(lambda: app.state.stores.cache)]
    )
    app.add_middleware(Compression)  # what the response cache does not hold
    _install_routes(app)
    return app


def _operations(
    app: FastAPI, engine: sa.Engine, provider: MeterProvider | None
) -> Callable[[], None]:
    """
    Timed queries and instance-wide ``/metrics`` (docs/observability.md); and on SIGTERM,
    /readyz 503 at once, then the server's own shutdown ``PERFKIT_DRAIN_SECONDS`` later
    (default 0; behind a balancer: its health checks' detection time). Returns the undo.
    """
    metrics = None
    if provider is not None:
        instrument_engine(engine, **telemetry.metrics_options(provider))
        metrics = app.state.instance_metrics = InstanceMetrics("bill_api")
        metrics.start()
    undrain: Callable[[], None] = lambda: None  # noqa: E731
    if threading.current_thread() is threading.main_thread():  # not when served from a thread
        grace = float(os.environ.get("PERFKIT_DRAIN_SECONDS", "0"))
        undrain = drain_on_sigterm(app.state.readiness, grace=grace)

    def stop() -> None:
        undrain()
        if metrics is not None:
            metrics.stop()

    return stop


def _consume_events(app: FastAPI, engine: sa.Engine, outbox: Outbox) -> Callable[[], None]:
    """
    The webhooks, and (embedded) a relay thread and a webhook worker consuming the
    events in this process; returns what stops them.
    """
    hooks = app.state.webhooks = events.webhooks(engine, create=False)  # migrated
    if events.amqp_url() is not None:  # the relay and the worker are processes of their own
        return hooks.close
    worker = app.state.webhook_worker = WebhookWorker(hooks)
    worker.start()
    relay = Relay(engine, outbox, InProcessPublisher(events.consumer(worker.dispatch)))
    relay.start()

    def stop() -> None:
        relay.stop()
        worker.stop()
        hooks.close()

    return stop


def _serve(app: FastAPI, stores: Stores) -> None:
    """Serve *stores*, opened by the caller (no relay: events and deliveries wait)."""
    app.state.stores = stores
    # The caller made the schema; the webhook tables are made on first use (a write:
    # the app must start, and serve reads, while the database refuses writes).
    app.state.webhooks = events.webhooks(stores.engine, create=False)
    app.state.webhooks_missing = threading.Lock()
    provider = app.state.meter_provider
    if provider is not None:
        instrument_engine(stores.engine, **telemetry.metrics_options(provider))


class _API(FastAPI):
    """FastAPI behind perfkit's response cache, and the timing middleware around both."""

    def build_middleware_stack(self) -> Any:
        # add_middleware() would put these inside Starlette's ServerErrorMiddleware.
        # Outside it, a cached response is answered before FastAPI runs at all, and the
        # timing sees every request, the 500s that middleware answers included (it reads
        # the route template after routing: the scope is shared).
        stack = super().build_middleware_stack()
        cache = self.state.response_cache
        if cache is not None:
            stack = ResponseCache(stack, cache=cache, routes=CACHED_ROUTES)
        provider = self.state.meter_provider
        if provider is None:
            return stack
        return TimingMiddleware(
            stack,
            **telemetry.metrics_options(provider),
            exclude=OPERATIONS_PATHS,
            duration_buckets=telemetry.histogram_buckets(),
        )


GC_THRESHOLDS: Final = (10_000, 50, 100)


def _tune_gc() -> Callable[[], None]:
    """
    Keep the cyclic garbage collector out of the latency tail (docs/benchmarks.md,
    "Capacity"). Everything made at startup lives as long as the process: frozen, no
    collection walks it again. A warm cache holds tens of thousands of long-lived objects
    a full collection walks in 20-60 ms; with CPython's default thresholds (700, 10, 10)
    one ran every few seconds under load and set every route's p95. These thresholds
    collect young objects a tenth as often and full collections rarely; garbage in
    reference cycles waits longer to be freed (this API makes little). Returns what puts
    the collector back as it was (at shutdown).
    """
    before = gc.get_threshold()
    gc.collect()  # startup's garbage goes first: frozen, it would stay
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

    def restore() -> None:
        gc.set_threshold(*before)
        gc.unfreeze()

    return restore


def _engine(app: FastAPI) -> sa.Engine:
    engine: sa.Engine = app.state.stores.engine
    return engine


def _stores(request: Request) -> Stores:
    stores: Stores = request.app.state.stores
    return stores


def _install_routes(app: FastAPI) -> None:
    _install_operations_routes(app)
    _install_bulk_routes(app)
    _install_export_routes(app)  # before /bills/{bill_id}, which would take "export" for an id
    _install_webhook_routes(app)

    # The hot reads answer JSONBytes: the record encoded by orjson, no pydantic pass.
    @app.get("/users/{user_id}", response_class=JSONBytes)
    def get_user(request: Request, user_id: Id) -> JSONBytes:
        user = _stores(request).users.get_by_id(user_id)
        if user is None:
            raise NotFound("user", user_id)
        return JSONBytes(user)

    @app.get("/users", response_class=JSONBytes)
    def find_user(
        request: Request,
        username: Annotated[str | None, Query(max_length=64)] = None,
        email: Annotated[str | None, Query(max_length=320)] = None,
    ) -> JSONBytes:
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
        tag_response(cache_keys.user_tag(user.id))
        return JSONBytes(user)

    # Writes answer JSONBytes too: one trip through the thread pool, not two.
    @app.post(
        "/users", status_code=201, response_class=JSONBytes, responses=error_responses(Conflict)
    )
    def create_user(request: Request, body: Annotated[NewUser, Body()]) -> JSONBytes:
        user = _stores(request).users.create(username=body.username, email=body.email)
        return JSONBytes(user, status_code=201)

    @app.get("/bills")
    def list_bills(
        request: Request,
        paging: Paging,
        status: Annotated[str | None, Query(max_length=32)] = None,
    ) -> dict[str, Any]:
        bills = _stores(request).bills
        limit = paging.limit
        return paging.listing(
            lambda n: bills.get_all(page=n, limit=limit, status=status),
            lambda after: bills.get_all_keyset(limit=limit, cursor=after, status=status),
            item=_record,
        )

    @app.get("/bills/{bill_id}", response_class=JSONBytes)
    def get_bill(request: Request, bill_id: Id) -> JSONBytes:
        bill = _stores(request).bills.get_by_id(bill_id)
        if bill is None:
            raise NotFound("bill", bill_id)
        return JSONBytes(bill)

    @app.get("/bills/{bill_id}/text")
    def bill_text(request: Request, bill_id: Id) -> dict[str, Any]:
        bill = _stores(request).bills.get_by_id(bill_id)
        if bill is None:
            raise NotFound("bill", bill_id)
        texts: BillText = request.app.state.text
        return texts.fetch(bill)

    @app.post("/bills", status_code=201, response_class=JSONBytes)
    def create_bill(request: Request, body: Annotated[NewBill, Body()]) -> JSONBytes:
        bill = _stores(request).bills.create(
            title=body.title, sponsor_id=body.sponsor_id, summary=body.summary, status=body.status
        )
        return JSONBytes(bill, status_code=201)

    @app.patch("/bills/{bill_id}", response_class=JSONBytes)
    def update_bill(
        request: Request, bill_id: Id, body: Annotated[BillChanges, Body()]
    ) -> JSONBytes:
        bill = _stores(request).bills.update(
            bill_id, title=body.title, summary=body.summary, status=body.status
        )
        return JSONBytes(bill)

    @app.get("/bills/{bill_id}/votes")
    def bill_votes(request: Request, bill_id: Id, paging: Paging) -> dict[str, Any]:
        votes = _stores(request).votes
        limit = paging.limit
        return paging.listing(
            lambda n: votes.get_by_bill_id(bill_id, page=n, limit=limit),
            lambda after: votes.get_by_bill_id_keyset(bill_id, limit=limit, cursor=after),
            item=_record,
        )

    @app.get("/bills/{bill_id}/votes/counts", response_class=JSONBytes)
    def bill_vote_counts(request: Request, bill_id: Id) -> JSONBytes:
        return JSONBytes(_stores(request).votes.counts(bill_id).to_dict())  # total: a property

    @app.post(
        "/bills/{bill_id}/votes",
        status_code=201,
        response_class=JSONBytes,
        responses=error_responses(Conflict),
    )
    def cast_vote(request: Request, bill_id: Id, body: Annotated[NewVote, Body()]) -> JSONBytes:
        vote = _stores(request).votes.cast(
            bill_id=bill_id, user_id=body.user_id, choice=body.choice
        )
        return JSONBytes(vote, status_code=201)

    @app.get("/users/{user_id}/votes")
    def user_votes(request: Request, user_id: Id, paging: Paging) -> dict[str, Any]:
        votes = _stores(request).votes
        limit = paging.limit
        return paging.listing(
            lambda n: votes.get_by_user_id(user_id, page=n, limit=limit),
            lambda after: votes.get_by_user_id_keyset(user_id, limit=limit, cursor=after),
            item=_record,
        )


def _install_bulk_routes(app: FastAPI) -> None:
    @app.post("/users/batch", response_class=JSONBytes, responses=BATCH_REPLY)
    def create_users(request: Request, body: Annotated[NewUsers, Body()]) -> JSONBytes:
        users = _stores(request).users
        result = users.create_many({"username": u.username, "email": u.email} for u in body.items)
        return JSONBytes(batch_body(result))

    @app.post("/bills/batch", response_class=JSONBytes, responses=BATCH_REPLY)
    def create_bills(request: Request, body: Annotated[NewBills, Body()]) -> JSONBytes:
        result = _stores(request).bills.create_many(
            {"title": b.title, "sponsor_id": b.sponsor_id, "summary": b.summary, "status": b.status}
            for b in body.items
        )
        return JSONBytes(batch_body(result))

    @app.post("/votes/batch", response_class=JSONBytes, responses=BATCH_REPLY)
    def cast_votes(request: Request, body: Annotated[Ballots, Body()]) -> JSONBytes:
        result = _stores(request).votes.cast_many(
            {"bill_id": b.bill_id, "user_id": b.user_id, "choice": b.choice} for b in body.items
        )
        return JSONBytes(batch_body(result))


def _install_export_routes(app: FastAPI) -> None:
    @app.get("/bills/export", response_class=ExportResponse)
    def export_bills(
        request: Request,
        format: Format = "ndjson",
        status: Annotated[str | None, Query(max_length=32)] = None,
    ) -> ExportResponse:
        batches = _stores(request).bills.export(status=status)
        return ExportResponse(
            batches, format=format, fields=BillRecord, filename="bills", limit=EXPORTS
        )

    @app.get("/bills/{bill_id}/votes/export", response_class=ExportResponse)
    def export_bill_votes(
        request: Request,
        bill_id: Id,
        format: Format = "ndjson",
    ) -> ExportResponse:
        batches = _stores(request).votes.export_by_bill(bill_id)
        name = f"bill-{bill_id}-votes"
        return ExportResponse(
            batches, format=format, fields=VoteRecord, filename=name, limit=EXPORTS
        )


class NewWebhook(_Body):
    url: Annotated[str, Field(description="Where to POST: http(s), a public address")]
    secret: Annotated[
        str | None,
        Field(description="whsec_ + base64 (16+ bytes); a random one is made when left out"),
    ] = None
    types: Annotated[
        list[str] | None, Field(description="The event types to receive; null: every type")
    ] = None


class WebhookChanges(_Body):
    status: Literal["active", "disabled"]


DeliveryFilter = Annotated[
    Literal["pending", "delivered", "dead"] | None,
    Query(description="Only deliveries in this state (dead: the dead letters)"),
]


def _webhooks(request: Request) -> Webhooks:
    state = request.app.state
    hooks: Webhooks = state.webhooks
    missing: threading.Lock | None = getattr(state, "webhooks_missing", None)
    if missing is not None:
        with missing:
            if getattr(state, "webhooks_missing", None) is not None:
                hooks.create()  # a locked database: 503 like any write, tried next time
                state.webhooks_missing = None
    return hooks


def _endpoint_body(hooks: Webhooks, endpoint_id: int) -> dict[str, Any]:
    return {**hooks.endpoint(endpoint_id).to_dict(), "deliveries": hooks.counts(endpoint_id)}


def _install_webhook_routes(app: FastAPI) -> None:
    @app.post("/webhooks", status_code=201)
    def subscribe_webhook(request: Request, body: Annotated[NewWebhook, Body()]) -> dict[str, Any]:
        """Subscribe an endpoint; the answer carries its secret, this once."""
        sub = _webhooks(request).subscribe(body.url, secret=body.secret, types=body.types)
        return {**sub.endpoint.to_dict(), "secret": sub.secret}

    @app.get("/webhooks/{endpoint_id}")
    def get_webhook(request: Request, endpoint_id: Id) -> dict[str, Any]:
        """The endpoint, its state, and how many deliveries are pending, delivered and dead."""
        return _endpoint_body(_webhooks(request), endpoint_id)

    @app.patch("/webhooks/{endpoint_id}")
    def change_webhook(
        request: Request, endpoint_id: Id, body: Annotated[WebhookChanges, Body()]
    ) -> dict[str, Any]:
        """Enable an endpoint again (after a 410), or disable it."""
        hooks = _webhooks(request)
        if body.status == "active":
            changed = hooks.enable(endpoint_id)
        else:
            changed = hooks.disable(endpoint_id)
        return {**changed.to_dict(), "deliveries": hooks.counts(endpoint_id)}

    @app.delete("/webhooks/{endpoint_id}", status_code=204)
    def unsubscribe_webhook(request: Request, endpoint_id: Id) -> Response:
        _webhooks(request).unsubscribe(endpoint_id)
        return Response(status_code=204)

    @app.get("/webhooks/{endpoint_id}/deliveries")
    def webhook_deliveries(
        request: Request,
        endpoint_id: Id,
        status: DeliveryFilter = None,
        before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Page on")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    ) -> dict[str, Any]:
        """The endpoint's deliveries, newest first; ``next`` is the ``before`` of the next page."""
        found = _webhooks(request).deliveries(
            endpoint_id, status=status, before=before, limit=limit
        )
        following = found[-1].id if len(found) == limit else None
        return {"items": [d.to_dict() for d in found], "next": following}

    @app.post(
        "/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry",
        status_code=202,
        responses=error_responses(Conflict),
    )
    def retry_webhook_delivery(
        request: Request, endpoint_id: Id, delivery_id: Id
    ) -> dict[str, Any]:
        """Start a dead delivery again (the endpoint must be active)."""
        revived = _webhooks(request).redeliver(delivery_id, endpoint_id=endpoint_id)
        worker: WebhookWorker | None = request.app.state.webhook_worker
        if worker is not None:
            worker.wake()
        return revived.to_dict()


def _install_operations_routes(app: FastAPI) -> None:
    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        if app.state.meter_provider is None:
            raise NotFound("route", "/metrics", field="path")
        instance: InstanceMetrics | None = app.state.instance_metrics
        text = telemetry.prometheus_text() if instance is None else instance.exposition()
        return Response(text, media_type=telemetry.CONTENT_TYPE_LATEST)
