"""
The reference store's schema: users, bills and the votes cast on them.

Made with ``IF NOT EXISTS``: a database that ``open_stores`` made before migrations
existed is adopted as it is.

Revision ID: perfkit_reference_0001
Branch: perfkit_reference
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "perfkit_reference_0001"
down_revision = None
branch_labels = ("perfkit_reference",)
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)


def _enum(name: str, *values: str) -> sa.Enum:
    # VARCHAR + CHECK on every database, as the models declare it.
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def upgrade() -> None:
    """Create the three tables and their indexes where they are missing."""
    op.create_table(
        "users",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("username", sa.String(32), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        if_not_exists=True,
    )
    op.create_index("ix_users_username", "users", ["username"], unique=True, if_not_exists=True)
    op.create_index("ix_users_email", "users", ["email"], unique=True, if_not_exists=True)
    op.create_table(
        "bills",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column(
            "status",
            _enum("bill_status", "draft", "introduced", "passed", "failed"),
            nullable=False,
        ),
        sa.Column("sponsor_id", _ID, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        if_not_exists=True,
    )
    op.create_index("ix_bills_created_at_id", "bills", ["created_at", "id"], if_not_exists=True)
    op.create_index(
        "ix_bills_status_created_at_id",
        "bills",
        ["status", "created_at", "id"],
        if_not_exists=True,
    )
    op.create_table(
        "votes",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("bill_id", _ID, sa.ForeignKey("bills.id"), nullable=False),
        sa.Column("user_id", _ID, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("choice", _enum("vote_choice", "yes", "no", "abstain"), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.UniqueConstraint("bill_id", "user_id", name="uq_votes_bill_id_user_id"),
        if_not_exists=True,
    )
    op.create_index("ix_votes_bill_id_choice", "votes", ["bill_id", "choice"], if_not_exists=True)
    op.create_index("ix_votes_bill_id_id", "votes", ["bill_id", "id"], if_not_exists=True)
    op.create_index("ix_votes_user_id_id", "votes", ["user_id", "id"], if_not_exists=True)


def downgrade() -> None:
    """Drop the three tables (with what they hold)."""
    op.drop_table("votes")
    op.drop_table("bills")
    op.drop_table("users")
