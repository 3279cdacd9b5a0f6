"""
Immutable records the reference stores return.

Records are frozen, slotted dataclasses: safe to share between threads and to
keep in a cache, detached from any session, and turned into JSON-ready dicts
by :meth:`to_dict` (datetimes as ISO 8601 strings, enums as their values).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, NotRequired, TypedDict

from perfkit.cache import JSONCodec
from perfkit.pagination import Page

from .models import BillStatus, VoteChoice

__all__ = [
    "BillRecord",
    "NewBill",
    "NewUser",
    "NewVote",
    "UserRecord",
    "VoteCounts",
    "VoteRecord",
    "codec",
]


class _Record:
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """
        Return the record as a JSON-ready dict: datetimes in ISO 8601, enums as values.
        """
        return {field.name: _json_ready(getattr(self, field.name)) for field in fields(self)}  # type: ignore[arg-type]


def _json_ready(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return value


@dataclass(frozen=True, slots=True)
class UserRecord(_Record):
    """
    A user, as stored.
    """

    id: int
    username: str
    email: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BillRecord(_Record):
    """
    A bill, as stored.
    """

    id: int
    title: str
    summary: str
    status: BillStatus
    sponsor_id: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class VoteRecord(_Record):
    """
    A vote, as stored.
    """

    id: int
    bill_id: int
    user_id: int
    choice: VoteChoice
    created_at: datetime


@dataclass(frozen=True, slots=True)
class VoteCounts(_Record):
    """
    How a bill's votes split.
    """

    bill_id: int
    yes: int
    no: int
    abstain: int

    @property
    def total(self) -> int:
        """
        All votes cast on the bill.
        """
        return self.yes + self.no + self.abstain

    def to_dict(self) -> dict[str, Any]:
        """
        Return the counts and their total as a JSON-ready dict.
        """
        return {**_Record.to_dict(self), "total": self.total}


class NewUser(TypedDict):
    """
    One item of :meth:`~perfkit.reference.UserStore.create_many`.

    .. versionadded:: 0.2.0
    """

    username: str
    email: str


class NewBill(TypedDict):
    """
    One item of :meth:`~perfkit.reference.BillStore.create_many`.

    .. versionadded:: 0.2.0
    """

    title: str
    sponsor_id: int
    summary: NotRequired[str]
    status: NotRequired[BillStatus | str]


class NewVote(TypedDict):
    """
    One item of :meth:`~perfkit.reference.VoteStore.cast_many`.

    .. versionadded:: 0.2.0
    """

    bill_id: int
    user_id: int
    choice: VoteChoice | str


def codec() -> JSONCodec:
    """
    A :class:`~perfkit.cache.JSONCodec` that round-trips the reference records.

    Give it to a :class:`~perfkit.cache.RedisBackend` that caches the stores.
    """
    return JSONCodec(
        allowed=(UserRecord, BillRecord, VoteRecord, VoteCounts, Page, BillStatus, VoteChoice)
    )
