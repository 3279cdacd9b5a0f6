"""
:class:`BodyLimit`: refuse request bodies over a size with 413, before the app buffers them.
"""

from __future__ import annotations

from perfkit.errors import BodyTooLarge

from ._asgi import ASGIApp, Message, Receive, Scope, Send, header_value
from ._envelope import send_error_for

__all__ = ["BodyLimit"]


class BodyLimit:
    """
    Pure ASGI middleware that answers 413 with the JSON error envelope to bodies over *max_bytes*.

    A declared ``Content-Length`` over the limit is refused up front, without
    reading a byte of the body. A body sent without one (chunked) is counted
    as the application reads it: the read that crosses the limit raises
    :class:`~perfkit.errors.BodyTooLarge`, and whatever the application then
    answers, or lets escape, becomes the 413 (unless its response had already
    started). So it works the same in a plain Starlette app, in FastAPI (which
    turns errors from reading the body into a 400 of its own) and in any other
    ASGI framework.

    Args:
        app: The ASGI application to protect.
        max_bytes: The largest body accepted, in bytes.

    Example::

        app = Starlette(routes=routes, middleware=[Middleware(BodyLimit, max_bytes=64 * 1024)])

    .. versionadded:: 0.2.0
    """

    __slots__ = ("app", "max_bytes")

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be at least 0, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header_value(scope.get("headers", ()), b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error_for(send, BodyTooLarge(self.max_bytes))
            return

        received = 0
        tripped: BodyTooLarge | None = None
        answer = "none"  # then "app" (the app's response goes out) or "ours" (the 413 went out)

        async def limited_receive() -> Message:
            nonlocal received, tripped
            if tripped is not None:
                raise tripped
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    tripped = BodyTooLarge(self.max_bytes)
                    raise tripped
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answer
            if answer == "ours":
                return  # the rest of the app's answer to a body already refused
            if answer == "none" and message["type"] == "http.response.start":
                if tripped is not None:
                    # Whatever the app made of the cut-off body (FastAPI: a 400), it is a 413.
                    answer = "ours"
                    await send_error_for(send, tripped)
                    return
                answer = "app"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge as exc:
            if exc is not tripped or answer == "app":
                raise  # another limiter's, or too late to answer: the server drops the connection
            if answer == "none":
                answer = "ours"
                await send_error_for(send, exc)
