"""Registry tables (SQLAlchemy 2 ORM)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.kit.outbox import OutboxMixin

PK = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    """Metadata of the registry database."""

    type_annotation_map = {dict[str, Any]: JSON}


class RecordRow(Base):
    """A national record: its identity, current draft and publication state."""

    __tablename__ = "records"

    document_id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    identifier: Mapped[str] = mapped_column(String(128), unique=True)
    schema_name: Mapped[str] = mapped_column(String(64), index=True)
    government: Mapped[str | None] = mapped_column(String(8), index=True)
    draft: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    latest_revision: Mapped[int] = mapped_column(Integer, default=0)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    pending_request_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    search_text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(64))
    # Base URL of the clearing-house this record is mirrored from; None for a local record.
    # A mirrored record is read-only here: its source publishes its revisions.
    mirrored_from: Mapped[str | None] = mapped_column(String(255), nullable=True)


class RevisionRow(Base):
    """One published revision; never deleted or changed."""

    __tablename__ = "revisions"

    document_id: Mapped[int] = mapped_column(ForeignKey("records.document_id"), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(64), unique=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    amendment_intent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    published_by: Mapped[str] = mapped_column(String(64))


class UserRow(Base):
    """A user and the role it holds for one government."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    government: Mapped[str | None] = mapped_column(String(8), nullable=True)
    checkpoint: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class CredentialRow(Base):
    """A user's long-lived secret, exchanged for access tokens; only its SHA-256 is kept.

    A table of its own (not a column of ``users``): users from v0.1.0 have none (migration
    0002).
    """

    __tablename__ = "user_credentials"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RequestRow(Base):
    """A publication (or revocation) request waiting for the publishing authority [W2-W3]."""

    __tablename__ = "requests"

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("records.document_id"), index=True)
    government: Mapped[str | None] = mapped_column(String(8), index=True)
    action: Mapped[str] = mapped_column(String(16))  # publish | revoke
    state: Mapped[str] = mapped_column(String(16), default="running")
    result: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    body: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(64))
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reminders_sent: Mapped[int] = mapped_column(Integer, default=0)


class NotificationRow(Base):
    """A user notification [W4]: request, approved, rejected, recalled, timedout, published."""

    __tablename__ = "user_notifications"

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    request_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    iteration: Mapped[int] = mapped_column(Integer, default=1)
    info: Mapped[str | None] = mapped_column(Text, nullable=True)
    identifier: Mapped[str] = mapped_column(String(128))
    schema_name: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(8), default="unread")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MirrorCursorRow(Base):
    """How far the mirror has read one schema of one source's index: the update time and
    Solr id of the last record it took, in the index's own text (sorting order)."""

    __tablename__ = "mirror_cursors"

    source: Mapped[str] = mapped_column(String(255), primary_key=True)
    schema_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    updated: Mapped[str] = mapped_column(String(40))
    last_id: Mapped[str] = mapped_column(String(64))
    records: Mapped[int] = mapped_column(Integer, default=0)
    moved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MirroredCommuniqueRow(Base):
    """A revision of a communiqué mirrored from a source. The checkpoint service owns the
    communiqués submitted here; mirrored ones travel as its events only (ADR 0005), and
    this ledger is what makes mirroring them idempotent and their amendments complete."""

    __tablename__ = "mirrored_communiques"

    document_id: Mapped[int] = mapped_column(PK, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(64), unique=True)
    identifier: Mapped[str] = mapped_column(String(128), index=True)
    government: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(255))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    mirrored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxRow(OutboxMixin, Base):
    """Events waiting for the relay."""

    __tablename__ = "outbox"
