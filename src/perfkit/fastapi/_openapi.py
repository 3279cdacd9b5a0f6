"""
OpenAPI that documents every error a route can answer, with the envelope's schema.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any, Final

from fastapi import FastAPI

from perfkit.errors import CircuitOpenError, PerfkitError
from perfkit.http._envelope import ERROR_SCHEMA, error_status

__all__ = ["SCHEMA_NAME", "add_error_responses", "document_errors", "error_responses", "is_json"]

SCHEMA_NAME: Final = "ErrorEnvelope"
"""The name of the envelope's schema in ``components/schemas``."""

_REF: Final = f"#/components/schemas/{SCHEMA_NAME}"
_FASTAPI_DEFAULT: Final = "#/components/schemas/HTTPValidationError"
_FASTAPI_SCHEMAS: Final = ("HTTPValidationError", "ValidationError")
_OPERATIONS: Final = frozenset(
    {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
)

_ALLOW_HEADER: Final = {
    "Allow": {"description": "Every method the path accepts", "schema": {"type": "string"}}
}
_RETRY_AFTER_HEADER: Final = {
    "Retry-After": {
        "description": "Seconds until the request may succeed",
        "schema": {"type": "integer", "minimum": 0},
    }
}
_DESCRIPTIONS: Final = {
    400: "`malformed_json`: the body is not valid JSON",
    404: "`not_found`: no such record, or no such route",
    405: "`method_not_allowed`: the path does not accept this method",
    415: "`unsupported_media_type`: the body was not sent as application/json",
    422: "`validation_error` (each invalid field in `fields`) or `invalid_input`: "
    "a field or parameter is invalid",
    500: "`internal_error`: the server failed; no details are sent",
    503: "`unavailable`: the database (or another dependency) cannot be reached right now; "
    "or `overloaded`: this server is sending as many exports as it may; "
    "come back after `Retry-After`",
}


def error_responses(*errors: type[PerfkitError]) -> dict[int | str, dict[str, Any]]:
    """
    Return the OpenAPI ``responses`` of a route that may raise *errors*.

    Each error is documented under its status (:data:`perfkit.http.ERROR_STATUS`)
    with the envelope's schema and its ``code``. Statuses every route has
    (404, 405, 422, 500, 503, and 400/413/415 with a JSON body) are documented by
    :func:`perfkit.fastapi.install` already: declare what is particular to
    the route, such as a :class:`~perfkit.errors.Conflict` (409) or a
    :class:`~perfkit.errors.CircuitOpenError` (503, with ``Retry-After``).

    Args:
        errors: The perfkit error classes the route lets out.

    Example::

        @app.post("/notes", status_code=201, responses=error_responses(Conflict))
        def create_note(note: NewNote) -> dict[str, Any]: ...

    .. versionadded:: 0.2.0
    """
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        if not (isinstance(error, type) and issubclass(error, PerfkitError)):
            raise TypeError(f"expected a PerfkitError subclass, got {error!r}")
        status = error_status(error)
        response = responses.setdefault(
            status,
            {"description": "", "content": {"application/json": {"schema": {"$ref": _REF}}}},
        )
        line = f"`{error.code}`: {_summary(error)}"
        response["description"] = f"{response['description']}; {line}".lstrip("; ")
        if issubclass(error, CircuitOpenError):
            response["headers"] = copy.deepcopy(_RETRY_AFTER_HEADER)
    return responses


def document_errors(app: FastAPI, *, max_body_bytes: int | None) -> None:
    """
    Make *app*'s OpenAPI schema document the errors every route can answer.
    """
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            add_error_responses(schema, max_body_bytes=max_body_bytes)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def add_error_responses(schema: dict[str, Any], *, max_body_bytes: int | None) -> None:
    """
    Add the error statuses of each operation in OpenAPI *schema*, in place (idempotent).
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components[SCHEMA_NAME] = copy.deepcopy(ERROR_SCHEMA)
    for item in schema.get("paths", {}).values():
        for method, operation in item.items():
            if method in _OPERATIONS:
                _document(operation, item, max_body_bytes)
    if _FASTAPI_DEFAULT not in repr(schema):
        for name in _FASTAPI_SCHEMAS:
            components.pop(name, None)


def _document(operation: dict[str, Any], item: dict[str, Any], max_body_bytes: int | None) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    body = operation.get("requestBody")
    statuses = {404: "", 405: "", 500: "", 503: ""}
    if operation.get("parameters") or item.get("parameters") or body:
        statuses[422] = ""
    if body:
        statuses[400] = ""
        if max_body_bytes is not None:
            statuses[413] = f"`payload_too_large`: the body is over {max_body_bytes} bytes"
        if any(is_json(media) for media in body.get("content", {})):
            statuses[415] = ""
    for status, description in statuses.items():
        response = responses.setdefault(str(status), {})
        response.setdefault("description", description or _DESCRIPTIONS[status])
        if status == 405:
            response.setdefault("headers", copy.deepcopy(_ALLOW_HEADER))
        elif status == 503:
            response.setdefault("headers", copy.deepcopy(_RETRY_AFTER_HEADER))
    for key, response in responses.items():
        # Every error is the envelope: FastAPI's default for 422, and a declared error
        # status that names no schema of its own.
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        if schema == {"$ref": _FASTAPI_DEFAULT}:
            response["description"] = _DESCRIPTIONS[422]
        elif "content" in response or not _is_error(key):
            continue
        response["content"] = {"application/json": {"schema": {"$ref": _REF}}}
    operation["responses"] = dict(sorted(responses.items(), key=lambda pair: _order(pair[0])))


def _order(status: str) -> tuple[int, str]:
    return (int(status), "") if status.isdigit() else (1000, status)


def _is_error(status: str) -> bool:
    return status in ("4XX", "5XX") or (status.isdigit() and int(status) >= 400)


def _summary(error: type[PerfkitError]) -> str:
    doc = inspect.getdoc(error) or error.__name__
    return doc.strip().splitlines()[0].rstrip(".")


def is_json(media_type: str) -> bool:
    """
    Whether *media_type* (a ``Content-Type`` value) is JSON: ``application/json`` or ``+json``.
    """
    media = media_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
