"""
A reference bills/users/votes store built from perfkit's parts.

It is the realistic schema perfkit's wrappers are proven on: it backs the
example API in ``examples/bill_api`` and is what perfkit's own tests and
benchmarks run on.

Example::

    from perfkit.reference import open_stores

    with open_stores("sqlite:///votes.db") as stores:
        stores.votes.cast(bill_id=1, user_id=2, choice="yes")
"""

from __future__ import annotations

from .models import Base, Bill, BillStatus, User, Vote, VoteChoice
from .records import (
    BillRecord,
    NewBill,
    NewUser,
    NewVote,
    UserRecord,
    VoteCounts,
    VoteRecord,
    codec,
)
from .seed import SeedSummary, seed
from .stores import BillStore, Stores, UserStore, VoteStore, open_stores

__all__ = [
    "Base",
    "Bill",
    "BillRecord",
    "BillStatus",
    "BillStore",
    "NewBill",
    "NewUser",
    "NewVote",
    "SeedSummary",
    "Stores",
    "User",
    "UserRecord",
    "UserStore",
    "Vote",
    "VoteChoice",
    "VoteCounts",
    "VoteRecord",
    "VoteStore",
    "codec",
    "open_stores",
    "seed",
]
