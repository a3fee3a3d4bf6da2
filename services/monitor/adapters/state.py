"""The monitor's checking state in its database: IRCCs, citations, CPCs, findings.

Every evaluation runs in one transaction that first locks what it reads: the cited IRCCs'
rows (or the CPC's row), so two workers sharing a database never evaluate the same IRCC
at once, and a CPC citing an IRCC that is being revoked is seen by one of the two
transactions. On PostgreSQL the lock is ``SELECT … FOR UPDATE`` (in identifier order, so
no deadlock); on SQLite the first statement is a write, which takes the database's write
lock before anything is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter

from services.monitor import evaluation as ev
from services.monitor.adapters.tables import (
    CitationRow,
    CommuniqueRow,
    CpcCheckpointRow,
    CpcRow,
    FindingsRow,
    IrccStateRow,
)
from services.monitor.domain import IrccState


def _insert_for(dialect: str) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing``."""
    return pg_insert if dialect == "postgresql" else sqlite_insert


def _insert(session: AsyncSession, table: Any) -> Any:
    return _insert_for(session.get_bind().dialect.name)(table)


_IDS: BindParameter[list[str]] = bindparam("ids", expanding=True)


class _Batch:
    """The batch path's statements for one dialect, built once: building a statement costs
    more than running it. Lists go in as the expanding parameter ``ids``."""

    def __init__(self, dialect: str) -> None:
        ins = _insert_for(dialect)
        irccs, communiques = _table(IrccStateRow), _table(CommuniqueRow)
        cpcs, checkpoints = _table(CpcRow), _table(CpcCheckpointRow)
        self.insert_irccs = ins(irccs).on_conflict_do_nothing(index_elements=["identifier"])
        self.lock_irccs = (
            select(IrccStateRow.identifier, IrccStateRow.state)
            .where(IrccStateRow.identifier.in_(_IDS))
            .order_by(IrccStateRow.identifier)
            .with_for_update()
        )
        self.insert_communiques = ins(communiques).on_conflict_do_nothing(
            index_elements=["communique"]
        )
        self.lock_communiques = (
            select(CommuniqueRow.communique, CommuniqueRow.revision, CommuniqueRow.cpc_uid)
            .where(CommuniqueRow.communique.in_(_IDS))
            .order_by(CommuniqueRow.communique)
            .with_for_update()
        )
        self.set_communiques = (
            update(communiques)
            .where(CommuniqueRow.communique == bindparam("b_communique"))
            .values(revision=bindparam("b_revision"), cpc_uid=bindparam("b_cpc_uid"))
        )
        self.existing_cpcs = select(CpcRow.cpc_uid).where(CpcRow.cpc_uid.in_(_IDS))
        # The no-op update row-locks on PostgreSQL and takes the write lock on SQLite.
        self.touch_cpcs = (
            update(CpcRow).where(CpcRow.cpc_uid.in_(_IDS)).values(cpc_uid=CpcRow.cpc_uid)
        )
        self.read_cpcs = select(CpcRow.cpc_uid, CpcRow.cpc, CpcRow.received_at).where(
            CpcRow.cpc_uid.in_(_IDS)
        )
        self.insert_cpcs = ins(cpcs).on_conflict_do_nothing(index_elements=["cpc_uid"])
        self.insert_checkpoints = ins(checkpoints).on_conflict_do_nothing(
            index_elements=["checkpoint", "cpc_uid"]
        )
        self.citations_of = select(CitationRow).where(CitationRow.cpc_uid.in_(_IDS))
        self.insert_citations = ins(_table(CitationRow)).on_conflict_do_nothing(
            index_elements=["ircc", "cpc_uid"]
        )
        self.findings_of = select(FindingsRow).where(FindingsRow.item.in_(_IDS))
        self.insert_findings = ins(_table(FindingsRow))


def _table(row: Any) -> Table:
    return cast(Table, row.__table__)


@cache
def _batch_for(dialect: str) -> _Batch:
    return _Batch(dialect)


def _batch(session: AsyncSession) -> _Batch:
    return _batch_for(session.get_bind().dialect.name)


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)  # SQLite hands back naive UTC


