"""The baseline: v0.1.0's notifier tables, as the first release made them (``create_all``).

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

RELEASED_TABLES = frozenset({"deliveries", "directory", "irccs", "outbox", "processed_events"})


def upgrade() -> None:
    """Create v0.1.0's tables."""
    op.create_table(
        "deliveries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=4), nullable=False),
        sa.Column("mail_subject", sa.Text(), nullable=False),
        sa.Column("text_body", sa.Text(), nullable=False),
        sa.Column("html_body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id", "recipient", name="uq_delivery"),
    )
    op.create_index(
        op.f("ix_deliveries_next_attempt_at"), "deliveries", ["next_attempt_at"], unique=False
    )
    op.create_index(op.f("ix_deliveries_status"), "deliveries", ["status"], unique=False)
    op.create_index(op.f("ix_deliveries_subject"), "deliveries", ["subject"], unique=False)
    op.create_table(
        "directory",
        sa.Column("identifier", sa.String(length=128), nullable=False),
        sa.Column("schema_name", sa.String(length=64), nullable=False),
        sa.Column("government", sa.String(length=8), nullable=True),
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("identifier"),
    )
    op.create_index(op.f("ix_directory_government"), "directory", ["government"], unique=False)
    op.create_table(
        "irccs",
        sa.Column("identifier", sa.String(length=128), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("government", sa.String(length=8), nullable=False),
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("expiry_notice_sent", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("identifier"),
    )
    op.create_index(op.f("ix_irccs_document_id"), "irccs", ["document_id"], unique=False)
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
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )


def downgrade() -> None:
    """Drop them (and every row)."""
    op.drop_table("processed_events")
    op.drop_index(op.f("ix_outbox_sent_at"), table_name="outbox")
    op.drop_table("outbox")
    op.drop_index(op.f("ix_irccs_document_id"), table_name="irccs")
    op.drop_table("irccs")
    op.drop_index(op.f("ix_directory_government"), table_name="directory")
    op.drop_table("directory")
    op.drop_index(op.f("ix_deliveries_subject"), table_name="deliveries")
    op.drop_index(op.f("ix_deliveries_status"), table_name="deliveries")
    op.drop_index(op.f("ix_deliveries_next_attempt_at"), table_name="deliveries")
    op.drop_table("deliveries")
