"""
Where a webhook may be sent: an http(s) URL whose host resolves only to public addresses.

A webhook URL comes from a user, and the server that sends to it sits inside a network
that has databases, caches and cloud metadata on private addresses. So a URL is checked
when it is subscribed and again, resolved afresh, before every attempt (a name can be
pointed somewhere else later), and the attempt then connects to the address that was
checked, not to whatever a second lookup returns (DNS rebinding). Pure logic but for the
resolver, which is passed in.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult, urlsplit

from perfkit.errors import InvalidInput

__all__ = ["MAX_URL", "Resolver", "Target", "check_url", "system_resolver"]

MAX_URL: Final = 2_000
_SCHEMES: Final = {"http": 80, "https": 443}

Resolver = Callable[[str, int], Sequence[str]]
"""``resolve(host, port)``: the IP addresses a host name stands for."""


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses :func:`socket.getaddrinfo` gives for *host* (TCP), in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class Target:
    """
    A checked webhook URL: where to connect, and what to call the host there.

    Attributes:
        url: The URL as given.
        host: The host name, in ASCII (IDNA): for TLS's SNI and certificate check.
        address: The IP address checked, and the one to connect to.
        connect_url: The URL with its host replaced by *address*.
        host_header: The ``Host`` header: *host*, and the port if the URL gave one.
    """

    url: str
    host: str
    address: str
    connect_url: str
    host_header: str


def _refuse(message: str) -> InvalidInput:
    return InvalidInput("url", message)


# IPv6 ranges that carry an IPv4 address, or are not to be routed to, which Python's
# is_global still calls global.
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")  # well-known prefix: the IPv4 in the tail
_REFUSED_V6: Final = (
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated)
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated (SIIT)
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # local-use NAT64
    ipaddress.IPv6Network("fec0::/10"),  # site-local (deprecated)
)


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in _REFUSED_V6):
            return False
        embedded = address.ipv4_mapped or address.sixtofour  # ::ffff:a.b.c.d, 2002:ab:cd::
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return _public(embedded)
    return address.is_global and not address.is_multicast


def _parse(url: object) -> tuple[SplitResult, str, int]:
    if type(url) is not str or not url or len(url) > MAX_URL:
        msg = f"a webhook URL is a string of 1 to {MAX_URL:,} characters"
        raise _refuse(msg)
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise _refuse("a webhook URL has no spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        given_port = parts.port
    except ValueError:  # an unclosed [ or a bracketed name, a port that is not a number
        raise _refuse("a webhook URL's host and port are malformed") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise _refuse("a webhook URL is http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise _refuse("a webhook URL carries no user name or password (sign with the secret)")
    if parts.fragment:
        raise _refuse("a webhook URL has no #fragment")
    if not host:
        raise _refuse("a webhook URL names a host")
    if given_port == 0:
        raise _refuse("a webhook URL's port is a number from 1 to 65535")
    try:  # an internationalised name as DNS, TLS and the Host header know it
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise _refuse("a webhook URL's host name is not a valid domain name") from None
    return parts, host, given_port or _SCHEMES[scheme]


def check_url(
    url: str,
    *,
    allow_private: bool = False,
    resolve: Resolver = system_resolver,
) -> Target:
    """
    Check a webhook URL and choose the address to send to (the first that *resolve* gives).

    The URL must be ``http`` or ``https``, name a host, and carry no
    credentials or fragment. Its host (a name is resolved with *resolve*)
    must resolve; unless *allow_private*, to public unicast addresses only:
    loopback, private (RFC 1918, unique-local), link-local (cloud metadata
    at 169.254.169.254 included), shared, reserved, multicast and unspecified
    addresses are refused, as is a name with any such address among its
    addresses, or one that does not resolve.

    Raises:
        InvalidInput: the URL is refused (``field`` is ``"url"``).

    .. versionadded:: 0.2.0
    """
    parts, host, port = _parse(url)
    try:
        literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            found = resolve(host, port)
        except (OSError, UnicodeError):
            found = []
        addresses = []
        for text in found:
            try:
                addresses.append(ipaddress.ip_address(text.split("%", 1)[0]))
            except ValueError:
                continue
        if not addresses:
            raise _refuse(f"the host {host!r} does not resolve")
    refused = [] if allow_private else [str(a) for a in addresses if not _public(a)]
    if refused:
        msg = (
            f"the host {host!r} is or resolves to a non-public address ({', '.join(refused)}): "
            "webhooks go to public addresses only"
        )
        raise _refuse(msg)
    chosen = addresses[0]
    suffix = "" if parts.port is None else f":{parts.port}"
    shown = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    named = f"[{host}]" if ":" in host else host
    connect_url = parts._replace(netloc=shown + suffix).geturl()
    return Target(url, host, str(chosen), connect_url, named + suffix)
