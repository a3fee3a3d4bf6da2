"""Checkpoint tables: communiqués, idempotency keys, outbox (the directory is the kit's)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.kit.outbox import OutboxMixin

PK = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    """Metadata of the checkpoint database."""


class CommuniqueRow(Base):
    """A published communiqué at its latest revision (older ones: ``communique_revisions``)."""

    __tablename__ = "communiques"

    document_id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    identifier: Mapped[str] = mapped_column(String(128), unique=True)
    government: Mapped[str] = mapped_column(String(8), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    uid: Mapped[str] = mapped_column(String(64), unique=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    ircc_ids: Mapped[list[str]] = mapped_column(JSON)
    submitted_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CommuniqueRevisionRow(Base):
    """Every revision of an amended communiqué, the latest included (``communiques`` holds
    the latest too). A communiqué never amended has none: its first amendment archives
    revision 1 here, so a database from before amendments needs no migration."""

    __tablename__ = "communique_revisions"

    document_id: Mapped[int] = mapped_column(PK, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(64), unique=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    submitted_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Why this revision amended the one before (an lstring); None for revision 1.
    reason: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)


class IdempotencyRow(Base):
    """A client's ``Idempotency-Key`` and what it produced."""

    __tablename__ = "idempotency_keys"

    principal: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    body_hash: Mapped[str] = mapped_column(String(64))
    uid: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxRow(OutboxMixin, Base):
    """Events waiting for the relay."""

    __tablename__ = "outbox"
