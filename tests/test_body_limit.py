"""
BodyLimit in a plain Starlette app (no FastAPI, no exception handler of perfkit's) and on raw ASGI.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from perfkit.errors import BodyTooLarge
from perfkit.http import BodyLimit

pytestmark = pytest.mark.anyio

LIMIT = 100


async def count(request: Request) -> JSONResponse:
    return JSONResponse({"bytes": len(await request.body())})


async def forgiving(request: Request) -> JSONResponse:
    """Catches the limit's error and answers 200 anyway."""
    try:
        await request.body()
    except BodyTooLarge:
        return JSONResponse({"ok": True})
    return JSONResponse({"ok": True})


def starlette_app() -> Starlette:
    routes = [
        Route("/count", count, methods=["POST"]),
        Route("/forgiving", forgiving, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(BodyLimit, max_bytes=LIMIT)])


async def chunked(size: int) -> AsyncIterator[bytes]:
    """*size* bytes in chunks of 30, with no Content-Length."""
    for start in range(0, size, 30):
        yield b"x" * min(30, size - start)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=starlette_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://plain") as test_client:
        yield test_client


def assert_413(response: httpx.Response) -> None:
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert str(len(response.content)) == response.headers["content-length"]
    assert {
        "error": {"code": "payload_too_large", "message": f"the request body exceeds {LIMIT} bytes"}
    } == response.json()


async def test_a_declared_length_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    """Content-Length over the limit: the envelope's 413."""
    assert_413(await client.post("/count", content=b"x" * (LIMIT + 1)))


@pytest.mark.parametrize("path", ["/count", "/forgiving"])
async def test_a_chunked_body_over_the_limit_is_413(client: httpx.AsyncClient, path: str) -> None:
    """A streamed body over the limit is a 413, whether the app let the error out or not."""
    assert_413(await client.post(path, content=chunked(LIMIT + 1)))


@pytest.mark.parametrize("size", [0, LIMIT])
async def test_bodies_up_to_the_limit_pass(client: httpx.AsyncClient, size: int) -> None:
    """Declared or streamed, a body of at most max_bytes reaches the app whole."""
    declared = await client.post("/count", content=b"x" * size)
    streamed = await client.post("/count", content=chunked(size))

    assert [{"bytes": size}] * 2 == [declared.json(), streamed.json()]


async def test_too_late_to_answer_the_error_goes_to_the_server() -> None:
    """When the app's response has started, the limit's error escapes (the server aborts)."""

    async def respond_then_read(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (await receive()).get("more_body"):
            pass

    transport = httpx.ASGITransport(app=BodyLimit(respond_then_read, max_bytes=LIMIT))
    async with httpx.AsyncClient(transport=transport, base_url="http://plain") as client:
        with pytest.raises(BodyTooLarge):
            await client.post("/", content=chunked(LIMIT + 1))


async def test_the_body_is_not_read_when_the_declared_length_is_too_long() -> None:
    """A declared body over the limit is refused without a receive() call, on raw ASGI."""
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not run")

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body must not be read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-length", b"101")],
    }
    await BodyLimit(app, max_bytes=LIMIT)(scope, receive, send)

    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "payload_too_large"


async def test_other_scopes_pass_through() -> None:
    """Lifespan and websocket scopes reach the app untouched."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def nothing(*_args: Any) -> Any:
        raise AssertionError

    for kind in ("lifespan", "websocket"):
        await BodyLimit(app, max_bytes=0)({"type": kind}, nothing, nothing)

    assert seen == ["lifespan", "websocket"]


def test_a_negative_limit_is_refused() -> None:
    """max_bytes below 0 is a ValueError."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(ValueError, match="max_bytes"):
        BodyLimit(app, max_bytes=-1)
