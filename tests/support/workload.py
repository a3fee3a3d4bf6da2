"""A reproducible mix of IRCC, checkpoint and CPC events, with the findings it must raise.

The expected findings come from the pure rule engine applied to the final state, which is
what the stream processor must converge to whatever order the events arrive in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from services.monitor.domain import CheckpointState, IrccState, apply_ircc_event
from services.monitor.rules import evaluate
from shared.events import CloudEvent, new_event, topic_name
from shared.events.models import CpcPublished, DirectoryRecordPublished, IrccEvent
from tests.support.records import COMMERCIAL, NON_COMMERCIAL

HOLDERS = [f"T-HOLDER-{n}" for n in range(4)]


@dataclass
class Workload:
    """Events keyed for their topics, and the finding ids they must produce."""

    events: list[tuple[str, str, CloudEvent[Any]]] = field(default_factory=list)
    irccs: dict[str, IrccState] = field(default_factory=dict)
    checkpoints: dict[str, CheckpointState] = field(default_factory=dict)
    cpcs: list[tuple[str, dict[str, Any], datetime]] = field(default_factory=list)

    def expected(self) -> set[str]:
        """Finding ids once everything has arrived (grace never passes in these runs)."""
        out: set[str] = set()
        for uid, body, received in self.cpcs:
            for finding in evaluate(
                uid,
                body,
                irccs=self.irccs,
                checkpoints=self.checkpoints,
                received_at=received,
                now=received,
                grace=timedelta(hours=1),
            ):
                out.add(finding.id)
        return out

    async def produce(self, bootstrap: str, prefix: str, *, seed: int = 0) -> None:
        """Send every event, in a shuffled order, to the prefixed topics."""
        order = list(self.events)
        random.Random(seed).shuffle(order)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for topic, key, event in order:
                await producer.send(
                    topic_name(topic, prefix), event.to_json_bytes(), key=key.encode()
                )
            await producer.flush()
        finally:
            await producer.stop()


def _ircc_events(w: Workload, rng: random.Random, n: int, start: int) -> list[str]:
    identifiers = []
    for doc in range(start, start + n):
        ident = f"T-IRCC-{doc}"
        identifiers.append(ident)
        revisions = rng.choice([1, 1, 2, 3])
        revoked = rng.random() < 0.2
        for rev in range(1, revisions + 1):
            body: dict[str, Any] = {
                "header": {"identifier": ident, "schema": "absPermit", "languages": ["en"]},
                "government": {"identifier": "mx"},
                "dateOfIssuance": "2024-01-01",
                "dateOfExpiry": rng.choice(["2025-06-01", "2099-01-01"]),
                "usages": [{"identifier": rng.choice([COMMERCIAL, NON_COMMERCIAL])}],
                "entitiesToWhomPICGranted": [{"identifier": rng.choice(HOLDERS)}],
            }
            kind = "ircc.published" if rev == 1 else "ircc.amended"
            if revoked and rev == revisions:
                body["amendmentIntent"], kind = 1, "ircc.revoked"
            uid = f"ABSCH-IRCC-MX-{doc}-{rev}"
            data = IrccEvent(
                uid=uid,
                identifier=ident,
                document_id=doc,
                revision=rev,
                government="mx",
                record=body,
            )
            event = new_event(kind, source="registry", subject=uid, data=data)
            w.events.append(("absch.ircc.v1", f"ABSCH-IRCC-MX-{doc}", event))
            w.irccs[ident] = apply_ircc_event(
                w.irccs.get(ident), kind, data.model_dump(mode="json")
            )
    return identifiers


def _cpc_events(
    w: Workload, rng: random.Random, irccs: list[str], n: int, start: int, cp: str
) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for doc in range(start, start + n):
        cited = rng.sample(irccs, rng.choice([1, 1, 2, 3]))
        refs = []
        for ident in cited:
            pin = rng.choice([None, 1, w.irccs[ident].latest_revision])
            refs.append({"identifier": ident if pin is None else f"{ident}@{pin}"})
        body: dict[str, Any] = {
            "header": {
                "identifier": f"T-CPC-{doc}",
                "schema": "absCheckpointCommunique",
                "languages": ["en"],
            },
            "government": {"identifier": "de"},
            "absCheckpoints": [{"identifier": cp}],
            "absIRCCs": refs,
            "dateCollected": rng.choice(["2025-01-01", "2026-01-01"]),
            "description": {
                "en": rng.choice(["Basic research.", "Commercial product development."])
            },
            "personsAtCheckpoint": [{"identifier": rng.choice(HOLDERS)}],
        }
        uid = f"ABSCH-CPC-DE-{doc}-1"
        received = base + timedelta(seconds=doc)
        data = CpcPublished(
            uid=uid,
            identifier=f"T-CPC-{doc}",
            document_id=doc,
            revision=1,
            government="de",
            checkpoints=[cp],
            record=body,
        )
        event = new_event("cpc.published", source="checkpoint", subject=uid, data=data)
        event = event.model_copy(update={"time": received})
        w.events.append(("absch.cpc.v1", f"ABSCH-CPC-DE-{doc}", event))
        w.cpcs.append((uid, body, received))


def build(seed: int, *, irccs: int = 20, cpcs: int = 60, start: int = 1) -> Workload:
    """A workload: one checkpoint, ``irccs`` IRCCs with revisions, ``cpcs`` communiqués."""
    rng = random.Random(seed)
    w = Workload()
    cp = f"T-CP-{seed}"
    cp_data = DirectoryRecordPublished(
        uid=f"ABSCH-CP-DE-{seed}-1",
        schema_="absCheckpoint",
        identifier=cp,
        document_id=seed,
        revision=1,
        government="de",
        record={
            "header": {"identifier": cp, "schema": "absCheckpoint", "languages": ["en"]},
            "government": {"identifier": "de"},
        },
    )
    w.events.append(
        (
            "absch.directory.v1",
            f"ABSCH-CP-DE-{seed}",
            new_event(
                "directory.record.published", source="registry", subject=cp_data.uid, data=cp_data
            ),
        )
    )
    w.checkpoints[cp] = CheckpointState(cp, "de", True)
    identifiers = _ircc_events(w, rng, irccs, start)
    _cpc_events(w, rng, identifiers, cpcs, start, cp)
    return w
