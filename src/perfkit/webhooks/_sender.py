"""
The HTTP side of an attempt: one signed POST with one deadline for all of it.

httpx's timeouts apply to each phase (connect, each write, each read), so a receiver that
trickles its answer a byte at a time could hold an attempt past its lease, and a second
attempt would start. Here the whole attempt (the name's lookup and check, connecting,
sending, the status line and headers, the start of an error body) runs as one task on an
event loop of the sender's own, under one ``asyncio.timeout``: cancelled at the deadline,
it closes its connection. Connections are not kept alive: a pooled connection is reused
by address, and one opened (and its certificate checked) for one host name must not carry
another's signed payload.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import threading
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import httpx

from perfkit.errors import InvalidInput

from ._targets import Resolver, Target, check_url

__all__ = ["Answer", "Sender"]

SNIPPET: Final = 200
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Answer:
    """What a receiver answered (status None: no answer, and *error* says why)."""

    status: int | None
    retry_after: str | None = None
    error: str | None = None


class Sender:
    """POSTs on one event loop thread of its own, started on first use (after a fork too)."""

    def __init__(
        self,
        *,
        timeout: float,
        allow_private: bool,
        resolve: Resolver,
        verify: ssl.SSLContext | str | bool,
    ) -> None:
        self.timeout = timeout
        self._allow_private = allow_private
        self._resolve = resolve
        self._verify = verify
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST *body* to *url* (checked again first), within the timeout in all."""
        return self._run(self._post(url, body, dict(headers)))

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        thread = self._thread
        if loop is None or thread is None or not thread.is_alive():
            loop = self._start()
        return asyncio.run_coroutine_threadsafe(work, loop).result()

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None and self._thread is not None and self._thread.is_alive():
                return self._loop
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=run, name="perfkit-webhook-sender", daemon=True)
            self._client = None  # one made on a loop before a fork is not this loop's
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            return loop

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._attempt(url, body, headers)
        except TimeoutError:
            return Answer(None, error=f"timed out (after {self.timeout:g} s)")

    async def _attempt(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        def check() -> Target:
            return check_url(url, allow_private=self._allow_private, resolve=self._resolve)

        try:
            if _literal(url):  # nothing to look up: no thread hop
                target = check()
            else:  # the lookup runs on a thread (getaddrinfo blocks), within the deadline
                target = await asyncio.get_running_loop().run_in_executor(None, check)
        except InvalidInput as refused:
            return Answer(None, error=f"refused: {refused}")
        # Connect to the address checked, not to what a second lookup says (DNS rebinding):
        # the URL's host goes in the Host header and in TLS (SNI and the certificate check).
        headers["host"] = target.host_header
        client = self._client
        if client is None:
            client = self._client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                verify=self._verify,
                limits=httpx.Limits(max_keepalive_connections=0),
                timeout=self.timeout,
            )
        try:
            request = client.build_request(
                "POST",
                target.connect_url,
                content=body,
                headers=headers,
                extensions={"sni_hostname": target.host},
            )
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                status = response.status_code
                if 200 <= status < 300:
                    return Answer(status)
                snippet = await _read_some(response)
                reason = response.reason_phrase
                retry_after = response.headers.get("retry-after")
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            return Answer(None, error=f"timed out (after {self.timeout:g} s)")
        except Exception as exc:  # any failure to send is a failed attempt, never a stuck one
            return Answer(None, error=f"{type(exc).__name__}: {exc}")
        error = f"{status} {reason}".strip() + (f": {snippet}" if snippet else "")
        return Answer(status, retry_after, error)

    def close(self) -> None:
        """Close the client and stop the loop's thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            client = self._client
            if client is not None:
                asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(self.timeout)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(self.timeout)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = self._client = None


async def _read_some(response: httpx.Response) -> str:
    """The start of an error answer's body, for last_error (the rest is not read)."""
    taken = b""
    try:
        async for chunk in response.aiter_raw():
            taken += chunk
            if len(taken) >= SNIPPET:
                break
    except httpx.HTTPError:
        pass
    return taken[:SNIPPET].decode("utf-8", "replace").strip()


def _literal(url: str) -> bool:
    """Whether *url*'s host is an IP address (a malformed URL is checked, and refused, too)."""
    try:
        host = urlsplit(url).hostname
        ipaddress.ip_address(host or "")
    except ValueError:
        return False
    return True
