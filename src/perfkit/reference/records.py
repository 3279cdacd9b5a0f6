"""
Immutable records the reference stores return.

Records are frozen, slotted dataclasses: safe to share between threads and to
keep in a cache, detached from any session, and turned into JSON-ready dicts
by :meth:`to_dict` (datetimes as ISO 8601 strings, enums as their values).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .models import BillStatus, VoteChoice

__all__ = ["BillRecord", "UserRecord", "VoteCounts", "VoteRecord"]


@dataclass(frozen=True, slots=True)
class UserRecord:
    """
    A user, as stored.
    """

    id: int
    username: str
    email: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """
        Return the record as a JSON-ready dict.
        """
        return {
            "id": self.id,
            "username": self.username,
            "email": self.email,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class BillRecord:
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

    def to_dict(self) -> dict[str, Any]:
        """
        Return the record as a JSON-ready dict.
        """
        return {
            "id": self.id,
            "title": self.title,
            "summary": self.summary,
            "status": self.status.value,
            "sponsor_id": self.sponsor_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class VoteRecord:
    """
    A vote, as stored.
    """

    id: int
    bill_id: int
    user_id: int
    choice: VoteChoice
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """
        Return the record as a JSON-ready dict.
        """
        return {
            "id": self.id,
            "bill_id": self.bill_id,
            "user_id": self.user_id,
            "choice": self.choice.value,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class VoteCounts:
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
        Return the counts as a JSON-ready dict.
        """
        return {
            "bill_id": self.bill_id,
            "yes": self.yes,
            "no": self.no,
            "abstain": self.abstain,
            "total": self.total,
        }
