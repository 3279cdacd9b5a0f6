"""
Entity tags and conditional requests (RFC 9110 section 13), without I/O.

An entity tag here is a digest of the response body: the same bytes give the
same tag in every process, on every worker, after a restart or an eviction,
so a client's ``If-None-Match`` keeps matching for as long as the content is
unchanged, and changes the moment the content does. (A tag made from Python's
``hash()`` differs per process; one made from the cache entry's identity
changes on every refill even when the body did not.)
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Final

__all__ = ["etag_of", "http_date", "none_match", "not_modified_since", "parse_http_date", "weak"]

_DIGEST_BYTES: Final = 16


def etag_of(body: bytes) -> bytes:
    """
    The strong entity tag of *body*: ``"<128-bit BLAKE2b digest, base64url>"``.
    """
    digest = hashlib.blake2b(body, digest_size=_DIGEST_BYTES).digest()
    return b'"' + base64.urlsafe_b64encode(digest).rstrip(b"=") + b'"'


def weak(etag: bytes) -> bytes:
    """
    The weak form of *etag* (for a compressed representation of the same content).
    """
    return etag if etag.startswith(b"W/") else b"W/" + etag


def _opaque(etag: bytes) -> bytes:
    return etag[2:] if etag.startswith(b"W/") else etag


def none_match(header: bytes, etag: bytes) -> bool:
    """
    Whether an ``If-None-Match`` *header* matches *etag* (weak comparison, ``*`` included).
    """
    header = header.strip()
    if header == b"*":
        return True
    wanted = _opaque(etag)
    return any(_opaque(candidate.strip()) == wanted for candidate in header.split(b","))


def http_date(moment: datetime) -> bytes:
    """
    *moment* as an IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``); naive means UTC.
    """
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return format_datetime(utc.replace(microsecond=0), usegmt=True).encode("ascii")


def parse_http_date(value: bytes) -> float | None:
    """
    An HTTP date as a POSIX timestamp, or ``None`` when it is not one.
    """
    try:
        parsed = parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # asctime and "-0000" dates: HTTP dates are GMT
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def not_modified_since(header: bytes, last_modified: float) -> bool:
    """
    Whether an ``If-Modified-Since`` *header* means the client's copy is current.

    An unparseable date is ignored (RFC 9110 section 13.1.3).
    """
    since = parse_http_date(header)
    return since is not None and int(last_modified) <= since
