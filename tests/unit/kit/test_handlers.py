"""The kit's directory view and the monitor's handler table, run through the kit's harness
(no broker).

Each feed is one consumed batch: the handlers' writes, their outbox rows and the offset
commit together, as in the services; the broker tests stay in tests/integration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import MetaData, delete

from services.monitor.adapters.tables import Base as MonitorBase
from services.monitor.adapters.tables import (
    CaseRow,
    CitationRow,
    CommuniqueRow,
    CpcRow,
    FindingsRow,
)
from services.monitor.adapters.tables import OutboxRow as MonitorOutbox
from services.monitor.bootstrap import CHECKED_TYPES, utc_now
from services.monitor.metrics import MonitorMetrics
from services.monitor.worker import MonitorWorker
from shared.events import CloudEvent, new_event
from shared.events.models import CpcAmended, DirectoryRecordPublished, DirectoryRecordWithdrawn
from shared.kafka.producer import EventProducer
from shared.kit.directory import DIRECTORY_TYPES, DirectoryView, directory_table
from shared.kit.outbox import OutboxRelay
from shared.kit.testing import HandlerHarness
from tests.integration.monitor.checking import (
    MonitorDirectory,
    checkpoint_published,
    cpc_event,
    ircc_event,
)

# -- the directory view: what every service knows of the published directory ---------------

CP = "T-CP-1"


def directory_published(
    identifier: str, revision: int, gov: str = "de", schema: str = "absCheckpoint"
) -> CloudEvent[Any]:
    data = DirectoryRecordPublished(
        uid=f"ABSCH-CP-{gov.upper()}-7-{revision}",
        schema_=schema,
        identifier=identifier,
        document_id=7,
        revision=revision,
        government=gov,
        record={
            "header": {"identifier": identifier, "schema": schema, "languages": ["en"]},
            "government": {"identifier": gov},
            "name": {"en": f"Checkpoint revision {revision}"},
        },
    )
    return new_event("directory.record.published", source="registry", subject=data.uid, data=data)


def directory_withdrawn(identifier: str, gov: str = "de") -> CloudEvent[Any]:
    data = DirectoryRecordWithdrawn(
        uid=f"ABSCH-CP-{gov.upper()}-7",
        schema_="absCheckpoint",
        identifier=identifier,
        document_id=7,
        government=gov,
    )
    return new_event("directory.record.withdrawn", source="registry", subject=data.uid, data=data)


@dataclass
class Directory:
    harness: HandlerHarness
    view: DirectoryView


@pytest.fixture
async def checkpoint() -> AsyncIterator[Directory]:
    metadata = MetaData()
    view = DirectoryView(directory_table(metadata))
    handlers = dict.fromkeys(DIRECTORY_TYPES, view.on_event)
    async with HandlerHarness(metadata, handlers) as harness:
        yield Directory(harness, view)


async def known(d: Directory) -> dict[str, tuple[int, str | None, bool, Any]]:
    """Checkpoints as stored, checked against the view's memory and a fresh load."""
    stored = {
        e.identifier: (e.revision, e.government, e.published, e.record.get("name"))
        for e in d.view.entries("absCheckpoint")
    }
    reloaded = DirectoryView(d.view.table)
    await reloaded.load(d.harness.sessions)
    assert {e.identifier: e for e in reloaded.entries()} == {
        e.identifier: e for e in d.view.entries()
    }
    return stored


async def test_checkpoint_a_published_checkpoint_is_known(checkpoint: Directory) -> None:
    await checkpoint.harness.feed(directory_published(CP, 1))
    await checkpoint.harness.feed(directory_published("T-NFP-1", 1, schema="focalPoint"))
    assert await known(checkpoint) == {CP: (1, "de", True, {"en": "Checkpoint revision 1"})}


async def test_checkpoint_an_older_revision_never_wins(checkpoint: Directory) -> None:
    await checkpoint.harness.feed(directory_published(CP, 2, gov="fr"), directory_published(CP, 1))
    await checkpoint.harness.feed(directory_published(CP, 1))
    assert await known(checkpoint) == {CP: (2, "fr", True, {"en": "Checkpoint revision 2"})}
    await checkpoint.harness.feed(directory_published(CP, 3))
    assert (await known(checkpoint))[CP][:3] == (3, "de", True)


