"""Every table of a service's database: the service's own and the ones its kit adds.

A running :class:`~shared.kit.assemble.Kit` adds its tables to the service's ``MetaData``
as it is wired (the offsets table always, ``<outbox>_dead`` with an outbox, the directory
view's two tables once ``kit.directory()`` is called). The migrations need the same set
without wiring a service, so each service declares what its kit uses and
:func:`service_models` builds it in a ``MetaData`` of its own: what Alembic compares with
the migrations (autogenerate, the drift check). The drift test checks the declaration
against what the service's bootstrap really adds.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData

from shared.kit import deactivations, directory, offsets
from shared.kit.outbox import dead_table


def kit_table_names(outbox: type[Any] | None) -> set[str]:
    """Names of the tables a kit may add beside a service's own."""
    names = {offsets.TABLE_NAME, directory.TABLE_NAME, deactivations.TABLE_NAME}
    if outbox is not None:
        names.add(f"{outbox.__tablename__}_dead")
    return names


def service_models(
    metadata: MetaData, *, outbox: type[Any] | None = None, directory_view: bool = False
) -> MetaData:
    """A new ``MetaData`` with copies of the service's tables in ``metadata`` (minus any kit
    table a wired kit already put there) and the kit tables the service uses: consumed
    offsets always, the outbox's dead letters with ``outbox``, the directory view and the
    deactivated users with ``directory_view``."""
    kit_names = kit_table_names(outbox)
    models = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        if table.name not in kit_names:
            table.to_metadata(models)
    offsets.offsets_table(models)
    if outbox is not None:
        dead_table(outbox, models)
    if directory_view:
        directory.directory_table(models)
        deactivations.deactivations_table(models)
    return models
