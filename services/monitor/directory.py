"""The monitor's checkpoints, read from the kit's directory view (``shared/kit/directory.py``).

The view keeps every published directory record in the monitor's database and reads the
directory topic in transactions that also store its offset. This module keeps the rules'
snapshot of checkpoints in step with it and, when a checkpoint really changes (a first
sighting, another government, published or withdrawn), calls the listeners inside that
same transaction: the re-check of the CPCs citing it commits with the change, exactly
once, and a restart, which changes nothing stored, re-checks nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Select, Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.monitor.domain import CheckpointState
from shared.kit.consumer import Tx
from shared.kit.directory import Entry

CHECKPOINT_SCHEMA = "absCheckpoint"
# (the change's transaction, checkpoint identifier)
Listener = Callable[[Tx, str], Awaitable[None]]


def state_of(entry: Entry) -> CheckpointState:
    """What the rules need of a checkpoint entry."""
    return CheckpointState(entry.identifier, entry.government or "", entry.published)


def cited_checkpoints(cpc: dict[str, Any]) -> list[str]:
    """Identifiers (without revision) of the checkpoints a CPC cites."""
    refs = cpc.get("absCheckpoints") or []
    out = []
    for ref in refs if isinstance(refs, list) else []:
        ident = ref.get("identifier") if isinstance(ref, dict) else None
        if isinstance(ident, str) and ident:
            out.append(ident.split("@", 1)[0])
    return out


class Checkpoints:
    """Checkpoint states by identifier, for the rules; listeners hear of real changes."""

    def __init__(self, table: Table | None = None) -> None:
        self._states: dict[str, CheckpointState] = {}
        self.listeners: list[Listener] = []
        # Built once (building costs more than running it); ``ids`` expands to the list.
        self._states_of: Select[Any] | None = None
        if table is not None:
            self._states_of = (
                select(table.c.identifier, table.c.government, table.c.published)
                .where(
                    table.c.identifier.in_(bindparam("ids", expanding=True)),
                    table.c.schema_name == CHECKPOINT_SCHEMA,
                )
                .order_by(table.c.identifier)
                .with_for_update(read=True)
            )

    async def states_in(
        self, session: AsyncSession, cpc: dict[str, Any]
    ) -> dict[str, CheckpointState]:
        """The states of the checkpoints a CPC cites, read in the caller's transaction.

        Read from the table, shared (``FOR SHARE``): a checkpoint change stored by another
        instance either committed before (seen here) or waits for this transaction and
        then re-checks this CPC. Memory alone could be a moment behind another instance's.
        """
        cited = cited_checkpoints(cpc)
        if self._states_of is None or not cited:
            return {i: s for i, s in self._states.items() if i in cited}
        rows = await session.execute(self._states_of, {"ids": sorted(set(cited))})
        return {
            ident: CheckpointState(ident, gov or "", bool(published))
            for ident, gov, published in rows
        }

    async def states_for(
        self, session: AsyncSession, cpcs: list[dict[str, Any]]
    ) -> list[dict[str, CheckpointState]]:
        """:meth:`states_in` for many CPCs, read (and share-locked) in one query."""
        cited = [cited_checkpoints(cpc) for cpc in cpcs]
        wanted = sorted({i for c in cited for i in c})
        if self._states_of is None or not wanted:
            known = self._states
        else:
            rows = await session.execute(self._states_of, {"ids": wanted})
            known = {
                ident: CheckpointState(ident, gov or "", bool(published))
                for ident, gov, published in rows
            }
        return [{i: known[i] for i in sorted(set(c)) if i in known} for c in cited]

    def snapshot(self) -> dict[str, CheckpointState]:
        """A copy that an evaluation can hold on to."""
        return dict(self._states)

    def mirror(self, entry: Entry) -> None:
        """Follow the view (at load, and after each committed change)."""
        if entry.schema == CHECKPOINT_SCHEMA:
            self._states[entry.identifier] = state_of(entry)

    async def on_change(self, tx: Tx, before: Entry | None, after: Entry) -> None:
        """A stored directory entry changed (in its transaction)."""
        if after.schema != CHECKPOINT_SCHEMA:
            return
        new = state_of(after)
        # Before the re-check, which reads the snapshot; a rollback repeats this anyway.
        self._states[after.identifier] = new
        if before is not None and state_of(before) == new:
            return  # a new revision that changes nothing the rules read
        for listener in self.listeners:
            await listener(tx, after.identifier)