async def test_checkpoint_a_withdrawal_unpublishes(checkpoint: Directory) -> None:
    await checkpoint.harness.feed(directory_published(CP, 2))
    await checkpoint.harness.feed(directory_withdrawn(CP), directory_withdrawn("T-CP-UNSEEN"))
    assert await known(checkpoint) == {CP: (2, "de", False, {"en": "Checkpoint revision 2"})}
    await checkpoint.harness.feed(directory_published(CP, 3))
    assert (await known(checkpoint))[CP][:3] == (3, "de", True)


async def test_checkpoint_a_withdrawal_holds_against_a_replay_of_its_revision(
    checkpoint: Directory,
) -> None:
    await checkpoint.harness.feed(directory_published(CP, 1), directory_withdrawn(CP))
    await checkpoint.harness.feed(
        directory_published(CP, 1)
    )  # another instance reading from the start
    assert (await known(checkpoint))[CP][:3] == (1, "de", False)


# -- monitor: the checking consumer flags and clears discrepancies --------------------------


@dataclass
class Monitor:
    harness: HandlerHarness
    view: MonitorDirectory
    registry: CollectorRegistry

    def counted(self, name: str, rule: str) -> float:
        return self.registry.get_sample_value(name, {"rule": rule}) or 0.0

    async def cases(self) -> dict[str, tuple[str, str, int]]:
        return {c.id: (c.rule, c.status, len(c.history)) for c in await self.harness.rows(CaseRow)}

    async def findings(self) -> dict[str, dict[str, Any]]:
        rows = await self.harness.rows(FindingsRow)
        return {fid: entry for row in rows for fid, entry in row.stored.items()}


@pytest.fixture
async def monitor() -> AsyncIterator[Monitor]:
    """The checking consumer's table as ``services/monitor/bootstrap.py`` wires it, on the
    harness's database; the relay is never started (tests read the outbox table)."""
    registry = CollectorRegistry()
    metrics = MonitorMetrics(registry)
    directory_table(MonitorBase.metadata)  # the kit's view keeps the directory here
    async with HandlerHarness(MonitorBase.metadata, topic="t.absch.cpc.v1") as harness:
        producer = EventProducer("127.0.0.1:9", client_id="test", metrics=metrics.plumbing)
        relay = OutboxRelay(harness.sessions, MonitorOutbox, producer, metrics.plumbing)
        view = MonitorDirectory(harness.sessions)
        worker = MonitorWorker(
            sessions=harness.sessions,
            relay=relay,
            metrics=metrics,
            checkpoints=view.checkpoints,
            clock=utc_now,
            prefix="t.",
            grace_seconds=0,
            recheck_interval=3600.0,
        )
        view.listeners.append(worker.recheck_checkpoint)
        harness.use(dict.fromkeys(CHECKED_TYPES, worker.on_event_tx))
        await view.apply(checkpoint_published(CP))
        yield Monitor(harness, view, registry)


async def test_monitor_an_unknown_ircc_is_flagged_then_cleared_once(monitor: Monitor) -> None:
    h = monitor.harness
    cpc, ircc = cpc_event(1, irccs=[7], checkpoints=[CP]), ircc_event(7)

    await h.feed(cpc, key="ABSCH-CPC-DE-1")
    (flagged,) = await h.staged(MonitorOutbox)
    assert flagged.type == "discrepancy.flagged"
    assert flagged.data.rule == "IRCC_UNKNOWN"
    assert flagged.data.cpc_uid == cpc.data.uid
    assert flagged.data.ircc_uid == "T-IRCC-7"
    case_id = flagged.data.id
    assert await monitor.cases() == {case_id: ("IRCC_UNKNOWN", "open", 1)}
    assert {fid: e["active"] for fid, e in (await monitor.findings()).items()} == {case_id: True}
    assert monitor.counted("monitor_discrepancies_flagged_total", "IRCC_UNKNOWN") == 1

    await h.feed(ircc, key="ABSCH-IRCC-MX-7")
    staged = await h.staged(MonitorOutbox)
    assert [(e.type, e.data.id, e.data.status) for e in staged] == [
        ("discrepancy.flagged", case_id, "open"),
        ("discrepancy.cleared", case_id, "cleared"),
    ]
    assert await monitor.cases() == {case_id: ("IRCC_UNKNOWN", "cleared", 2)}
    assert {fid: e["active"] for fid, e in (await monitor.findings()).items()} == {case_id: False}
    assert monitor.counted("monitor_discrepancies_cleared_total", "IRCC_UNKNOWN") == 1

    # The same events again (a re-read topic, a duplicate publish): nothing changes.
    await h.feed(cpc, key="ABSCH-CPC-DE-1")
    await h.feed(ircc, cpc)
    assert await h.staged(MonitorOutbox) == staged
    assert await monitor.cases() == {case_id: ("IRCC_UNKNOWN", "cleared", 2)}
    assert monitor.counted("monitor_discrepancies_flagged_total", "IRCC_UNKNOWN") == 1
    assert await h.stored_offset() == 5


