"""
Opaque, versioned, HMAC-signed keyset cursors.

A cursor is ``kid "." base64url(payload) "." base64url(tag)``: *kid* names the key
that signed it (:mod:`._keys`); the payload is JSON (version, direction, the sort
values of the row it points at, and a fingerprint of the query it belongs to); the tag
is the first 16 bytes of HMAC-SHA256 over ``kid "." payload``. Editing any byte, or
using a cursor with a different query or sort, raises
:class:`~perfkit.errors.InvalidCursor`.
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
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from perfkit.errors import InvalidCursor

from ._keys import CursorKeys

__all__ = ["Cursor", "cursor_kid", "decode_cursor", "encode_cursor"]

VERSION: Final = 2
MAX_CURSOR_LENGTH: Final = 4096
_TAG_BYTES: Final = 16
_MAX_KID: Final = 16

Direction = Literal["next", "prev"]


@dataclass(frozen=True, slots=True)
class Cursor:
    """What a cursor says: which way to go from which sort values."""

    direction: Direction
    values: tuple[Any, ...]


def encode_cursor(cursor: Cursor, *, fingerprint: str, keys: CursorKeys) -> str:
    """Sign and encode *cursor* for the query with *fingerprint*."""
    kid, secret = keys.signing()
    payload = json.dumps(
        {"v": VERSION, "d": cursor.direction[0], "k": [_dump(v) for v in cursor.values],
         "f": fingerprint},
        separators=(",", ":"),
    ).encode()  # fmt: skip
    body = _b64(payload)
    signed = f"{kid}.{body}"
    tag = hmac.new(secret, signed.encode(), hashlib.sha256).digest()[:_TAG_BYTES]
    return f"{signed}.{_b64(tag)}"


def cursor_kid(text: object) -> str | None:
    """The key id a cursor names (unverified), or ``None`` if it names none."""
    if not isinstance(text, str) or len(text) > MAX_CURSOR_LENGTH:
        return None
    kid, dot, _ = text.partition(".")
    return kid if dot and 0 < len(kid) <= _MAX_KID and kid.isalnum() else None


def decode_cursor(text: str, *, fingerprint: str, keys: CursorKeys, width: int) -> Cursor:
    """
    Verify and decode a cursor made by :func:`encode_cursor` for this query.

    Raises:
        InvalidCursor: malformed, tampered with, from another version, from
            another query or sort, or with the wrong number of values.
    """
    if not isinstance(text, str) or len(text) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("the cursor is not a cursor this API issued")
    kid = cursor_kid(text)
    parts = text.split(".")
    if kid is None or len(parts) != 3:
        if len(parts) == 2:
            raise InvalidCursor("the cursor is from an older version of this API; start again")
        raise InvalidCursor("the cursor is malformed")
    try:
        payload, tag = _unb64(parts[1]), _unb64(parts[2])
    except (binascii.Error, ValueError):
        raise InvalidCursor("the cursor is malformed") from None
    secret = keys.verifying(kid)
    if secret is None:
        if keys.per_process:
            raise InvalidCursor(
                "the cursor was signed by another process of this service, and each process "
                "signs with a key of its own (the server's log says how to share one)"
            )
        raise InvalidCursor(
            "the cursor was signed with a key this service does not have: another "
            "service's, or one rotated out since (start again)"
        )
    signed = f"{kid}.{parts[1]}".encode()
    expected = hmac.new(secret, signed, hashlib.sha256).digest()[:_TAG_BYTES]
    if not hmac.compare_digest(tag, expected):
        raise InvalidCursor("the cursor's signature does not match: it was altered")
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