async def lock_irccs(session: AsyncSession, identifiers: Iterable[str]) -> dict[str, IrccState]:
    """Lock the rows of these IRCCs (creating empty ones) and return the known states."""
    idents = sorted(set(identifiers))
    if not idents:
        return {}
    batch = _batch(session)
    # executemany of one cached statement: a multi-row VALUES is compiled anew per size.
    await session.execute(batch.insert_irccs, [{"identifier": i, "state": None} for i in idents])
    rows = await session.execute(batch.lock_irccs, {"ids": idents})
    return {ident: ev.state_from_json(state) for ident, state in rows if state}


async def save_ircc(session: AsyncSession, state: IrccState) -> None:
    """Store a (locked) IRCC's state."""
    await session.execute(
        update(IrccStateRow)
        .where(IrccStateRow.identifier == state.identifier)
        .values(state=ev.state_to_json(state))
    )


async def lock_cpc(session: AsyncSession, cpc_uid: str) -> dict[str, Any] | None:
    """Lock a stored CPC's row; returns its ``{cpc_uid, cpc, received_at}`` or None."""
    # The no-op update row-locks on PostgreSQL and takes the write lock on SQLite.
    await session.execute(
        update(CpcRow).where(CpcRow.cpc_uid == cpc_uid).values(cpc_uid=CpcRow.cpc_uid)
    )
    row = await session.get(CpcRow, cpc_uid)
    if row is None:
        return None
    return {"cpc_uid": row.cpc_uid, "cpc": row.cpc, "received_at": _aware(row.received_at)}


async def put_cpc(
    session: AsyncSession, cpc_uid: str, record: dict[str, Any], received_at: datetime
) -> None:
    """Store a CPC and the checkpoints it cites (a redelivery changes nothing)."""
    await session.execute(
        _insert(session, CpcRow)
        .values(cpc_uid=cpc_uid, cpc=record, received_at=received_at)
        .on_conflict_do_nothing(index_elements=["cpc_uid"])
    )
    cited = {
        (r.get("identifier") or "").split("@", 1)[0] for r in record.get("absCheckpoints") or []
    } - {""}
    if cited:
        await session.execute(
            _insert(session, CpcCheckpointRow)
            .values([{"checkpoint": c, "cpc_uid": cpc_uid} for c in sorted(cited)])
            .on_conflict_do_nothing(index_elements=["checkpoint", "cpc_uid"])
        )


async def lock_communique(session: AsyncSession, communique: str) -> tuple[int, str]:
    """Lock a communiqué's row (creating an empty one): the latest revision seen and its
    UID, ``(0, "")`` before any."""
    await session.execute(
        _insert(session, CommuniqueRow)
        .values(communique=communique, revision=0, cpc_uid="")
        .on_conflict_do_nothing(index_elements=["communique"])
    )
    row = (
        await session.execute(
            select(CommuniqueRow.revision, CommuniqueRow.cpc_uid)
            .where(CommuniqueRow.communique == communique)
            .with_for_update()
        )
    ).one()
    return int(row.revision), str(row.cpc_uid)


async def lock_communiques(
    session: AsyncSession, communiques: Iterable[str]
) -> dict[str, tuple[int, str]]:
    """:func:`lock_communique` for many communiqués, in two statements (identifier order,
    as the per-event locks, so no deadlock)."""
    keys = sorted(set(communiques))
    if not keys:
        return {}
    batch = _batch(session)
    await session.execute(
        batch.insert_communiques, [{"communique": c, "revision": 0, "cpc_uid": ""} for c in keys]
    )
    rows = await session.execute(batch.lock_communiques, {"ids": keys})
    return {str(c): (int(rev), str(uid)) for c, rev, uid in rows}


async def set_communiques(session: AsyncSession, latest: dict[str, tuple[int, str]]) -> None:
    """Record the latest revision of (locked) communiqués: ``communique -> (revision,
    cpc_uid)``, in one executemany."""
    if latest:
        await session.execute(
            _batch(session).set_communiques,
            [
                {"b_communique": c, "b_revision": rev, "b_cpc_uid": uid}
                for c, (rev, uid) in sorted(latest.items())
            ],
        )


async def existing_cpcs(session: AsyncSession, cpc_uids: Iterable[str]) -> set[str]:
    """Which of these CPC revisions are stored."""
    uids = sorted(set(cpc_uids))
    if not uids:
        return set()
    return set(await session.scalars(_batch(session).existing_cpcs, {"ids": uids}))


