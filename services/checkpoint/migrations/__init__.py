"""The checkpoint's schema migrations (Alembic; docs/operations.md, "Upgrading").

``versions/`` holds one reviewed file per schema change; ``r0001`` is v0.1.0's tables.
``python -m services.checkpoint.migrate`` brings a database to head. A change to the tables is
``python -m tools.migrate checkpoint --autogenerate "what changed"``, then a review.
"""

from __future__ import annotations

from sqlalchemy import MetaData

from services.checkpoint.adapters.tables import Base, OutboxRow
from shared.kit.models import service_models
from shared.migrations import Migrations


def models() -> MetaData:
    """Every table of the checkpoint's database: ``adapters/tables.py`` and its kit's
    (consumed offsets, outbox dead letters, the directory view, deactivated users)."""
    return service_models(Base.metadata, outbox=OutboxRow, directory_view=True)


MIGRATIONS = Migrations("checkpoint", __name__, models)
