"""The baseline: v0.1.0's checkpoint tables, as the first release made them (``create_all``).

A database v0.1.0 created holds exactly :data:`RELEASED_TABLES` and no version table: the
migrate command stamps it at this revision, then upgrades it. Rendered by autogenerate from
the models of commit c4b2fae (v0.1.0) against an empty database; an empty database built
through this revision equals one v0.1.0 built (tests/integration/test_migrations.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

RELEASED_TABLES = frozenset({"communiques", "idempotency_keys", "known_checkpoints", "outbox"})


def upgrade() -> None:
    """Create v0.1.0's tables."""
    op.create_table(
        "communiques",
        sa.Column(
            "document_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("identifier", sa.String(length=128), nullable=False),
        sa.Column("government", sa.String(length=8), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("ircc_ids", sa.JSON(), nullable=False),
        sa.Column("submitted_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("document_id"),
        sa.UniqueConstraint("identifier"),
        sa.UniqueConstraint("uid"),
    )
    op.create_index(op.f("ix_communiques_government"), "communiques", ["government"], unique=False)
    op.create_table(
        "idempotency_keys",
        sa.Column("principal", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("body_hash", sa.String(length=64), nullable=False),
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("principal", "key"),
    )
    op.create_table(
        "known_checkpoints",
        sa.Column("identifier", sa.String(length=128), nullable=False),
        sa.Column("government", sa.String(length=8), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.Column("name", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("identifier"),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index(op.f("ix_outbox_sent_at"), "outbox", ["sent_at"], unique=False)


def downgrade() -> None:
    """Drop them (and every row)."""
    op.drop_index(op.f("ix_outbox_sent_at"), table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("known_checkpoints")
    op.drop_table("idempotency_keys")
    op.drop_index(op.f("ix_communiques_government"), table_name="communiques")
    op.drop_table("communiques")
