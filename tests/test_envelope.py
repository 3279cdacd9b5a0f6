"""
The JSON error envelope: statuses of perfkit's errors, headers, raw-ASGI sending, the schema.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from perfkit import (
    CircuitOpenError,
    CommitOutcomeUnknown,
    Conflict,
    InvalidCursor,
    InvalidInput,
    InvalidPage,
    NotFound,
    PerfkitError,
)
from perfkit.errors import BodyTooLarge
from perfkit.http import (
    ERROR_SCHEMA,
    encode_error,
    error_body,
    error_headers,
    error_status,
    send_error,
    send_error_for,
)

pytestmark = pytest.mark.anyio


class TakenSlug(Conflict):
    """A user's own subclass of a mapped error."""


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotFound("note", 1), 404),
        (Conflict("taken"), 409),
        (TakenSlug("taken"), 409),
        (BodyTooLarge(10), 413),
        (InvalidInput("text", "blank"), 422),
        (InvalidPage("page", "too big"), 422),
        (InvalidCursor("altered"), 422),
        (CircuitOpenError("search", retry_after=1.0), 503),
        (CommitOutcomeUnknown("lost"), 503),
        (PerfkitError("something else"), 500),
    ],
)
def test_each_error_has_the_status_of_its_nearest_class(error: PerfkitError, status: int) -> None:
    """The status comes from the nearest listed class, for an instance or the class alike."""
    assert status == error_status(error)
    assert status == error_status(type(error))


@pytest.mark.parametrize(("retry_after", "header"), [(0.0, "0"), (0.2, "1"), (3.0, "3")])
def test_retry_after_is_whole_seconds_rounded_up(retry_after: float, header: str) -> None:
    """An open circuit's Retry-After never invites the client back too early."""
    assert {"Retry-After": header} == error_headers(CircuitOpenError("x", retry_after=retry_after))
    assert error_headers(NotFound("note", 1)) == {}


def test_the_body_and_its_encoding() -> None:
    """error_body nests code, message and extras under error; encode_error is its compact JSON."""
    body = error_body("validation_error", "bad", fields=[{"field": "body.a", "message": "m"}])

    assert body == {
        "error": {
            "code": "validation_error", "message": "bad",
            "fields": [{"field": "body.a", "message": "m"}],
        }
    }  # fmt: skip
    assert encode_error("c", "é") == b'{"error":{"code":"c","message":"\xc3\xa9"}}'


async def test_send_error_sends_one_whole_response() -> None:
    """send_error sends the start and one body, with JSON media type, length and headers."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await send_error(send, 503, "warming_up", "try again", headers={"Retry-After": "5"}, n=1)

    start, body = sent
    assert start["status"] == 503
    assert [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body["body"])).encode()),
        (b"retry-after", b"5"),
    ] == start["headers"]
    assert json.loads(body["body"]) == {
        "error": {"code": "warming_up", "message": "try again", "n": 1}
    }
    assert not body.get("more_body", False)


async def test_send_error_for_an_exception() -> None:
    """send_error_for uses the error's status, code, message and headers."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await send_error_for(send, CircuitOpenError("search", retry_after=1.5))

    assert sent[0]["status"] == 503
    assert (b"retry-after", b"2") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["code"] == "circuit_open"


def test_the_schema_describes_the_bodies() -> None:
    """ERROR_SCHEMA requires error.code and error.message and lists fields' shape."""
    error = ERROR_SCHEMA["properties"]["error"]

    assert ERROR_SCHEMA["required"] == ["error"]
    assert error["required"] == ["code", "message"]
    assert error["properties"]["fields"]["items"]["required"] == ["field", "message"]
    json.dumps(ERROR_SCHEMA)  # plain JSON, ready for an OpenAPI document


def test_body_too_large_is_a_value_error_with_its_limit() -> None:
    """BodyTooLarge is a PerfkitError and a ValueError and carries the limit."""
    error = BodyTooLarge(64)

    assert isinstance(error, PerfkitError)
    assert isinstance(error, ValueError)
    assert (error.max_bytes, error.code) == (64, "payload_too_large")
