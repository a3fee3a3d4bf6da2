"""A poll batch checked together gives exactly what the per-event path gives (issue 15).

The consumer hands a batch of CPC events to ``on_event_tx`` in one transaction, and the
worker checks them together at the commit with set-based statements. The same shuffled
workload (IRCCs published, amended, revoked; CPCs citing known, unknown and revoked
IRCCs and unknown checkpoints; amendments, redeliveries, revisions arriving late) goes
once through ``on_event`` (one transaction per event, the per-event path) and once in
batches of random sizes; findings, cases and outbox events must be the same, on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from services.monitor.adapters.tables import CitationRow, CommuniqueRow, CpcRow
from shared.events import CloudEvent, new_event
from shared.events.models import CpcAmended
from shared.kit.consumer import Delivery, Tx
from tests.integration.monitor.checking import (
    Checking,
    checking,
    checkpoint_published,
    cpc_event,
    ircc_event,
)

CP, GONE = "T-CP-1", "T-CP-GONE"  # a known checkpoint, and one the directory never knew
NOW = datetime.now(UTC) + timedelta(days=1)  # one clock for both runs, after every event


def cpc_amended(
    doc: int, revision: int, *, irccs: list[int], checkpoints: list[str]
) -> CloudEvent[Any]:
    """Revision ``revision`` of :func:`cpc_event`'s communiqué ``doc``."""
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
        changed=["absIRCCs"],
    )
    return new_event("cpc.amended", source="checkpoint", subject=uid, data=data)


def workload(rng: random.Random) -> list[CloudEvent[Any]]:
    """IRCC and CPC events in a shuffled order. IRCCs 1-6 are published (some amended or
    revoked), 7-9 never are; CPCs cite 0-3 of them, some an unknown checkpoint; some are
    amended once or twice, and a few events come twice."""
    events: list[CloudEvent[Any]] = []
    for doc in range(1, 7):
        events.append(ircc_event(doc))
        kind = rng.choice(["ircc.amended", "ircc.revoked", None])
        if kind:
            events.append(ircc_event(doc, 2, kind))

    def cites() -> dict[str, Any]:
        return {
            "irccs": rng.sample(range(1, 10), rng.randint(0, 3)),
            "checkpoints": [CP, GONE] if rng.random() < 0.3 else [CP],
        }

    for doc in range(1, 16):
        events.append(cpc_event(doc, **cites()))
        for revision in range(2, 2 + rng.choice([0, 0, 1, 2])):
            events.append(cpc_amended(doc, revision, **cites()))
    events += rng.sample(events, 4)  # redeliveries
    rng.shuffle(events)
    return events


async def outcome(mon: Checking) -> dict[str, Any]:
    """What a run leaves: outbox events (in order), cases, findings and the stored state.
    Event times are left out: each run stamps its own events when it makes them."""
    cases = {
        c.id: (
            c.rule,
            c.status,
            c.cpc_uid,
            c.ircc_uid,
            c.evidence,
            c.last_event_id,
            [{k: v for k, v in h.items() if k != "at"} for h in c.history],
        )
        for c in (await mon.cases()).values()
    }
    async with mon.sessions() as session:
        cpcs = sorted(await session.scalars(select(CpcRow.cpc_uid)))
        citations = sorted((r.ircc, r.cpc_uid) for r in await session.scalars(select(CitationRow)))
        communiques = sorted(
            (r.communique, r.revision, r.cpc_uid)
            for r in await session.scalars(select(CommuniqueRow))
        )
    return {
        "events": [(e.id, e.type, e.data.model_dump()) for e in await mon.staged()],
        "cases": cases,
        "findings": await mon.findings(),
        "state": (cpcs, citations, communiques),
    }


async def in_batches(mon: Checking, events: list[CloudEvent[Any]], rng: random.Random) -> None:
    """Hand ``events`` to ``on_event_tx`` as the consumer does, in batches of random size
    (one transaction each, hooks after the commit)."""
    i = 0
    while i < len(events):
        batch = events[i : i + rng.choice([1, 2, 5, 17, 60])]
        async with mon.sessions() as session, session.begin():
            tx = Tx(session)
            for n, event in enumerate(batch):
                await mon.worker.on_event_tx(tx, event, Delivery("t", 0, i + n, None))
        for hook in tx.hooks:
            hook()
        i += len(batch)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_batches_give_what_one_event_at_a_time_gives(db_url: Any, seed: int) -> None:
    events = workload(random.Random(seed))
    results = []
    for name in ("one", "batched"):
        async with checking(await db_url(f"m{name}"), grace_seconds=0, clock=lambda: NOW) as mon:
            await mon.view.apply(checkpoint_published(CP))
            if name == "one":
                await mon.feed(*events)
            else:
                await in_batches(mon, events, random.Random(seed))
            results.append(await outcome(mon))
    one, batched = results
    assert len(one["events"]) > 10  # the workload raises and clears enough to mean something
    assert {r for r, *_ in one["cases"].values()} >= {
        "IRCC_UNKNOWN",
        "IRCC_REVOKED",
        "CHECKPOINT_UNKNOWN",
    }
    assert batched == one