async def test_monitor_a_redelivered_cpc_flags_nothing_twice(monitor: Monitor) -> None:
    h = monitor.harness
    cpc = cpc_event(2, irccs=[8], checkpoints=[CP])
    await h.feed(cpc, cpc)  # twice in one batch
    await h.feed(cpc)
    assert [e.type for e in await h.staged(MonitorOutbox)] == ["discrepancy.flagged"]
    assert [status for _, status, _ in (await monitor.cases()).values()] == ["open"]


async def test_monitor_a_known_ircc_raises_nothing(monitor: Monitor) -> None:
    h = monitor.harness
    await h.feed(ircc_event(9), cpc_event(3, irccs=[9], checkpoints=[CP]))
    assert await h.staged(MonitorOutbox) == []
    assert await monitor.cases() == {}


# -- monitor: an amended CPC is checked on its latest revision ------------------------------

GONE = "T-CP-GONE"  # cited, but no checkpoint the directory knows


def cpc_amended(
    doc: int, revision: int, *, irccs: list[int], checkpoints: list[str]
) -> CloudEvent[Any]:
    """Revision ``revision`` of :func:`cpc_event`'s communiqué ``doc``, as the checkpoint
    service amends it."""
    record = cpc_event(doc, irccs=irccs, checkpoints=checkpoints).data.record
    uid = f"ABSCH-CPC-DE-{doc}-{revision}"
    data = CpcAmended(
        uid=uid,
        identifier=record["header"]["identifier"],
        document_id=doc,
        revision=revision,
        government="de",
        checkpoints=checkpoints,
        record=record,
        reason={"en": "Corrected what the communiqué cites"},
        previous_uid=f"ABSCH-CPC-DE-{doc}-{revision - 1}",
        changed=["absCheckpoints", "absIRCCs"],
    )
    return new_event("cpc.amended", source="checkpoint", subject=uid, data=data)


def raised(events: list[CloudEvent[Any]]) -> list[tuple[str, str, str | None, str]]:
    """(type, rule, IRCC uid, CPC uid) of discrepancy events."""
    return [(e.type, e.data.rule, e.data.ircc_uid, e.data.cpc_uid) for e in events]


async def amendment_world(monitor: Monitor) -> dict[str, str]:
    """IRCC 21 revoked, 22 and 23 unknown; revision 1 of CPC 20 cites 21, 22 and an
    unknown checkpoint. Returns the case ids by rule (and IRCC)."""
    h = monitor.harness
    await h.feed(ircc_event(21), ircc_event(21, 2, "ircc.revoked"), key="ABSCH-IRCC-MX-21")
    await h.feed(cpc_event(20, irccs=[21, 22], checkpoints=[CP, GONE]), key="ABSCH-CPC-DE-20")
    first = "ABSCH-CPC-DE-20-1"
    assert sorted(raised(await h.staged(MonitorOutbox))) == [
        ("discrepancy.flagged", "CHECKPOINT_UNKNOWN", None, first),
        ("discrepancy.flagged", "IRCC_REVOKED", "ABSCH-IRCC-MX-21", first),
        ("discrepancy.flagged", "IRCC_UNKNOWN", "T-IRCC-22", first),
    ]
    return {f"{e.data.rule} {e.data.ircc_uid}": e.data.id for e in await h.staged(MonitorOutbox)}


