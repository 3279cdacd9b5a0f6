"""
Input rules of the reference stores, raising :class:`~perfkit.errors.InvalidInput`.
"""

from __future__ import annotations

import enum
import re
from typing import Final, TypeVar

from perfkit.errors import InvalidInput

MAX_ID: Final = 2**63 - 1
USERNAME_RE: Final = re.compile(r"[a-z0-9_][a-z0-9_.-]{2,31}")
EMAIL_RE: Final = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
MAX_EMAIL: Final = 254
MAX_TITLE: Final = 200
MAX_SUMMARY: Final = 10_000

_E = TypeVar("_E", bound=enum.StrEnum)


def record_id(field: str, value: object) -> int:
    """
    Return *value* if it is a valid row id (an int from 1 to 2⁶³-1).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, f"must be an integer, got {type(value).__name__}")
    if not 1 <= value <= MAX_ID:
        raise InvalidInput(field, f"must be from 1 to {MAX_ID}, got {value}")
    return value


def text(field: str, value: object, *, max_length: int, allow_empty: bool = False) -> str:
    """
    Return *value* if it is storable text of at most *max_length* characters.

    Refuses NUL characters (PostgreSQL cannot store them) and lone surrogates
    (not encodable as UTF-8), so bad input fails here, not in the database.
    """
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidInput(field, "must not be empty")
    if len(value) > max_length:
        raise InvalidInput(field, f"must be at most {max_length} characters, got {len(value)}")
    if "\x00" in value:
        raise InvalidInput(field, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, "must be valid Unicode text") from None
    return value


def username(value: object) -> str:
    """
    Return *value* lower-cased if it is a valid username.

    Usernames are 3-32 characters of ``a-z``, digits, ``_``, ``.`` and ``-``,
    not starting with ``.`` or ``-``; they compare case-insensitively.
    """
    name = text("username", value, max_length=32).lower()
    if not USERNAME_RE.fullmatch(name):
        raise InvalidInput(
            "username",
            "must be 3-32 characters of a-z, 0-9, '_', '.' or '-', not starting with '.' or '-'",
        )
    return name


def email(value: object) -> str:
    """
    Return *value* lower-cased if it looks like an email address.
    """
    address = text("email", value, max_length=MAX_EMAIL).lower()
    if not EMAIL_RE.fullmatch(address):
        raise InvalidInput("email", "is not an email address")
    return address


def choice(field: str, value: object, cls: type[_E]) -> _E:
    """
    Return the member of *cls* named by *value*.
    """
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        try:
            return cls(value)
        except ValueError:
            pass
    allowed = ", ".join(member.value for member in cls)
    raise InvalidInput(field, f"must be one of {allowed}")
