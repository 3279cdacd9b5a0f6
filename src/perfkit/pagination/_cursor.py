"""
Opaque, versioned, HMAC-signed keyset cursors.

A cursor is ``base64url(payload) "." base64url(tag)``: the payload is JSON
(version, direction, the sort values of the row it points at, and a
fingerprint of the query it belongs to); the tag is the first 16 bytes of
HMAC-SHA256 over the payload. Editing any byte, or using a cursor with a
different query or sort, raises :class:`~perfkit.errors.InvalidCursor`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import enum
import hashlib
import hmac
import json
import logging
import os
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from perfkit.errors import InvalidCursor

__all__ = ["Cursor", "decode_cursor", "encode_cursor", "resolve_secret"]

log = logging.getLogger("perfkit.pagination")

VERSION: Final = 1
MAX_CURSOR_LENGTH: Final = 4096
_TAG_BYTES: Final = 16
_PROCESS_SECRET: Final = secrets.token_bytes(32)
_warned = False
_mismatch_warned = False

Direction = Literal["next", "prev"]


@dataclass(frozen=True, slots=True)
class Cursor:
    """What a cursor says: which way to go from which sort values."""

    direction: Direction
    values: tuple[Any, ...]


def resolve_secret(secret: str | bytes | None) -> bytes:
    """
    The signing key: *secret*, else ``PERFKIT_CURSOR_SECRET``, else a per-process key.

    A per-process key makes cursors invalid in other processes and after a
    restart; it is logged once. Set the variable (or pass *secret*) when more
    than one process serves the same API.
    """
    global _warned  # noqa: PLW0603 - warn once per process
    if secret is None:
        secret = os.environ.get("PERFKIT_CURSOR_SECRET")
    if secret is None or secret == "":
        if not _warned:
            _warned = True
            log.warning(
                "no cursor secret given and PERFKIT_CURSOR_SECRET is unset: cursors are "
                "signed with a per-process key and fail in other processes"
            )
        return _PROCESS_SECRET
    return secret.encode() if isinstance(secret, str) else secret


def _warn_process_key_mismatch() -> None:
    """Say once, on the server, the likely cause of a refused cursor: a per-process key."""
    global _mismatch_warned  # noqa: PLW0603 - warn once per process
    if not _mismatch_warned:
        _mismatch_warned = True
        log.warning(
            "a keyset cursor failed its signature check, and this process signs cursors "
            "with a random key of its own (no cursor secret given, PERFKIT_CURSOR_SECRET "
            "unset): with several workers or instances each refuses the others' cursors; "
            "give every process the same PERFKIT_CURSOR_SECRET"
        )


def encode_cursor(cursor: Cursor, *, fingerprint: str, secret: bytes) -> str:
    """Sign and encode *cursor* for the query with *fingerprint*."""
    payload = json.dumps(
        {"v": VERSION, "d": cursor.direction[0], "k": [_dump(v) for v in cursor.values],
         "f": fingerprint},
        separators=(",", ":"),
    ).encode()  # fmt: skip
    tag = hmac.new(secret, payload, hashlib.sha256).digest()[:_TAG_BYTES]
    return _b64(payload) + "." + _b64(tag)


def decode_cursor(text: str, *, fingerprint: str, secret: bytes, width: int) -> Cursor:
    """
    Verify and decode a cursor made by :func:`encode_cursor` for this query.

    Raises:
        InvalidCursor: malformed, tampered with, from another version, from
            another query or sort, or with the wrong number of values.
    """
    if not isinstance(text, str) or len(text) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("the cursor is not a cursor this API issued")
    body, dot, signature = text.partition(".")
    try:
        payload, tag = _unb64(body), _unb64(signature)
    except (binascii.Error, ValueError):
        raise InvalidCursor("the cursor is malformed") from None
    expected = hmac.new(secret, payload, hashlib.sha256).digest()[:_TAG_BYTES]
    if not dot or not hmac.compare_digest(tag, expected):
        if secret is _PROCESS_SECRET:
            _warn_process_key_mismatch()
        raise InvalidCursor(
            "the cursor's signature does not match: it was altered, or signed with another "
            "key (by another process of this service, or before its key changed)"
        )
    try:
        data = json.loads(payload)
        version, direction, values, scope = data["v"], data["d"], data["k"], data["f"]
    except (ValueError, KeyError, TypeError):
        raise InvalidCursor("the cursor is malformed") from None
    if version != VERSION:
        raise InvalidCursor(f"cursor version {version!r} is not supported; start again")
    if scope != fingerprint:
        raise InvalidCursor("the cursor belongs to another query or sort order")
    if direction not in ("n", "p") or not isinstance(values, list) or len(values) != width:
        raise InvalidCursor("the cursor is malformed")
    try:
        loaded = tuple(_load(v) for v in values)
    except (ValueError, TypeError, KeyError, decimal.InvalidOperation):
        raise InvalidCursor("the cursor is malformed") from None
    return Cursor("next" if direction == "n" else "prev", loaded)


def fingerprint_of(parts: Sequence[str]) -> str:
    """A short digest naming a query and its sort."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _dump(value: Any) -> Any:  # noqa: PLR0911 - one branch per type
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return {"f": repr(value)}
    if isinstance(value, dt.datetime):
        return {"dt": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"time": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"dec": str(value)}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    msg = f"cannot put a {type(value).__qualname__} sort value in a cursor"
    raise TypeError(msg)


def _load(value: Any) -> Any:  # noqa: PLR0911 - one branch per type
    if value is None or isinstance(value, bool | int | str):
        return value
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(value)
    ((kind, text),) = value.items()
    if not isinstance(text, str):
        raise TypeError(text)
    if kind == "f":
        return float(text)
    if kind == "dt":
        return dt.datetime.fromisoformat(text)
    if kind == "date":
        return dt.date.fromisoformat(text)
    if kind == "time":
        return dt.time.fromisoformat(text)
    if kind == "dec":
        return decimal.Decimal(text)
    if kind == "uuid":
        return uuid.UUID(text)
    raise ValueError(kind)