async def test_monitor_an_amendment_clears_what_no_longer_holds_and_flags_what_is_new(
    monitor: Monitor,
) -> None:
    h = monitor.harness
    ids = await amendment_world(monitor)
    before = len(await h.staged(MonitorOutbox))
    second = cpc_amended(20, 2, irccs=[21, 23], checkpoints=[CP])

    await h.feed(second, key="ABSCH-CPC-DE-20")
    first, latest = "ABSCH-CPC-DE-20-1", "ABSCH-CPC-DE-20-2"
    staged = await h.staged(MonitorOutbox)
    # The revoked IRCC is still cited: its finding holds, nothing is said again.
    assert sorted(raised(staged[before:])) == [
        ("discrepancy.cleared", "CHECKPOINT_UNKNOWN", None, first),
        ("discrepancy.cleared", "IRCC_UNKNOWN", "T-IRCC-22", first),
        ("discrepancy.flagged", "IRCC_UNKNOWN", "T-IRCC-23", latest),
    ]
    new_id = next(e.data.id for e in staged[before:] if e.data.ircc_uid == "T-IRCC-23")
    cases = await monitor.cases()
    assert cases == {
        ids["IRCC_REVOKED ABSCH-IRCC-MX-21"]: ("IRCC_REVOKED", "open", 1),
        ids["IRCC_UNKNOWN T-IRCC-22"]: ("IRCC_UNKNOWN", "cleared", 2),
        ids["CHECKPOINT_UNKNOWN None"]: ("CHECKPOINT_UNKNOWN", "cleared", 2),
        new_id: ("IRCC_UNKNOWN", "open", 1),
    }
    active = {fid for fid, e in (await monitor.findings()).items() if e["active"]}
    assert active == {ids["IRCC_REVOKED ABSCH-IRCC-MX-21"], new_id}
    # Only the latest revision is kept to be looked at again.
    assert {r.cpc_uid for r in await h.rows(CpcRow)} == {latest}
    assert {(r.ircc, r.cpc_uid) for r in await h.rows(CitationRow)} == {
        ("T-IRCC-21", latest),
        ("T-IRCC-23", latest),
    }
    assert {r.item for r in await h.rows(FindingsRow)} == {
        f"T-IRCC-21|{latest}",
        f"T-IRCC-23|{latest}",
        f"cpc:{latest}",
    }

    # The old revision's citation of IRCC 22, cited by nobody else, raises nothing.
    await h.feed(ircc_event(22), ircc_event(22, 2, "ircc.revoked"), key="ABSCH-IRCC-MX-22")
    assert len(await h.staged(MonitorOutbox)) == len(staged)
    # The new revision's citation is live.
    await h.feed(ircc_event(23), key="ABSCH-IRCC-MX-23")
    assert raised((await h.staged(MonitorOutbox))[len(staged) :]) == [
        ("discrepancy.cleared", "IRCC_UNKNOWN", "T-IRCC-23", latest)
    ]
    # Redelivered, or late: the first revision and the amendment change nothing.
    settled = await h.staged(MonitorOutbox)
    await h.feed(cpc_event(20, irccs=[21, 22], checkpoints=[CP, GONE]), second)
    assert await h.staged(MonitorOutbox) == settled
    assert {r.cpc_uid for r in await h.rows(CpcRow)} == {latest}
    assert monitor.counted("monitor_discrepancies_flagged_total", "IRCC_UNKNOWN") == 2


async def test_monitor_a_cpc_checked_before_revisions_were_tracked_is_retired_too(
    monitor: Monitor,
) -> None:
    h = monitor.harness
    ids = await amendment_world(monitor)
    async with h.sessions() as session, session.begin():  # a database from before
        await session.execute(delete(CommuniqueRow))

    await h.feed(cpc_amended(20, 2, irccs=[21], checkpoints=[CP]), key="ABSCH-CPC-DE-20")
    cases = await monitor.cases()
    assert {fid: status for fid, (_, status, _) in cases.items()} == {
        ids["IRCC_REVOKED ABSCH-IRCC-MX-21"]: "open",
        ids["IRCC_UNKNOWN T-IRCC-22"]: "cleared",
        ids["CHECKPOINT_UNKNOWN None"]: "cleared",
    }
    assert {r.cpc_uid for r in await h.rows(CpcRow)} == {"ABSCH-CPC-DE-20-2"}
    assert [(r.communique, r.revision) for r in await h.rows(CommuniqueRow)] == [
        ("ABSCH-CPC-DE-20", 2)
    ]