async def lock_cpcs(session: AsyncSession, cpc_uids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """:func:`lock_cpc` for many stored CPCs (absent ones are left out)."""
    uids = sorted(set(cpc_uids))
    if not uids:
        return {}
    batch = _batch(session)
    await session.execute(batch.touch_cpcs, {"ids": uids})
    rows = await session.execute(batch.read_cpcs, {"ids": uids})
    return {
        uid: {"cpc_uid": uid, "cpc": cpc, "received_at": _aware(received)}
        for uid, cpc, received in rows
    }


async def put_cpcs(session: AsyncSession, cpcs: list[tuple[str, dict[str, Any], datetime]]) -> None:
    """:func:`put_cpc` for many ``(cpc_uid, record, received_at)``, in two statements."""
    if not cpcs:
        return
    batch = _batch(session)
    await session.execute(
        batch.insert_cpcs, [{"cpc_uid": u, "cpc": r, "received_at": t} for u, r, t in cpcs]
    )
    pairs = sorted(
        {
            (c, uid)
            for uid, record, _ in cpcs
            for c in {
                (r.get("identifier") or "").split("@", 1)[0]
                for r in record.get("absCheckpoints") or []
            }
            if c
        }
    )
    if pairs:
        await session.execute(
            batch.insert_checkpoints, [{"checkpoint": c, "cpc_uid": u} for c, u in pairs]
        )


async def citations_by_many(
    session: AsyncSession, cpc_uids: Iterable[str]
) -> dict[str, dict[str, ev.Citation]]:
    """:func:`citations_by` for many CPC revisions: ``cpc_uid -> ircc -> citation``."""
    uids = sorted(set(cpc_uids))
    out: dict[str, dict[str, ev.Citation]] = {u: {} for u in uids}
    if uids:
        rows = await session.scalars(_batch(session).citations_of, {"ids": uids})
        for r in rows:
            out[r.cpc_uid][r.ircc] = ev.Citation(
                r.cpc_uid, r.cpc, r.reference, _aware(r.received_at)
            )
    return out


async def put_citations_many(
    session: AsyncSession, citations: list[tuple[str, ev.Citation]]
) -> None:
    """:func:`put_citations` for ``(ircc, citation)`` pairs of many CPCs, in one statement."""
    if citations:
        await session.execute(
            _batch(session).insert_citations,
            [
                {
                    "ircc": ircc,
                    "cpc_uid": c.cpc_uid,
                    "cpc": c.cpc,
                    "reference": c.reference,
                    "received_at": c.received_at,
                }
                for ircc, c in citations
            ],
        )


async def retire_cpcs(session: AsyncSession, cpc_uids: Iterable[str], items: Iterable[str]) -> None:
    """:func:`retire_cpc` for many superseded revisions, in four statements."""
    uids = sorted(set(cpc_uids))
    if not uids:
        return
    keys = list(items)
    if keys:
        await session.execute(delete(FindingsRow).where(FindingsRow.item.in_(keys)))
    await session.execute(delete(CitationRow).where(CitationRow.cpc_uid.in_(uids)))
    await session.execute(delete(CpcCheckpointRow).where(CpcCheckpointRow.cpc_uid.in_(uids)))
    await session.execute(delete(CpcRow).where(CpcRow.cpc_uid.in_(uids)))


async def set_communique(
    session: AsyncSession, communique: str, revision: int, cpc_uid: str
) -> None:
    """Record the latest revision of a (locked) communiqué."""
    await session.execute(
        update(CommuniqueRow)
        .where(CommuniqueRow.communique == communique)
        .values(revision=revision, cpc_uid=cpc_uid)
    )


async def has_cpc(session: AsyncSession, cpc_uid: str) -> bool:
    """Whether a CPC revision is stored."""
    return await session.get(CpcRow, cpc_uid) is not None


async def citations_by(session: AsyncSession, cpc_uid: str) -> dict[str, ev.Citation]:
    """The stored citations of one CPC revision, by IRCC identifier."""
    rows = await session.scalars(select(CitationRow).where(CitationRow.cpc_uid == cpc_uid))
    return {r.ircc: ev.Citation(r.cpc_uid, r.cpc, r.reference, _aware(r.received_at)) for r in rows}


async def retire_cpc(session: AsyncSession, cpc_uid: str, items: Iterable[str]) -> None:
    """Forget a superseded CPC revision: its citations, checkpoints, row and the findings
    rows of ``items`` (its citations and its own checks). Nothing re-checks it again."""
    keys = list(items)
    if keys:
        await session.execute(delete(FindingsRow).where(FindingsRow.item.in_(keys)))
    await session.execute(delete(CitationRow).where(CitationRow.cpc_uid == cpc_uid))
    await session.execute(delete(CpcCheckpointRow).where(CpcCheckpointRow.cpc_uid == cpc_uid))
    await session.execute(delete(CpcRow).where(CpcRow.cpc_uid == cpc_uid))


async def put_citations(session: AsyncSession, citations: dict[str, ev.Citation]) -> None:
    """Store the citations of (locked) IRCCs, by IRCC identifier, in one statement."""
    if not citations:
        return
    await session.execute(
        _insert(session, CitationRow)
        .values(
            [
                {
                    "ircc": ircc,
                    "cpc_uid": c.cpc_uid,
                    "cpc": c.cpc,
                    "reference": c.reference,
                    "received_at": c.received_at,
                }
                for ircc, c in citations.items()
            ]
        )
        .on_conflict_do_nothing(index_elements=["ircc", "cpc_uid"])
    )


async def citations_of(
    session: AsyncSession, ircc: str, cpc_uid: str | None = None
) -> list[ev.Citation]:
    """The stored citations of an IRCC (or the one by ``cpc_uid``), oldest CPC uid first."""
    query = select(CitationRow).where(CitationRow.ircc == ircc).order_by(CitationRow.cpc_uid)
    if cpc_uid is not None:
        query = query.where(CitationRow.cpc_uid == cpc_uid)
    return [
        ev.Citation(r.cpc_uid, r.cpc, r.reference, _aware(r.received_at))
        for r in await session.scalars(query)
    ]


async def cpcs_citing_checkpoint(session: AsyncSession, checkpoint: str) -> list[str]:
    """UIDs of the stored CPCs that cite a checkpoint."""
    rows = await session.scalars(
        select(CpcCheckpointRow.cpc_uid).where(CpcCheckpointRow.checkpoint == checkpoint)
    )
    return list(rows)


async def findings_of(session: AsyncSession, items: Iterable[str]) -> dict[str, FindingsRow]:
    """The findings rows of these items (under the caller's lock), in one query."""
    keys = list(items)
    if not keys:
        return {}
    with session.no_autoflush:  # nothing staged yet concerns these rows
        rows = await session.scalars(_batch(session).findings_of, {"ids": keys})
    return {row.item: row for row in rows}


def save_findings(
    session: AsyncSession,
    item: str,
    row: FindingsRow | None,
    stored: dict[str, Any] | None,
    due: datetime | None,
) -> None:
    """Record new findings (``stored`` None: unchanged) and the due time of an item."""
    if row is None:
        values = new_findings(item, stored, due)
        if values is not None:
            session.add(FindingsRow(**values))
        return
    if stored is not None:
        row.stored = stored
    row.due_at = due


def new_findings(
    item: str, stored: dict[str, Any] | None, due: datetime | None
) -> dict[str, Any] | None:
    """The findings row :func:`save_findings` would add for an item not stored yet, as
    values for :func:`insert_findings` (None: nothing to store)."""
    if stored is None and due is None:
        return None
    return {"item": item, "stored": stored or {}, "due_at": due}


async def insert_findings(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert new findings rows in one executemany (the ORM's flush of as many objects
    cost several times as much)."""
    if rows:
        await session.execute(_batch(session).insert_findings, rows)


async def due_items(session: AsyncSession, now: datetime, limit: int = 500) -> Sequence[str]:
    """Items whose grace period for an unknown reference has run out."""
    rows = await session.scalars(
        select(FindingsRow.item)
        .where(FindingsRow.due_at.is_not(None), FindingsRow.due_at <= now)
        .order_by(FindingsRow.due_at)
        .limit(limit)
    )
    return list(rows)


async def pending_count(session: AsyncSession) -> int:
    """How many items wait for a grace period."""
    n = await session.scalar(
        select(func.count()).select_from(FindingsRow).where(FindingsRow.due_at.is_not(None))
    )
    return int(n or 0)


async def sizes(session: AsyncSession) -> dict[str, int]:
    """Rows per state table, for the ``monitor_table_keys`` gauge."""
    out: dict[str, int] = {}
    for name, table in (
        ("irccs", IrccStateRow),
        ("citations", CitationRow),
        ("cpcs", CpcRow),
        ("findings", FindingsRow),
    ):
        out[name] = int(await session.scalar(select(func.count()).select_from(table)) or 0)
    return out
