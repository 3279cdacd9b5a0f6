"""
:func:`install`: one JSON error envelope for a FastAPI app, its body limit and its OpenAPI.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.params import Form
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from perfkit.errors import BodyTooLarge, PerfkitError
from perfkit.http import BodyLimit, error_body, error_headers, error_status
from perfkit.resilience import is_transient

from ._allow import allowed_methods
from ._openapi import document_errors, is_json

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_RETRY_AFTER", "install"]

log = logging.getLogger("perfkit.fastapi")

DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024
DEFAULT_RETRY_AFTER: Final = 1
"""Seconds a 503 ``unavailable`` asks the client to wait (``Retry-After``)."""

# The envelope's code for an HTTPException of each status; others are "http_error".
HTTP_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    428: "precondition_required",
    429: "too_many_requests",
    501: "not_implemented",
    503: "service_unavailable",
}
_MARK: Final = "perfkit_fastapi_installed"


def install(
    app: FastAPI,
    *,
    max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
    document: bool = True,
    retry_after: int = DEFAULT_RETRY_AFTER,
) -> None:
    """
    Give *app* one JSON error envelope, a request-body limit and OpenAPI that documents both.

    Every error, perfkit's and the framework's alike, is answered with
    ``{"error": {"code": ..., "message": ...}}``:

    ====  =========================  ==============================================
    400   ``malformed_json``         the body is not valid JSON
    404   ``not_found``              :class:`~perfkit.errors.NotFound`, or no such route
    405   ``method_not_allowed``     ``Allow`` lists every method the path accepts
    409   ``conflict``               :class:`~perfkit.errors.Conflict`
    413   ``payload_too_large``      the body is over *max_body_bytes*
    415   ``unsupported_media_type`` a JSON body sent as another media type
    422   ``validation_error``       a field or parameter failed validation; ``fields``
                                     lists each (``"body.email"``), the input never echoed
    422   ``invalid_input``…         :class:`~perfkit.errors.InvalidInput` and subclasses
    500   ``internal_error``         an unexpected exception: logged, no details sent
    503   ``unavailable``            the database failed transiently (lost or refused
                                     connections, a restart, SQLite busy: see
                                     :func:`perfkit.is_transient`) after the store's
                                     retries, or the pool had no connection to give;
                                     with ``Retry-After``
    503   ``commit_outcome_unknown`` :class:`~perfkit.errors.CommitOutcomeUnknown`: a write
                                     may or may not have been applied
    503   ``circuit_open``           :class:`~perfkit.errors.CircuitOpenError`, with ``Retry-After``
    503   ``overloaded``             :class:`~perfkit.errors.Overloaded` (every export slot of
                                     this worker taken), with ``Retry-After``
    ====  =========================  ==============================================

    Call it once, before the app starts; exception handlers registered after
    it replace its own for the same exception class.

    Args:
        app: The application.
        max_body_bytes: Refuse request bodies over this many bytes with 413
            (:class:`perfkit.http.BodyLimit`); ``None`` sets no limit.
        document: Document every error status of every route in the OpenAPI
            schema, with the envelope's schema instead of FastAPI's
            ``HTTPValidationError`` (see :func:`perfkit.fastapi.error_responses`).
        retry_after: The ``Retry-After`` of a 503 ``unavailable``, in seconds.

    Example::

        app = FastAPI()
        perfkit.fastapi.install(app, max_body_bytes=1024 * 1024)

    .. versionadded:: 0.2.0
    """
    if retry_after < 0:
        msg = f"retry_after must not be negative, not {retry_after}"
        raise ValueError(msg)
    if getattr(app.state, _MARK, False):
        warnings.warn("perfkit.fastapi.install() was already called on this app", stacklevel=2)
        return
    setattr(app.state, _MARK, True)
    app.add_exception_handler(PerfkitError, _perfkit_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    # Database errors by class, so that Starlette's ExceptionMiddleware answers them
    # (a handler of Exception runs in ServerErrorMiddleware, which re-raises).
    unavailable = _database_error(str(retry_after))
    app.add_exception_handler(sa_exc.DBAPIError, unavailable)
    app.add_exception_handler(sa_exc.TimeoutError, unavailable)
    app.add_exception_handler(Exception, _unexpected_error)
    if max_body_bytes is not None:
        app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if document:
        document_errors(app, max_body_bytes=max_body_bytes)


def _error_response(exc: PerfkitError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.code, exc.message), status_code=error_status(exc), headers=error_headers(exc)
    )


async def _perfkit_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PerfkitError)
    return _error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    body_errors = any(error["loc"][:1] == ("body",) for error in errors)
    if (
        body_errors
        and _wants_json(request)
        and not is_json(request.headers.get("content-type", ""))
    ):
        return JSONResponse(
            error_body("unsupported_media_type", "send the body as application/json"),
            status_code=415,
        )
    if any(error.get("type") == "json_invalid" for error in errors):
        return JSONResponse(
            error_body("malformed_json", "the request body is not valid JSON"), status_code=400
        )
    # Never echo the input back: it may be a megabyte, or a secret.
    fields = [
        {"field": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
        for error in errors
    ]
    message = "; ".join(f"{field['field']}: {field['message']}" for field in fields)
    return JSONResponse(error_body("validation_error", message, fields=fields), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if isinstance(exc.__cause__, BodyTooLarge):
        # FastAPI wraps what reading the body raised in a 400 of its own.
        return _error_response(exc.__cause__)
    status = exc.status_code
    headers = dict(exc.headers or {})
    if status == HTTPStatus.METHOD_NOT_ALLOWED:
        router = request.scope.get("router", request.app.router)
        allowed = allowed_methods(router.routes, request.scope)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    detail: Any = exc.detail  # FastAPI's HTTPException takes any JSON
    extra: dict[str, Any] = {}
    if isinstance(detail, str):
        message = detail
    else:
        message = _phrase(status)
        extra["detail"] = detail
    return JSONResponse(
        error_body(HTTP_CODES.get(status, "http_error"), message, **extra),
        status_code=status,
        headers=headers,
    )


def _database_error(retry_after: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        if not (is_transient(exc) or isinstance(exc, sa_exc.TimeoutError)):
            return await _unexpected_error(request, exc)  # a bug: a bad query, a constraint
        log.warning(
            "database unavailable on %s %s: %s", request.method, request.url.path, _brief(exc)
        )
        return JSONResponse(
            error_body("unavailable", "the database cannot be reached right now; try again"),
            status_code=503,
            headers={"Retry-After": retry_after},
        )

    return handler


def _brief(exc: Exception) -> str:
    """The exception's class and first line: no SQL, no parameters."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}"


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        error_body("internal_error", "the server failed to handle the request"), status_code=500
    )


def _wants_json(request: Request) -> bool:
    """Whether the route takes a JSON body (not a form)."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    return body_field is None or not isinstance(getattr(body_field, "field_info", None), Form)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "HTTP error"
