"""
The keys that sign keyset cursors, shared by every worker and instance.

One row per period (a day): the first process that needs a key inserts it, the others
read it (``perfkit.pagination.SharedCursorKeys``).

Revision ID: perfkit_0002
Branch: perfkit
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "perfkit_0002"
down_revision = "perfkit_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the key table where it is missing."""
    op.create_table(
        "perfkit_cursor_keys",
        sa.Column("kid", sa.String(16), primary_key=True),
        sa.Column("secret", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    """Drop it: cursors are then signed per process until it is back."""
    op.drop_table("perfkit_cursor_keys")
