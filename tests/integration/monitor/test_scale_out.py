"""Two workers give the rule engine's answer as one does; a restarted worker remembers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from services.monitor.domain import apply_ircc_event
from shared.events import new_event, topic_name
from shared.events.models import IrccEvent
from tests.support.kafka import TopicReader
from tests.support.monitor import active_findings, running_monitor
from tests.support.poll import eventually
from tests.support.workload import Workload, build

FAST: dict[str, Any] = {"unknown_grace_seconds": 3600.0, "recheck_interval_seconds": 0.5}


async def _converge(kafka: str, prefix: str, expected: set[str], timeout: float = 120) -> Any:
    async with TopicReader(kafka, topic_name("absch.discrepancy.v1", prefix)) as reader:
        try:
            await reader.read_until(lambda evs: active_findings(evs) == expected, timeout=timeout)
        except AssertionError:
            raise AssertionError(_difference(reader, expected)) from None
    return reader


def _difference(reader: TopicReader, expected: set[str]) -> str:
    """Which findings differ, and the events each had (partition@offset, type, time)."""
    active = active_findings(reader.events)
    lines = [
        f"{len(reader.events)} events; missing {sorted(expected - active)}, "
        f"extra {sorted(active - expected)}"
    ]
    for fid in sorted(expected ^ active):
        history = [
            f"{r.partition}@{r.offset} {e.type} {e.time.isoformat()}"
            for r, e in zip(reader.raw, reader.events, strict=True)
            if getattr(e.data, "id", None) == fid
        ]
        lines.append(f"  {fid}: {history or 'no event'}")
    return "\n".join(lines)


async def test_two_workers_give_the_same_results_as_one(
    kafka_bootstrap: str, db_url: Any, tmp_path: Path
) -> None:
    workload = build(seed=7)
    expected = workload.expected()
    assert len(expected) > 20  # the workload exercises several rules

    one = "t1w-" + tmp_path.name[-8:] + "."
    await workload.produce(kafka_bootstrap, one, seed=1)
    async with running_monitor(kafka=kafka_bootstrap, prefix=one, db=await db_url("m1"), **FAST):
        single = await _converge(kafka_bootstrap, one, expected)

    two = "t2w-" + tmp_path.name[-8:] + "."
    shared_db = await db_url("m2")
    async with (
        running_monitor(kafka=kafka_bootstrap, prefix=two, db=shared_db, **FAST) as (_, app_a),
        running_monitor(kafka=kafka_bootstrap, prefix=two, db=shared_db, **FAST) as (_, app_b),
    ):

        def split() -> list[Any] | None:
            owned = [app.state.checking.assignment() for app in (app_a, app_b)]
            return owned if all(owned) else None

        # Both in the group before the first event, so the work is really shared.
        owned = await eventually(split, timeout=60, what="both workers hold input partitions")
        await workload.produce(kafka_bootstrap, two, seed=2)  # another arrival order
        pair = await _converge(kafka_bootstrap, two, expected)
    assert not owned[0] & owned[1]
    assert active_findings(single.events) == active_findings(pair.events) == expected


def _revoke(workload: Workload, identifiers: list[str]) -> Workload:
    extra = Workload(
        irccs=dict(workload.irccs), checkpoints=workload.checkpoints, cpcs=list(workload.cpcs)
    )
    for ident in identifiers:
        state = workload.irccs[ident]
        rev = state.latest_revision + 1
        body = {**state.latest(), "amendmentIntent": 1, "amendmentDescription": {"en": "revoked"}}
        uid = f"ABSCH-IRCC-MX-{state.document_id}-{rev}"
        data = IrccEvent(
            uid=uid,
            identifier=ident,
            document_id=state.document_id,
            revision=rev,
            government="mx",
            record=body,
        )
        extra.events.append(
            (
                "absch.ircc.v1",
                uid.rsplit("-", 1)[0],
                new_event("ircc.revoked", source="registry", subject=uid, data=data),
            )
        )
        extra.irccs[ident] = apply_ircc_event(state, "ircc.revoked", data.model_dump(mode="json"))
    return extra


async def test_a_restarted_worker_rebuilds_its_state_and_does_not_re_raise(
    kafka_bootstrap: str, db_url: Any, tmp_path: Path
) -> None:
    prefix = "trs-" + tmp_path.name[-8:] + "."
    workload = build(seed=11)
    first = workload.expected()
    await workload.produce(kafka_bootstrap, prefix)
    db = await db_url("monitor")
    async with running_monitor(kafka=kafka_bootstrap, prefix=prefix, db=db, **FAST):
        await _converge(kafka_bootstrap, prefix, first)

    live = [i for i, s in workload.irccs.items() if not s.revoked][:5]
    later = _revoke(workload, live)
    final = later.expected()
    assert final != first
    async with running_monitor(kafka=kafka_bootstrap, prefix=prefix, db=db, **FAST):
        await later.produce(kafka_bootstrap, prefix)
        reader = await _converge(kafka_bootstrap, prefix, final)
    flags = Counter(e.data.id for e in reader.events if e.type == "discrepancy.flagged")
    # Re-evaluating old CPCs needed the stored citations; findings that held before the
    # restart were not raised a second time.
    assert {fid for fid, n in flags.items() if n > 1} == set()
    assert final - first, "the revocations raised new findings for old communiqués"
