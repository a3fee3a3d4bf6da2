"""Monitor tables: checking state, discrepancy cases, delivery failures seen, outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.kit.outbox import OutboxMixin


class Base(DeclarativeBase):
    """Metadata of the monitor database."""


class CaseRow(Base):
    """A discrepancy as a case that provider authorities work."""

    __tablename__ = "cases"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rule: Mapped[str] = mapped_column(String(32), index=True)
    cpc_uid: Mapped[str] = mapped_column(String(64), index=True)
    ircc_uid: Mapped[str | None] = mapped_column(String(200), nullable=True)
    provider_country: Mapped[str | None] = mapped_column(String(8), index=True, nullable=True)
    user_country: Mapped[str] = mapped_column(String(8), index=True)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    last_event_id: Mapped[str] = mapped_column(String(64))
    flagged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeliveryFailureRow(Base):
    """A ``notification.failed`` event, for the operator dashboard."""

    __tablename__ = "delivery_failures"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(64))
    template: Mapped[str] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxRow(OutboxMixin, Base):
    """Case events waiting for the relay."""

    __tablename__ = "outbox"


class IrccStateRow(Base):
    """Every revision of one IRCC seen so far (``state`` NULL: cited, not yet seen)."""

    __tablename__ = "monitor_irccs"

    identifier: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class CitationRow(Base):
    """A CPC citing an IRCC: what the per-IRCC rules look at again when the IRCC changes."""

    __tablename__ = "monitor_citations"

    ircc: Mapped[str] = mapped_column(String(200), primary_key=True)
    cpc_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    cpc: Mapped[dict[str, Any]] = mapped_column(JSON)
    reference: Mapped[str] = mapped_column(String(250))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CpcRow(Base):
    """A CPC, for its own checks (checkpoints, evidence)."""

    __tablename__ = "monitor_cpcs"

    cpc_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    cpc: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CommuniqueRow(Base):
    """The latest revision seen of each communiqué (``revision`` 0: none yet), so that an
    amendment retires the older revision's state and a late older revision changes nothing."""

    __tablename__ = "monitor_communiques"

    communique: Mapped[str] = mapped_column(String(64), primary_key=True)  # revision-less UID
    revision: Mapped[int] = mapped_column(BigInteger)
    cpc_uid: Mapped[str] = mapped_column(String(64))


class CpcCheckpointRow(Base):
    """Which CPCs cite a checkpoint, so a checkpoint change re-checks just those."""

    __tablename__ = "monitor_cpc_checkpoints"

    checkpoint: Mapped[str] = mapped_column(String(200), primary_key=True)
    cpc_uid: Mapped[str] = mapped_column(String(64), primary_key=True)


class FindingsRow(Base):
    """Findings raised for one item (a citation or a CPC) and when to look again."""

    __tablename__ = "monitor_findings"

    item: Mapped[str] = mapped_column(String(300), primary_key=True)
    stored: Mapped[dict[str, Any]] = mapped_column(JSON)
    due_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )
