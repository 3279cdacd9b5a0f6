"""
Per-request timing for ASGI and WSGI apps: Server-Timing, one JSON log line, OTel metrics.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from perfkit._context import CURRENT, RequestTiming

from ._histograms import Histograms
from ._log_buffer import BufferedStreamHandler
from ._metrics import HTTP_DURATION, HTTP_DURATION_BUCKETS, Binder, Recorder, histogram, meter

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

__all__ = ["TimingMiddleware", "WSGITimingMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
_SeriesKey = tuple[str, str | None, int, str | None, str]  # method, route, status, error, scheme

_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MAX_ATTRIBUTE_SETS: Final = 4096
# A random per-process prefix and a counter: unique, and ~10x cheaper than uuid4.
_ID_TEMPLATE: Final = secrets.token_hex(8) + "%08x"
_ID_COUNTER: Final = itertools.count(1)
_SERVER_TIMING: Final = (
    b'app;dur=%.2f, db;dur=%.2f;desc="%d queries", cache;desc="%d hits/%d misses"'
)
# The per-request part of the log line; what a series fixes (method, route, status, error)
# is written into its template once (_Timing._new_series). Every value is a number, a known
# method, a request id of safe characters, or JSON-escaped.
_LOG_VALUES: Final = (
    '"duration_ms":%.3f,"db_ms":%.3f,"db_queries":%d,"cache_hits":%d,"cache_misses":%d,'
    '"request_id":"%s"'
)
_INFO: Final = logging.INFO


def _checked_buckets(given: Iterable[float]) -> tuple[float, ...]:
    buckets = tuple(given)
    if not buckets:
        raise ValueError("duration_buckets: give at least one boundary")
    for value in buckets:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (0 < value < math.inf)
        ):
            raise ValueError(f"duration_buckets: {value!r} is not a positive number of seconds")
    if list(buckets) != sorted(set(buckets)):
        raise ValueError(f"duration_buckets: must be increasing, each once: {buckets!r}")
    return tuple(float(value) for value in buckets)


class _Timing:
    """What both middlewares share: options, instruments, the log line."""

    def __init__(
        self,
        *,
        server_timing: bool,
        log: bool,
        metrics: bool | Histograms,
        exclude: Iterable[str],
        query_warning: int | None,
        request_id_header: str,
        logger: logging.Logger | None,
        meter_provider: MeterProvider | None,
        duration_buckets: Iterable[float],
    ) -> None:
        buckets = _checked_buckets(duration_buckets)
        self.server_timing = server_timing
        self.log = log
        self.exclude = frozenset(exclude)
        self.query_warning = query_warning
        self.request_id_header = request_id_header.lower()
        self.request_id_bytes = self.request_id_header.encode("latin-1")
        self.logger = logger or logging.getLogger("perfkit.request")
        self.bind: Binder | None = None
        if isinstance(metrics, Histograms):
            if meter_provider is not None:
                msg = "metrics=Histograms takes no meter_provider: give one or the other"
                raise ValueError(msg)
            self.bind = metrics.histogram(
                HTTP_DURATION, buckets=buckets, description="Duration of HTTP server requests"
            ).series
        elif metrics:
            self.bind = histogram(
                meter(meter_provider), HTTP_DURATION, "Duration of HTTP server requests",
                buckets,
            )  # fmt: skip
        # Per (method, route, status, error, scheme): the recorder of its attribute set and
        # its log line's template, made once.
        self._series: dict[_SeriesKey, tuple[Recorder | None, str]] = {}
        self._no_db: dict[tuple[int, int, int], bytes] = {}

    def _new_series(self, key: _SeriesKey) -> tuple[Recorder | None, str]:
        method, route, status, error, scheme = key
        record = None
        if self.bind is not None:
            attributes: dict[str, Any] = {
                "http.request.method": method,
                "http.response.status_code": status,
                "url.scheme": scheme,
            }
            if route is not None:
                attributes["http.route"] = route
            error_type = error or (str(status) if status >= 500 else None)
            if error_type is not None:
                attributes["error.type"] = error_type
            record = self.bind(attributes)
        head = f'{{"event":"request","method":"{method}","route":{json.dumps(route)},'
        tail = "}" if error is None else f',"error":{json.dumps(error)}}}'
        fixed = head.replace("%", "%%") + f'"status":{int(status)},'  # as %d wrote it
        series = (record, fixed + _LOG_VALUES + tail.replace("%", "%%"))
        if len(self._series) < _MAX_ATTRIBUTE_SETS:
            self._series[key] = series
        return series

    def request_id(self, given: str | None) -> str:
        if given and _REQUEST_ID.fullmatch(given):
            return given
        return _ID_TEMPLATE % next(_ID_COUNTER)

    def server_timing_value(self, timing: RequestTiming, elapsed: float) -> bytes:
        # A bytes template: about half the time of an f-string and its encoding.
        if timing.db_seconds:
            return _SERVER_TIMING % (
                elapsed * 1000,
                timing.db_seconds * 1000,
                timing.db_queries,
                timing.cache_hits,
                timing.cache_misses,
            )
        # No database time (a cache hit, say): the rest is one of a few, made once.
        counts = (timing.db_queries, timing.cache_hits, timing.cache_misses)
        rest = self._no_db.get(counts)
        if rest is None:
            rest = (_SERVER_TIMING % (0.0, 0.0, *counts)).partition(b",")[2]
            if len(self._no_db) < _MAX_ATTRIBUTE_SETS:
                self._no_db[counts] = rest
        return b"app;dur=%.2f," % (elapsed * 1000) + rest

    def finish(  # noqa: PLR0917 - positional: this runs once per request
        self,
        method: str,
        route: str | None,
        status: int,
        error: str | None,
        scheme: str,
        timing: RequestTiming,
        elapsed: float,
    ) -> None:
        if method not in _METHODS:
            method = "_OTHER"
        key = (method, route, status, error, scheme)
        series = self._series.get(key)
        if series is None:
            series = self._new_series(key)
        record, template = series
        if record is not None:
            record(elapsed)
        logger = self.logger
        if self.log and logger.isEnabledFor(_INFO):
            line = template % (
                elapsed * 1000,
                timing.db_seconds * 1000,
                timing.db_queries,
                timing.cache_hits,
                timing.cache_misses,
                timing.request_id,
            )
            handlers = logger.handlers
            if (
                len(handlers) == 1
                and type(handler := handlers[0]) is BufferedStreamHandler
                and handler.takes_lines_from(logger)
            ):
                handler.write_line(line)  # no LogRecord: most of a log line's cost
            else:
                logger.handle(logger.makeRecord(logger.name, _INFO, "", 0, line, (), None))
        if self.query_warning is not None and timing.db_queries > self.query_warning:
            logger.warning(
                json.dumps(
                    {
                        "event": "too_many_queries",
                        "route": route,
                        "db_queries": timing.db_queries,
                        "threshold": self.query_warning,
                        "request_id": timing.request_id,
                    },
                    separators=(",", ":"),
                )
            )


class TimingMiddleware:
    """
    Pure ASGI middleware: times each HTTP request and reports it three ways.

    * a ``Server-Timing`` header on every response —
      ``app;dur=…, db;dur=…;desc="N queries", cache;desc="H hits/M misses"``
      (``app`` is the time until the response headers are sent);
    * one JSON log line per request on the ``perfkit.request`` logger, at
      INFO: method, route template, status, duration, database time and
      queries, cache hits/misses, request id — never headers, cookies,
      query strings or bodies;
    * the ``http.server.request.duration`` histogram (seconds, semconv
      buckets and attributes; ``http.route`` is the matched route's
      **template**, read after routing, so 10,000 different paths are still
      one series per route; unmatched requests carry no ``http.route``).

    The request id comes from a valid ``X-Request-ID`` header or is made up,
    and is echoed in the response. Paths in *exclude* (e.g. ``/healthz``) get
    neither log lines nor metrics. With *query_warning*, a request running
    more statements than that logs a ``too_many_queries`` warning (N+1).

    Database time needs :func:`perfkit.instrument_engine` on the engine.

    Args:
        app: The ASGI app to wrap.
        server_timing: Add the ``Server-Timing`` header.
        log: Write the per-request log line.
        metrics: Record the OpenTelemetry histogram (opentelemetry-api only;
            without an SDK configured it is a no-op), or, given a
            :class:`~perfkit.observability.Histograms`, count it there: the same
            series for a fraction of the SDK's cost per request.
        exclude: Exact paths to leave out of logs and metrics.
        query_warning: Queries per request above which to warn (``None``: off).
        request_id_header: The header carrying the request id.
        logger: Where log lines go (default: ``perfkit.request``).
        meter_provider: The OpenTelemetry meter provider (default: global).
        duration_buckets: The histogram's bucket boundaries in seconds (advised
            to the SDK; a View configured in the SDK wins). Every latency
            threshold you alert on needs a boundary exactly there:
            :func:`perfkit.budgets.duration_buckets` adds a budgets file's.

    Raises:
        ValueError: *duration_buckets* is empty, unsorted, repeats a value, or holds
            a value that is not a positive finite number.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 *duration_buckets*; *metrics* takes
       :class:`~perfkit.observability.Histograms`.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        server_timing: bool = True,
        log: bool = True,
        metrics: bool | Histograms = True,
        exclude: Iterable[str] = ("/healthz",),
        query_warning: int | None = 20,
        request_id_header: str = "x-request-id",
        logger: logging.Logger | None = None,
        meter_provider: MeterProvider | None = None,
        duration_buckets: Iterable[float] = HTTP_DURATION_BUCKETS,
    ) -> None:
        self.app = app
        self._timing = _Timing(
            server_timing=server_timing,
            log=log,
            metrics=metrics,
            exclude=exclude,
            query_warning=query_warning,
            request_id_header=request_id_header,
            logger=logger,
            meter_provider=meter_provider,
            duration_buckets=duration_buckets,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        shared = self._timing
        given = None
        header_name = shared.request_id_bytes
        for name, value in scope.get("headers", ()):
            if name == header_name:
                given = value.decode("latin-1")
                break
        exchange = _Exchange(
            given if given and _REQUEST_ID.fullmatch(given) else _ID_TEMPLATE % next(_ID_COUNTER),
            send,
            shared,
        )
        token = CURRENT.set(exchange)
        error: str | None = None
        try:
            await self.app(scope, receive, exchange)
        except Exception as exc:
            error = type(exc).__qualname__
            raise
        finally:
            elapsed = time.perf_counter() - exchange.started
            CURRENT.reset(token)
            # Contexts copied during the request (the server's keep-alive timer, say)
            # keep the exchange; they must not keep the server's send and all behind it.
            exchange.send = _finished
            if scope["path"] not in shared.exclude:
                route = scope.get("route")
                shared.finish(
                    scope["method"],
                    getattr(route, "path", None) if route is not None else None,
                    exchange.status,
                    error,
                    scope.get("scheme", "http"),
                    exchange,
                    elapsed,
                )


async def _finished(message: Message) -> None:
    raise RuntimeError(f"ASGI message {message.get('type')!r} sent after the app returned")


class _Exchange(RequestTiming):
    """
    One ASGI request in flight: its timing, and the ``send`` the app is given.

    One object rather than a closure and its cells: objects alive during a
    request are what the garbage collector's young generations keep
    promoting under load, and a full collection in a FastAPI process costs
    ~50 ms (docs/benchmarks.md).
    """

    __slots__ = ("send", "shared", "started", "status")

    def __init__(self, request_id: str, send: Send, shared: _Timing) -> None:
        # RequestTiming.__init__'s fields, set here: it spares a call a request
        # (tests/test_observability.py checks they stay the same).
        self.request_id = request_id
        self.db_seconds = 0.0
        self.db_queries = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.breaker_rejections = 0
        self.send = send
        self.shared = shared
        self.status = 500
        self.started = time.perf_counter()

    def __call__(self, message: Message) -> Awaitable[None]:
        # Not a coroutine itself: it hands back the server's send for the app to await,
        # which spares a coroutine object and a frame per message.
        if message["type"] == "http.response.start":
            self.status = message["status"]
            shared = self.shared
            # The message is ours to change on its way out (as Starlette's own
            # middlewares do), which spares copying it.
            headers = [
                *message.get("headers", ()),
                (shared.request_id_bytes, self.request_id.encode("latin-1")),
            ]
            if shared.server_timing:
                elapsed = time.perf_counter() - self.started
                headers.append((b"server-timing", shared.server_timing_value(self, elapsed)))
            message["headers"] = headers
        return self.send(message)


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WSGITimingMiddleware:
    """
    The WSGI twin of :class:`TimingMiddleware` (same header, log line and metrics).

    *duration_buckets* works as :class:`TimingMiddleware`'s does.

    WSGI has no standard place for the matched route: pass *route* — a
    function of the environ returning the route template, or ``None`` — to
    fill ``http.route``. Timing ends when the response body is closed, so
    streamed bodies are timed whole.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 *duration_buckets*.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        route: Callable[[dict[str, Any]], str | None] | None = None,
        server_timing: bool = True,
        log: bool = True,
        metrics: bool | Histograms = True,
        exclude: Iterable[str] = ("/healthz",),
        query_warning: int | None = 20,
        request_id_header: str = "x-request-id",
        logger: logging.Logger | None = None,
        meter_provider: MeterProvider | None = None,
        duration_buckets: Iterable[float] = HTTP_DURATION_BUCKETS,
    ) -> None:
        self.app = app
        self.route = route
        self._timing = _Timing(
            server_timing=server_timing,
            log=log,
            metrics=metrics,
            exclude=exclude,
            query_warning=query_warning,
            request_id_header=request_id_header,
            logger=logger,
            meter_provider=meter_provider,
            duration_buckets=duration_buckets,
        )
        self._environ_key = "HTTP_" + request_id_header.upper().replace("-", "_")

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        shared = self._timing
        started = time.perf_counter()
        timing = RequestTiming(shared.request_id(environ.get(self._environ_key)))
        token = CURRENT.set(timing)
        state: dict[str, Any] = {"status": 500, "error": None}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            state["status"] = int(status.split(" ", 1)[0])
            headers = [*headers, (shared.request_id_header, timing.request_id)]
            if shared.server_timing:
                value = shared.server_timing_value(timing, time.perf_counter() - started)
                headers.append(("server-timing", value.decode("latin-1")))
            return start_response(status, headers, exc_info)

        def finish() -> None:
            if environ.get("PATH_INFO", "") in shared.exclude:
                return
            shared.finish(
                environ.get("REQUEST_METHOD", "GET"),
                self.route(environ) if self.route is not None else None,
                state["status"],
                state["error"],
                environ.get("wsgi.url_scheme", "http"),
                timing,
                time.perf_counter() - started,
            )

        try:
            body = self.app(environ, start)
        except Exception as exc:
            state["error"] = type(exc).__qualname__
            CURRENT.reset(token)
            finish()
            raise
        CURRENT.reset(token)
        return _TimedBody(body, timing, state, finish)


class _TimedBody:
    """A WSGI response body that reports the request when the server closes it."""

    def __init__(
        self,
        body: Iterable[bytes],
        timing: RequestTiming,
        state: dict[str, Any],
        finish: Callable[[], None],
    ) -> None:
        self._body = body
        self._timing = timing
        self._state = state
        self._finish = finish

    def __iter__(self) -> Iterator[bytes]:
        token = CURRENT.set(self._timing)  # a lazy body may query the database
        try:
            yield from self._body
        except Exception as exc:
            self._state["error"] = type(exc).__qualname__
            raise
        finally:
            CURRENT.reset(token)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._finish()
