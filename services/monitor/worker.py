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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only

from services.monitor import evaluation as ev
from services.monitor.adapters import state as store
from services.monitor.adapters.tables import FindingsRow, OutboxRow
from services.monitor.cases import apply_finding_event, apply_finding_events
from services.monitor.directory import Checkpoints
from services.monitor.domain import Finding, apply_ircc_event
from services.monitor.metrics import MonitorMetrics
from shared.events import CloudEvent, Topic, topic_name
from shared.events.models import CpcPublished, IrccEvent
from shared.kit.consumer import Delivery, Tx
from shared.kit.failures import is_transient
from shared.kit.outbox import OutboxRelay, outbox_values, stage, stage_many
from shared.uid import UidError, parse_uid

log = logging.getLogger(__name__)


_BATCH_KEY = "monitor.cpc_batch"  # in ``session.info``: the CPCs deferred to the commit


@dataclass
class _CpcBatch:
    """CPC events deferred in one consumer transaction, and what they flagged/cleared."""

    flush: Callable[[], Awaitable[None]]  # checks the deferred CPCs in the session
    items: list[tuple[CpcPublished, datetime]] = field(default_factory=list)
    out: list[tuple[str, str]] = field(default_factory=list)


@sa_event.listens_for(Session, "before_commit")
def _flush_deferred(session: Session) -> None:
    """Check a transaction's deferred CPCs before it commits. One listener for every
    session, not one per transaction: adding a listener to a session costs more than a
    CPC's check. It runs inside the commit's greenlet, so the async flush can be awaited;
    an error here rolls the batch back like a handler's would."""
    batch: _CpcBatch | None = session.info.get(_BATCH_KEY)
    if batch is not None and batch.items:
        await_only(batch.flush())


@dataclass
class _Plan:
    """One CPC of a batch check: what it cites and what it takes over."""

    data: CpcPublished
    previous: str | None
    cited: dict[str, str]
    received_at: datetime
    citations: dict[str, ev.Citation]
    old_keys: dict[str, str]

    def items_read(self) -> list[str]:
        """Every findings item this CPC reads: its own and its previous revision's."""
        own = [ev.citation_key(i, self.data.uid) for i in self.cited]
        own.append(ev.CPC_KEY_PREFIX + self.data.uid)
        if self.previous:
            own += [*self.old_keys.values(), ev.CPC_KEY_PREFIX + self.previous]
        return own


def _revision_of(cpc_uid: str) -> int | None:
    """The revision a CPC UID names (None: no UID with a revision, it stands alone)."""
    try:
        return parse_uid(cpc_uid).revision
    except UidError:
        return None


