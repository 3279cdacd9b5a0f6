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
import concurrent.futures
import contextlib
import ipaddress
import os
import ssl
import threading
import weakref
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import httpx

from perfkit.errors import InvalidInput

from ._targets import Resolver, Target, check_url

__all__ = ["Answer", "Sender"]

SNIPPET: Final = 200
LOOKUP_THREADS: Final = 16


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
        self._forget()
        _SENDERS.add(self)

    def _forget(self) -> None:
        """No loop, thread, client or lookup pool (at first, and in a forked child)."""
        self._lock = threading.Lock()
        self._running: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None
        self._client: httpx.AsyncClient | None = None
        self._lookups: ThreadPoolExecutor | None = None

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST *body* to *url* (checked again first), within the timeout in all."""
        loop = self._loop()
        future = asyncio.run_coroutine_threadsafe(self._post(url, body, dict(headers)), loop)
        try:
            return future.result(self.timeout + 5)  # the task ends at its deadline; a guard
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            future.cancel()
            return Answer(None, error=f"timed out (after {self.timeout:g} s)")

    def _loop(self) -> asyncio.AbstractEventLoop:
        running = self._running
        if running is not None and running[1].is_alive():
            return running[0]
        with self._lock:
            running = self._running
            if running is not None and running[1].is_alive():
                return running[0]
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=run, name="perfkit-webhook-sender", daemon=True)
            self._client = None  # made on another loop
            thread.start()
            ready.wait()
            self._running = (loop, thread)  # one attribute: never a loop of one start and
            return loop  # the thread of another

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        try:
            async with asyncio.timeout(self.timeout) as scope:
                return await self._attempt(url, body, headers, scope)
        except TimeoutError:
            return Answer(None, error=f"timed out (after {self.timeout:g} s)")

    async def _attempt(
        self, url: str, body: bytes, headers: dict[str, str], scope: asyncio.Timeout
    ) -> Answer:
        def check() -> Target:
            return check_url(url, allow_private=self._allow_private, resolve=self._resolve)

        try:
            if _literal(url):  # nothing to look up: no thread hop
                target = check()
            else:  # the lookup runs on a thread (getaddrinfo blocks), within the deadline
                if self._lookups is None:  # its own threads: a slow DNS server fills them,
                    self._lookups = ThreadPoolExecutor(  # not the loop's default pool
                        LOOKUP_THREADS, thread_name_prefix="perfkit-webhook-lookup"
                    )
                target = await asyncio.get_running_loop().run_in_executor(self._lookups, check)
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
                reason = response.reason_phrase
                retry_after = response.headers.get("retry-after")
                # The start of the body, for last_error, within what is left of the deadline
                # (a body that stalls must not lose the status: a 410 or a Retry-After).
                when = scope.when()
                left = 0.0 if when is None else when - asyncio.get_running_loop().time() - 0.05
                snippet = ""
                if left > 0:
                    try:
                        async with asyncio.timeout(min(left, 1.0)):
                            snippet = await _read_some(response)
                    except TimeoutError:
                        snippet = "(the body did not come in time)"
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            return Answer(None, error=f"timed out (after {self.timeout:g} s)")
        except Exception as exc:  # any failure to send is a failed attempt, never a stuck one
            return Answer(None, error=f"{type(exc).__name__}: {exc}")
        error = f"{status} {reason}".strip() + (f": {snippet}" if snippet else "")
        return Answer(status, retry_after, error)

    def close(self) -> None:
        """Cancel what is under way, close the client, and stop the loop's thread."""
        running, self._running = self._running, None
        lookups, self._lookups = self._lookups, None
        if lookups is not None:
            lookups.shutdown(wait=False, cancel_futures=True)
        if running is None:
            return
        loop, thread = running
        if thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(self.timeout)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(self.timeout)
        if not thread.is_alive():
            loop.close()

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()  # a post() waiting on a lookup ends, as timed out
        await asyncio.gather(*tasks, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


_SENDERS: weakref.WeakSet[Sender] = weakref.WeakSet()


def _after_fork() -> None:
    # The child has the parent's objects but not its threads: start afresh on first use.
    for sender in list(_SENDERS):
        sender._forget()


os.register_at_fork(after_in_child=_after_fork)


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
