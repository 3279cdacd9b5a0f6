"""
perfkit's own tables: the transactional outbox and the webhook endpoints and deliveries.

Made with ``IF NOT EXISTS``: a database whose tables ``Outbox.create`` and
``Webhooks.create`` made before migrations existed is adopted as it is.

Revision ID: perfkit_0001
Branch: perfkit
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "perfkit_0001"
down_revision = None
branch_labels = ("perfkit",)
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the outbox and the webhook tables where they are missing."""
    op.create_table(
        "perfkit_outbox",
        sa.Column("position", _ID, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "perfkit_webhook_endpoints",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("url", sa.String(2_000), nullable=False),
        sa.Column("secrets", sa.Text(), nullable=False),
        sa.Column("types", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("disabled_reason", sa.String(500), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "perfkit_webhook_deliveries",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column(
            "endpoint_id",
            _ID,
            sa.ForeignKey("perfkit_webhook_endpoints.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TIME, nullable=False),
        sa.Column("lease_until", _TIME, nullable=True),
        sa.Column("claim_token", sa.String(32), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("last_attempt_at", _TIME, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("delivered_at", _TIME, nullable=True),
        sa.UniqueConstraint("event_id", "endpoint_id"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_perfkit_webhook_deliveries_due",
        "perfkit_webhook_deliveries",
        ["status", "next_attempt_at"],
        if_not_exists=True,
    )
    op.create_index(
        "ix_perfkit_webhook_deliveries_endpoint",
        "perfkit_webhook_deliveries",
        ["endpoint_id", "id"],
        if_not_exists=True,
    )


def downgrade() -> None:
    """Drop them (with what they hold)."""
    op.drop_table("perfkit_webhook_deliveries")
    op.drop_table("perfkit_webhook_endpoints")
    op.drop_table("perfkit_outbox")
