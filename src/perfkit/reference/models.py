"""
SQLAlchemy 2 models of the reference schema: users, bills and the votes cast on them.

Indexes follow the hot queries (each is checked against the query planner of
SQLite and PostgreSQL by ``tests/test_index_plans.py``):

=================================  ==========================================
query                              index
=================================  ==========================================
user by username / by email        ``ix_users_username``, ``ix_users_email``
                                   (unique)
bills list, newest first           ``ix_bills_created_at_id``
bills list filtered by status      ``ix_bills_status_created_at_id``
vote counts of a bill              ``ix_votes_bill_id_choice`` (covering)
votes of a bill, in order          ``ix_votes_bill_id_id``
votes of a user, in order          ``ix_votes_user_id_id``
one vote per user and bill         ``uq_votes_bill_id_user_id``
=================================  ==========================================
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from perfkit._sqltypes import UTCDateTime

__all__ = ["Base", "Bill", "BillStatus", "User", "Vote", "VoteChoice", "utcnow"]


class BillStatus(enum.StrEnum):
    """
    Where a bill is in its life.
    """

    DRAFT = "draft"
    INTRODUCED = "introduced"
    PASSED = "passed"
    FAILED = "failed"


class VoteChoice(enum.StrEnum):
    """
    What a vote says.
    """

    YES = "yes"
    NO = "no"
    ABSTAIN = "abstain"


def utcnow() -> datetime:
    """
    Return the current time as an aware UTC datetime.
    """
    return datetime.now(UTC)


def _enum(cls: type[enum.StrEnum], name: str) -> sa.Enum:
    # Stored as VARCHAR + CHECK on every database: adding a value later is a
    # constraint change, not a PostgreSQL ALTER TYPE.
    return sa.Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


# BIGINT on PostgreSQL; INTEGER on SQLite, where only "INTEGER PRIMARY KEY"
# aliases the 64-bit rowid.
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    """
    Declarative base of the reference schema.
    """


class User(Base):
    """
    Someone who sponsors bills and casts votes.
    """

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(32))
    email: Mapped[str] = mapped_column(sa.String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        sa.Index("ix_users_username", "username", unique=True),
        sa.Index("ix_users_email", "email", unique=True),
    )


class Bill(Base):
    """
    A proposed law, sponsored by one user.
    """

    __tablename__ = "bills"

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    summary: Mapped[str] = mapped_column(sa.Text, default="")
    status: Mapped[BillStatus] = mapped_column(
        _enum(BillStatus, "bill_status"), default=BillStatus.DRAFT
    )
    sponsor_id: Mapped[int] = mapped_column(_Id, sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        sa.Index("ix_bills_created_at_id", "created_at", "id"),
        sa.Index("ix_bills_status_created_at_id", "status", "created_at", "id"),
    )


class Vote(Base):
    """
    One user's vote on one bill; a user votes at most once per bill.
    """

    __tablename__ = "votes"

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    bill_id: Mapped[int] = mapped_column(_Id, sa.ForeignKey("bills.id"))
    user_id: Mapped[int] = mapped_column(_Id, sa.ForeignKey("users.id"))
    choice: Mapped[VoteChoice] = mapped_column(_enum(VoteChoice, "vote_choice"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        sa.UniqueConstraint("bill_id", "user_id", name="uq_votes_bill_id_user_id"),
        sa.Index("ix_votes_bill_id_choice", "bill_id", "choice"),
        sa.Index("ix_votes_bill_id_id", "bill_id", "id"),
        sa.Index("ix_votes_user_id_id", "user_id", "id"),
    )