def _communique_of(cpc_uid: str) -> str:
    """The revision-less UID of a CPC revision (a UID without one stands for itself)."""
    return cpc_uid.rsplit("-", 1)[0] if _revision_of(cpc_uid) is not None else cpc_uid


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
        """Handle one IRCC or CPC event in the consumer's transaction, beside its offset.

        CPC events are deferred and checked together just before the transaction commits
        (or before the next IRCC event of the batch, which may change what they read): a
        few set-based statements for the whole poll batch instead of ~8 per event. The
        effects are those of checking them one at a time, in order.
        """
        if isinstance(event.data, CpcPublished):
            self.metrics.events_seen.labels(event.type).inc()
            self._defer(tx, event.data, event.time)
            return
        await self._flush_cpcs(tx.session)  # earlier CPCs first, as they arrived
        start = time.perf_counter()
        out: list[tuple[str, str]] = []
        await self._handle(tx.session, out, event)
        self.metrics.check_seconds.observe(time.perf_counter() - start)
        tx.after_commit(lambda: self._committed(out))

    def _defer(self, tx: Tx, data: CpcPublished, received_at: datetime) -> None:
        """Keep a CPC for the batch check of this transaction."""
        batch: _CpcBatch | None = tx.session.info.get(_BATCH_KEY)
        if batch is None:
            session = tx.session
            batch = _CpcBatch(flush=lambda: self._flush_cpcs(session))
            tx.session.info[_BATCH_KEY] = batch
            out = batch.out
            tx.after_commit(lambda: self._committed(out))
        batch.items.append((data, received_at))

    async def _flush_cpcs(self, session: AsyncSession) -> None:
        """Check the deferred CPCs, in groups where each communiqué appears once (a later
        revision in the same batch must see what the earlier one stored)."""
        batch: _CpcBatch | None = session.info.get(_BATCH_KEY)
        if batch is None or not batch.items:
            return
        items, batch.items = batch.items, []
        start = time.perf_counter()
        # Rows staged before these CPCs (an IRCC event's) get their outbox ids first: the
        # CPCs' outbox rows are inserted directly, past the unit of work.
        await session.flush()
        group: list[tuple[CpcPublished, datetime]] = []
        seen: set[str] = set()
        for data, received_at in items:
            communique = _communique_of(data.uid)
            if communique in seen:
                await self._on_cpcs(session, batch.out, group)
                group, seen = [], set()
            group.append((data, received_at))
            seen.add(communique)
        await self._on_cpcs(session, batch.out, group)
        each = (time.perf_counter() - start) / len(items)
        for _ in items:
            self.metrics.check_seconds.observe(each)

    async def _on_cpcs(
        self,
        session: AsyncSession,
        out: list[tuple[str, str]],
        group: list[tuple[CpcPublished, datetime]],
    ) -> None:
        """:meth:`_on_cpc` for CPCs of distinct communiqués, with set-based reads and
        writes; findings, cases and events are staged in the order of ``group``."""
        revisions = {data.uid: _revision_of(data.uid) for data, _ in group}
        seen = await store.lock_communiques(
            session, [_communique_of(u) for u, r in revisions.items() if r is not None]
        )
        live: list[tuple[CpcPublished, datetime]] = []
        previous: dict[str, str | None] = {}
        latest: dict[str, tuple[int, str]] = {}
        firsts: dict[str, str] = {}
        for data, received_at in group:
            revision = revisions[data.uid]
            previous[data.uid] = None
            if revision is not None:
                communique = _communique_of(data.uid)
                seen_revision, seen_uid = seen[communique]
                if seen_revision > revision:
                    log.info("%s is older than a revision already checked: ignored", data.uid)
                    continue
                if seen_revision < revision:
                    latest[communique] = (revision, data.uid)
                    if seen_revision:
                        previous[data.uid] = seen_uid
                    elif revision > 1:
                        firsts[data.uid] = f"{communique}-1"
            live.append((data, received_at))
        await store.set_communiques(session, latest)
        if firsts:
            # Stored before revisions were tracked: only a first revision can be.
            stored = await store.existing_cpcs(session, firsts.values())
            previous.update({u: f for u, f in firsts.items() if f in stored})
        prevs = [p for p in previous.values() if p]
        old_citations = await store.citations_by_many(session, prevs)
        cited = {data.uid: cited_irccs(data.record) for data, _ in live}
        states = await store.lock_irccs(
            session,
            {i for c in cited.values() for i in c} | {i for c in old_citations.values() for i in c},
        )
        old_cpcs = await store.lock_cpcs(session, prevs)
        plans: list[_Plan] = []
        for data, received_at in live:
            prev = previous[data.uid]
            old = old_citations.get(prev, {}) if prev else {}
            old_cpc = old_cpcs.get(prev) if prev else None
            plans.append(
                _Plan(
                    data=data,
                    previous=prev,
                    cited=cited[data.uid],
                    # Grace for an unknown reference runs from when it was first named.
                    received_at=old_cpc["received_at"] if old_cpc else received_at,
                    citations={
                        ident: ev.Citation(
                            data.uid,
                            data.record,
                            reference,
                            old[ident].received_at if ident in old else received_at,
                        )
                        for ident, reference in cited[data.uid].items()
                    },
                    old_keys={ident: ev.citation_key(ident, prev or "") for ident in old},
                )
            )
        # Writes first: on SQLite they take the write lock before anything is read.
        await store.put_cpcs(session, [(p.data.uid, p.data.record, p.received_at) for p in plans])
        await store.put_citations_many(
            session, [(ident, c) for p in plans for ident, c in p.citations.items()]
        )
        rows = await store.findings_of(session, [k for p in plans for k in p.items_read()])
        checkpoint_states = await self.checkpoints.states_for(
            session, [p.data.record for p in plans]
        )

        def carried(key: str | None) -> dict[str, Any] | None:
            row = rows.get(key) if key else None
            return row.stored if row else None

        now = self.clock()
        events: list[CloudEvent[Any]] = []
        outbox: list[dict[str, Any]] = []
        created: list[dict[str, Any]] = []  # findings rows of items new to the store
        retired: list[str] = []
        for plan, checkpoints in zip(plans, checkpoint_states, strict=True):
            uid = plan.data.uid
            for ident, citation in plan.citations.items():
                self.metrics.citations_checked.inc()
                findings, due = ev.citation_findings(
                    citation, states.get(ident), now=now, grace=self.grace
                )
                key = ev.citation_key(ident, uid)
                events += self._stage(
                    session,
                    out,
                    key,
                    rows.get(key),
                    findings,
                    due,
                    carried=carried(plan.old_keys.get(ident)),
                    outbox=outbox,
                    created=created,
                )
            self.metrics.cpcs_checked.inc()
            findings, due = ev.cpc_findings(
                uid, plan.data.record, plan.received_at, checkpoints, now=now, grace=self.grace
            )
            cpc_key = ev.CPC_KEY_PREFIX + uid
            old_cpc_key = ev.CPC_KEY_PREFIX + plan.previous if plan.previous else None
            events += self._stage(
                session,
                out,
                cpc_key,
                rows.get(cpc_key),
                findings,
                due,
                carried=carried(old_cpc_key),
                outbox=outbox,
                created=created,
            )
            if plan.previous:
                # IRCCs the new revision no longer cites: their findings no longer hold.
                for ident, key in plan.old_keys.items():
                    if ident not in plan.cited:
                        events += self._stage(
                            session,
                            out,
                            key,
                            rows.get(key),
                            [],
                            None,
                            outbox=outbox,
                            created=created,
                        )
                retired += [*plan.old_keys.values(), str(old_cpc_key)]
        # One executemany, in staging order (the relay sends by id).
        await stage_many(session, OutboxRow, outbox)
        await store.insert_findings(session, created)
        await apply_finding_events(session, events)
        await store.retire_cpcs(session, prevs, retired)
        await session.flush()  # the next group's reads see this one's rows

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
        for event in self._stage(session, out, item, row, findings, due, carried=carried):
            await apply_finding_event(session, event)

    def _stage(
        self,
        session: AsyncSession,
        out: list[tuple[str, str]],
        item: str,
        row: FindingsRow | None,
        findings: list[Finding],
        due: datetime | None,
        *,
        carried: dict[str, Any] | None = None,
        outbox: list[dict[str, Any]] | None = None,
        created: list[dict[str, Any]] | None = None,
    ) -> list[CloudEvent[Any]]:
        """:meth:`_apply` without the cases: stage the outbox rows and the findings, and
        return the events whose cases the caller must apply, in order. Given ``outbox``
        and ``created``, the outbox rows and the findings rows of items not stored yet are
        collected there instead, for one bulk insert each."""
        change = ev.transition(row.stored if row else carried or {}, findings)
        for event in change.events:
            if outbox is None:
                stage(session, OutboxRow, self._topic, event, key=event.data.id)
            else:
                outbox.append(outbox_values(self._topic, event, key=event.data.id))
        out += [("flagged", r) for r in change.flagged] + [("cleared", r) for r in change.cleared]
        moved = row is None and bool(carried)
        stored = change.stored if change.events or moved else None
        if row is None and created is not None:
            values = store.new_findings(item, stored, due)
            if values is not None:
                created.append(values)
        else:
            store.save_findings(session, item, row, stored, due)
        return change.events

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
