"""The monitor's checking worker: IRCC state, citations, checks, discrepancies.

- ``absch.ircc.v1`` and ``absch.cpc.v1`` are read by one consumer group
  (``absch-monitor``); offsets are committed after the event's transaction.
- An IRCC event folds into the IRCC's state and re-evaluates every stored citation of it;
  a CPC stores one citation per cited IRCC plus the CPC itself and evaluates each. An
  amended CPC (``cpc.amended``) is evaluated the same way; the revision it amends hands
  over its stored findings (their ids name the communiqué, not the revision) and is
  retired, so what no longer holds is cleared, what is new is flagged, and nothing looks
  at the old revision again.
- Findings, the cases they open or clear and the ``discrepancy.*`` events they cause are
  written in that same transaction (the events through the outbox), so a crash keeps all
  or none: a redelivered event finds its findings stored and raises nothing twice.
- A timer looks again at items whose grace period for an unknown reference has passed;
  a checkpoint change re-checks the CPCs that cite it (``monitor_rechecks_total``).

Locks (``adapters/state.py``) make any number of workers on one database give the same
results as one, whatever order events arrive in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.monitor import evaluation as ev
from services.monitor.adapters import state as store
from services.monitor.adapters.tables import FindingsRow, OutboxRow
from services.monitor.cases import apply_finding_event
from services.monitor.directory import Checkpoints
from services.monitor.domain import Finding, apply_ircc_event
from services.monitor.metrics import MonitorMetrics
from shared.events import CloudEvent, Topic, topic_name
from shared.events.models import CpcPublished, IrccEvent
from shared.kit.consumer import Delivery, Tx
from shared.kit.failures import is_transient
from shared.kit.outbox import OutboxRelay, stage
from shared.uid import UidError, parse_uid

log = logging.getLogger(__name__)


def cited_irccs(record: dict[str, Any]) -> dict[str, str]:
    """Revision-less identifier -> reference as cited, for each IRCC a CPC cites."""
    refs = [r.get("identifier") or "" for r in record.get("absIRCCs") or []]
    out: dict[str, str] = {}
    for ref in refs:
        if ref:
            out.setdefault(ref.split("@", 1)[0], ref)
    return out


class MonitorWorker:
    """Evaluates IRCC and CPC events against the stored state; see the module docstring."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay,
        metrics: MonitorMetrics,
        checkpoints: Checkpoints,
        clock: Callable[[], datetime],
        prefix: str,
        grace_seconds: float,
        recheck_interval: float,
    ) -> None:
        self._sessions = sessions
        self._relay = relay
        self.metrics = metrics
        self.checkpoints = checkpoints
        self.clock = clock
        self.grace = timedelta(seconds=grace_seconds)
        self._topic = topic_name(Topic.DISCREPANCY, prefix)
        self._interval = recheck_interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the recheck timer in the background."""
        self._task = asyncio.create_task(self._recheck_loop(), name="monitor-recheck")

    async def stop(self) -> None:
        """Stop the timer (an evaluation in hand finishes or rolls back)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def on_event(self, event: CloudEvent[Any], _delivery: Delivery) -> None:
        """Handle one IRCC or CPC event in a transaction of its own (other types ignored)."""
        async with self._transaction() as (session, out):
            await self._handle(session, out, event)

    async def on_event_tx(self, tx: Tx, event: CloudEvent[Any], _delivery: Delivery) -> None:
        """Handle one IRCC or CPC event in the consumer's transaction, beside its offset."""
        start = time.perf_counter()
        out: list[tuple[str, str]] = []
        await self._handle(tx.session, out, event)
        self.metrics.check_seconds.observe(time.perf_counter() - start)
        tx.after_commit(lambda: self._committed(out))

    async def _handle(
        self, session: AsyncSession, out: list[tuple[str, str]], event: CloudEvent[Any]
    ) -> None:
        data = event.data
        if isinstance(data, IrccEvent):
            self.metrics.events_seen.labels(event.type).inc()
            await self._on_ircc(session, out, event.type, data)
        elif isinstance(data, CpcPublished):
            self.metrics.events_seen.labels(event.type).inc()
            await self._on_cpc(session, out, data, event.time)

    async def _on_ircc(
        self, session: AsyncSession, out: list[tuple[str, str]], event_type: str, data: IrccEvent
    ) -> None:
        ident = data.identifier
        known = await store.lock_irccs(session, [ident])
        state = apply_ircc_event(known.get(ident), event_type, data.model_dump(mode="json"))
        await store.save_ircc(session, state)
        now = self.clock()
        citations = await store.citations_of(session, ident)
        keys = [ev.citation_key(ident, c.cpc_uid) for c in citations]
        rows = await store.findings_of(session, keys)
        for key, citation in zip(keys, citations, strict=True):
            findings, due = ev.citation_findings(citation, state, now=now, grace=self.grace)
            await self._apply(session, out, key, rows.get(key), findings, due)

    async def _on_cpc(
        self,
        session: AsyncSession,
        out: list[tuple[str, str]],
        data: CpcPublished,
        received_at: datetime,
    ) -> None:
        """Check a CPC revision (``cpc.published`` or ``cpc.amended``): an older stored
        revision of the same communiqué hands its findings over and is retired; a revision
        older than one already seen changes nothing."""
        stale, previous = await self._previous_revision(session, data.uid)
        if stale:
            log.info("%s is older than a revision already checked: ignored", data.uid)
            return
        old_citations = await store.citations_by(session, previous) if previous else {}
        cited = cited_irccs(data.record)
        states = await store.lock_irccs(session, {*cited, *old_citations})
        old_cpc = await store.lock_cpc(session, previous) if previous else None
        # Grace for an unknown reference runs from when the communiqué first named it.
        cpc_received = old_cpc["received_at"] if old_cpc else received_at
        citations = {
            ident: ev.Citation(
                data.uid,
                data.record,
                reference,
                old_citations[ident].received_at if ident in old_citations else received_at,
            )
            for ident, reference in cited.items()
        }
        keys = {ident: ev.citation_key(ident, data.uid) for ident in cited}
        old_keys = {ident: ev.citation_key(ident, previous or "") for ident in old_citations}
        cpc_key = ev.CPC_KEY_PREFIX + data.uid
        old_cpc_key = ev.CPC_KEY_PREFIX + previous if previous else None
        # Writes first: on SQLite they take the write lock before anything is read.
        await store.put_cpc(session, data.uid, data.record, cpc_received)
        await store.put_citations(session, citations)
        rows = await store.findings_of(
            session,
            [*keys.values(), cpc_key, *old_keys.values(), *([old_cpc_key] if old_cpc_key else [])],
        )

        def carried(key: str | None) -> dict[str, Any] | None:
            row = rows.get(key) if key else None
            return row.stored if row else None

        now = self.clock()
        for ident, citation in citations.items():
            self.metrics.citations_checked.inc()
            findings, due = ev.citation_findings(
                citation, states.get(ident), now=now, grace=self.grace
            )
            await self._apply(
                session,
                out,
                keys[ident],
                rows.get(keys[ident]),
                findings,
                due,
                carried=carried(old_keys.get(ident)),
            )
        self.metrics.cpcs_checked.inc()
        cpc = {"cpc_uid": data.uid, "cpc": data.record, "received_at": cpc_received}
        await self._evaluate_cpc(session, out, cpc, rows.get(cpc_key), carried(old_cpc_key))
        if previous:
            # IRCCs the new revision no longer cites: their findings no longer hold.
            for ident, key in old_keys.items():
                if ident not in cited:
                    await self._apply(session, out, key, rows.get(key), [], None)
            await store.retire_cpc(session, previous, [*old_keys.values(), str(old_cpc_key)])

    async def _previous_revision(
        self, session: AsyncSession, cpc_uid: str
    ) -> tuple[bool, str | None]:
        """Lock the communiqué and note ``cpc_uid`` as its latest revision: ``(stale,
        previous)``, stale when a later revision was seen already, else the UID of the older
        revision stored (to hand over and retire) or None. A ``cpc_uid`` that is no UID with
        a revision stands alone."""
        try:
            revision = parse_uid(cpc_uid).revision
        except UidError:
            revision = None
        if revision is None:
            return False, None
        communique = cpc_uid.rsplit("-", 1)[0]
        seen, seen_uid = await store.lock_communique(session, communique)
        if seen >= revision:
            # Equal: a redelivery, whose own stored findings keep it from repeating itself.
            return seen > revision, None
        await store.set_communique(session, communique, revision, cpc_uid)
        if seen:
            return False, seen_uid
        # Stored before revisions were tracked: only a first revision can be.
        first = f"{communique}-1"
        return False, first if revision > 1 and await store.has_cpc(session, first) else None

    async def _evaluate_cpc(
        self,
        session: AsyncSession,
        out: list[tuple[str, str]],
        cpc: dict[str, Any],
        row: FindingsRow | None,
        carried: dict[str, Any] | None = None,
    ) -> None:
        findings, due = ev.cpc_findings(
            cpc["cpc_uid"],
            cpc["cpc"],
            cpc["received_at"],
            await self.checkpoints.states_in(session, cpc["cpc"]),
            now=self.clock(),
            grace=self.grace,
        )
        key = ev.CPC_KEY_PREFIX + cpc["cpc_uid"]
        await self._apply(session, out, key, row, findings, due, carried=carried)

    async def recheck(self, item: str) -> None:
        """Evaluate one stored item (a citation or a CPC) again, under its lock."""
        async with self._transaction() as (session, out):
            await self._recheck_in(session, out, item)

    async def _recheck_in(
        self, session: AsyncSession, out: list[tuple[str, str]], item: str
    ) -> None:
        if item.startswith(ev.CPC_KEY_PREFIX):
            cpc = await store.lock_cpc(session, item.removeprefix(ev.CPC_KEY_PREFIX))
            if cpc is not None:
                row = (await store.findings_of(session, [item])).get(item)
                await self._evaluate_cpc(session, out, cpc, row)
            return
        ident, cpc_uid = ev.split_citation_key(item)
        state = (await store.lock_irccs(session, [ident])).get(ident)
        row = (await store.findings_of(session, [item])).get(item)
        for citation in await store.citations_of(session, ident, cpc_uid):
            findings, due = ev.citation_findings(
                citation, state, now=self.clock(), grace=self.grace
            )
            await self._apply(session, out, item, row, findings, due)

    async def recheck_checkpoint(self, tx: Tx, identifier: str) -> None:
        """A checkpoint changed: look again at the stored CPCs that cite it, in the
        transaction that stores the change."""
        out: list[tuple[str, str]] = []
        for uid in await store.cpcs_citing_checkpoint(tx.session, identifier):
            self.metrics.rechecks.labels("checkpoint").inc()
            await self._recheck_in(tx.session, out, ev.CPC_KEY_PREFIX + uid)
        tx.after_commit(lambda: self._committed(out))

    async def pending_items(self) -> int:
        """How many items wait for a grace period to pass."""
        async with self._sessions() as session:
            return await store.pending_count(session)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[tuple[AsyncSession, list[tuple[str, str]]]]:
        """A session in a transaction; counters move and the relay wakes after commit."""
        start = time.perf_counter()
        out: list[tuple[str, str]] = []  # (flagged|cleared, rule)
        async with self._sessions() as session, session.begin():
            yield session, out
        self._committed(out)
        self.metrics.check_seconds.observe(time.perf_counter() - start)

    def _committed(self, out: list[tuple[str, str]]) -> None:
        """After a commit: move the flagged/cleared counters, wake the relay."""
        for kind, rule in out:
            (self.metrics.flagged if kind == "flagged" else self.metrics.cleared).labels(rule).inc()
        if out:
            self._relay.wake()

    async def _apply(
        self,
        session: AsyncSession,
        out: list[tuple[str, str]],
        item: str,
        row: FindingsRow | None,
        findings: list[Finding],
        due: datetime | None,
        *,
        carried: dict[str, Any] | None = None,
    ) -> None:
        """Compare ``findings`` with those stored for ``item`` (or, for an item not stored
        yet, those ``carried`` over from the revision it amends): stage what changed."""
        change = ev.transition(row.stored if row else carried or {}, findings)
        for event in change.events:
            stage(session, OutboxRow, self._topic, event, key=event.data.id)
            await apply_finding_event(session, event)
        out += [("flagged", r) for r in change.flagged] + [("cleared", r) for r in change.cleared]
        moved = row is None and bool(carried)
        stored = change.stored if change.events or moved else None
        store.save_findings(session, item, row, stored, due)

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._recheck_due()
            except Exception:  # database hiccup: the next round tries again
                log.exception("recheck round failed")

    async def _recheck_due(self) -> None:
        async with self._sessions() as session:
            due = await store.due_items(session, self.clock())
        for item in due:
            self.metrics.rechecks.labels("grace").inc()
            try:
                await self.recheck(item)
            except Exception as exc:
                if is_transient(exc):
                    raise  # the database is away: the whole round tries again later
                self.metrics.work_errors.inc()
                self.metrics.plumbing.skipped("recheck")
                log.exception("recheck of %s failed; the round goes on", item)
        async with self._sessions() as session:
            for name, n in (await store.sizes(session)).items():
                self.metrics.table_keys.labels(name).set(n)
