"""The baseline: v0.1.0's monitor tables, as the first release made them (``create_all``).

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

RELEASED_TABLES = frozenset(
    {
        "cases",
        "delivery_failures",
        "monitor_citations",
        "monitor_cpc_checkpoints",
        "monitor_cpcs",
        "monitor_findings",
        "monitor_irccs",
        "outbox",
    }
)


def upgrade() -> None:
    """Create v0.1.0's tables."""
    op.create_table(
        "cases",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("cpc_uid", sa.String(length=64), nullable=False),
        sa.Column("ircc_uid", sa.String(length=200), nullable=True),
        sa.Column("provider_country", sa.String(length=8), nullable=True),
        sa.Column("user_country", sa.String(length=8), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("last_event_id", sa.String(length=64), nullable=False),
        sa.Column("flagged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_cases_cpc_uid"), "cases", ["cpc_uid"], unique=False)
    op.create_index(op.f("ix_cases_provider_country"), "cases", ["provider_country"], unique=False)
    op.create_index(op.f("ix_cases_rule"), "cases", ["rule"], unique=False)
    op.create_index(op.f("ix_cases_status"), "cases", ["status"], unique=False)
    op.create_index(op.f("ix_cases_user_country"), "cases", ["user_country"], unique=False)
    op.create_table(
        "delivery_failures",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_table(
        "monitor_citations",
        sa.Column("ircc", sa.String(length=200), nullable=False),
        sa.Column("cpc_uid", sa.String(length=64), nullable=False),
        sa.Column("cpc", sa.JSON(), nullable=False),
        sa.Column("reference", sa.String(length=250), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ircc", "cpc_uid"),
    )
    op.create_table(
        "monitor_cpc_checkpoints",
        sa.Column("checkpoint", sa.String(length=200), nullable=False),
        sa.Column("cpc_uid", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("checkpoint", "cpc_uid"),
    )
    op.create_table(
        "monitor_cpcs",
        sa.Column("cpc_uid", sa.String(length=64), nullable=False),
        sa.Column("cpc", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cpc_uid"),
    )
    op.create_table(
        "monitor_findings",
        sa.Column("item", sa.String(length=300), nullable=False),
        sa.Column("stored", sa.JSON(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("item"),
    )
    op.create_index(
        op.f("ix_monitor_findings_due_at"), "monitor_findings", ["due_at"], unique=False
    )
    op.create_table(
        "monitor_irccs",
        sa.Column("identifier", sa.String(length=200), nullable=False),
        sa.Column("state", sa.JSON(), nullable=True),
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
    op.drop_table("monitor_irccs")
    op.drop_index(op.f("ix_monitor_findings_due_at"), table_name="monitor_findings")
    op.drop_table("monitor_findings")
    op.drop_table("monitor_cpcs")
    op.drop_table("monitor_cpc_checkpoints")
    op.drop_table("monitor_citations")
    op.drop_table("delivery_failures")
    op.drop_index(op.f("ix_cases_user_country"), table_name="cases")
    op.drop_index(op.f("ix_cases_status"), table_name="cases")
    op.drop_index(op.f("ix_cases_rule"), table_name="cases")
    op.drop_index(op.f("ix_cases_provider_country"), table_name="cases")
    op.drop_index(op.f("ix_cases_cpc_uid"), table_name="cases")
    op.drop_table("cases")
