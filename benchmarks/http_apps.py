"""
The ASGI apps the server benchmarks serve (``benchmarks/servers.py``).

* ``raw``: a bare ASGI app answering every request with the same prebuilt
  JSON body (a bill, 320 bytes, as ``GET /bills/{id}`` returns it): the
  server's own cost, with next to no application code;
* ``hello``: FastAPI, ``GET /hello`` returning ``{"hello": "world"}`` from a
  sync route (run in the thread pool, as the example API's routes are);
* ``hello_async``: the same route as a coroutine (no thread pool).

Serve them with ``benchmarks/`` on ``sys.path``, e.g.
``uvicorn http_apps:raw``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

BILL = (
    b'{"id":4242,"title":"Clean Water Infrastructure Modernization Act of 2026 (No. 4242)",'
    b'"summary":"A bill to provide for clean water infrastructure modernization, and for other '
    b'purposes.","status":"introduced","sponsor_id":317,'
    b'"created_at":"2026-11-21T09:30:15.250000+00:00",'
    b'"updated_at":"2026-11-22T22:30:15.250001+00:00"}'
)
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BILL)).encode())]


async def raw(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer every HTTP request with :data:`BILL`; accept the lifespan protocol."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    # A GET has no body to read.
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BILL})


hello = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@hello.get("/hello")
def say_hello() -> dict[str, str]:
    return {"hello": "world"}


hello_async = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@hello_async.get("/hello")
async def say_hello_async() -> dict[str, str]:
    return {"hello": "world"}


_FILE_BODY: list[bytes] = []


async def raw_file(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Like :func:`raw`, with the body read once from the file ``PERFKIT_RAW_BODY`` names."""
    if scope["type"] == "lifespan":
        await raw(scope, receive, send)
        return
    if not _FILE_BODY:
        import os  # noqa: PLC0415

        with open(os.environ["PERFKIT_RAW_BODY"], "rb") as file:
            _FILE_BODY.append(file.read())
    body = _FILE_BODY[0]
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
