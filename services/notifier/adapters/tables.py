"""Notifier tables: the IRCC projection, the delivery log, processed events,
the outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.kit.outbox import OutboxMixin

PK = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    """Metadata of the notifier database."""


class IrccRow(Base):
    """Latest known revision of an IRCC, for CPC recipients and expiry notices."""

    __tablename__ = "irccs"

    identifier: Mapped[str] = mapped_column(String(128), primary_key=True)
    document_id: Mapped[int] = mapped_column(Integer, index=True)
    government: Mapped[str] = mapped_column(String(8))
    uid: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    expiry_notice_sent: Mapped[bool] = mapped_column(Boolean, default=False)


class DeliveryRow(Base):
    """One mail for one event and address: at most one per pair, ever.

    ``claimed_by``, ``claimed_until``, ``deferred_since`` and ``government`` were added after
    the first release (migration 0002, nullable, no default). Older rows keep ``government``
    NULL, so only the Secretariat sees them in the log."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("event_id", "recipient", name="uq_delivery"),)

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(64), index=True)
    recipient: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(64))
    # The government on whose side the recipient was mailed (domain.Recipient.government):
    # the only government, besides the Secretariat, that sees this row in the delivery log.
    government: Mapped[str | None] = mapped_column(String(8), nullable=True, index=True)
    template: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(4))
    mail_subject: Mapped[str] = mapped_column(Text)
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The delivery worker's lease (delivery.py): the worker that holds, or last held, the
    # row; its claim is live while ``claimed_until`` is in the future.
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When the SMTP server first answered this mail with a 4xx: the soft-bounce budget's start.
    deferred_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ProcessedEvent(Base):
    """An event whose deliveries were created: a re-read of the topic skips it whole.

    Written in the transaction that adds the deliveries, so either both exist or neither.
    """

    __tablename__ = "processed_events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64))
    deliveries: Mapped[int] = mapped_column(Integer)
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxRow(OutboxMixin, Base):
    """Notification events waiting for the relay."""

    __tablename__ = "outbox"


class ParkedEvent(Base):
    """A mail event waiting for records it names (parking.py); deleted once handled."""

    __tablename__ = "parked_events"

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    key: Mapped[str] = mapped_column(String(255), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    missing: Mapped[str] = mapped_column(Text)
    parked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
