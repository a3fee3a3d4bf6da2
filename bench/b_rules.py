"""rules: the monitor's pure code on one core, in this process.

A seeded, representative mix: 200 IRCCs (60% valid, 15% amended, 10% revoked, 10% expired,
5% with confidential PIC holders or usages), records shaped like the published ABSCH
documentation example (sample 02, confidential parts stripped), and 1,000 CPCs: 90% on the
IRCC branch citing 1-3 IRCCs (pinned to @1, to the latest revision, or unpinned; 5% of
citations unknown), commercial or research descriptions in several languages, a PIC holder or
a stranger at the checkpoint; 10% on the no-IRCC branch with or without evidence. Each
function runs over the whole mix repeatedly for a fixed time; the rate is items per second.

Also measured: ``MonitorWorker.on_event`` through a real database (a scratch SQLite file,
and a scratch PostgreSQL database when ``BENCH_PG_URL`` or ``DATABASE_URL_TEST_PG`` is set)
for the mix's IRCC and CPC events, and for one ``ircc.amended`` as a function of the number
of CPCs citing that IRCC (each is re-checked); and a cProfile of ``evaluate`` over the mix.
"""

from __future__ import annotations

import cProfile
import pstats
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from bench.common import VAR, Outcome, Table, postgres_url, progress
from services.monitor import evaluation as ev
from services.monitor.adapters.tables import Base, OutboxRow
from services.monitor.directory import Checkpoints
from services.monitor.domain import CheckpointState, IrccState, apply_ircc_event
from services.monitor.metrics import MonitorMetrics
from services.monitor.rules import evaluate
from services.monitor.worker import MonitorWorker
from shared.db import create_engine, create_schema, session_factory
from shared.events import CloudEvent, decode_event, new_event
from shared.events.models import CpcPublished, IrccEvent
from shared.kafka.producer import EventProducer
from shared.kit.consumer import Delivery
from shared.kit.directory import Entry
from shared.kit.outbox import OutboxRelay
from tools.scratch_db import scratch_databases

CHECKPOINT = "3E387C20-E70C-997B-EABB-BC4C9A1E142F"
COMMERCIAL = "5E833A3F-87D1-4ADD-8701-9F1B76383017"
NON_COMMERCIAL = "60EA2F49-A9DD-406F-921A-8A1C9AA8DFDD"
HOLDERS = [f"DECLARE-ORGANISATION_{n}_20240709020251617" for n in range(8)]
DESCRIPTIONS = [
    {"en": "<div><!--block-->Basic research on soil bacteria, non-commercial.</div>"},
    {"en": "Development of a commercial product for sale in 2026."},
    {"fr": "Recherche fondamentale sans but commercial."},
    {"es": "Desarrollo de productos cosméticos para su venta."},
    {"en": "Pre-commercialisation stage: screening of extracts.", "fr": "Criblage."},
]


def ircc_record(ident: str, rng: random.Random, kind: str) -> dict[str, Any]:
    """An IRCC revision as the registry publishes it (sample 02 shape, no confidential parts)."""
    body: dict[str, Any] = {
        "header": {"identifier": ident, "schema": "absPermit", "languages": ["en"]},
        "government": {"identifier": "mx"},
        "absCNA": {"identifier": "C84C7E6C-134C-F1B1-9A3B-B7443F135239@2"},
        "title": {"en": f"Permit {ident[-6:]} for access to soil microorganisms"},
        "referenceToNationalPermit": {"en": f"SEMARNAT/{rng.randint(1000, 9999)}/2024"},
        "dateOfIssuance": "2024-07-02",
        "providers": [{"identifier": "DECLARE-ORGANISATION_3386_20240709020251617@1"}],
        "entitiesToWhomPICGranted": [{"identifier": rng.choice(HOLDERS) + "@1"}],
        "subjectMatter": {"en": "<div><!--block-->Soil bacteria from the highlands</div>"},
        "keywords": [{"identifier": "357DBB22-6A6C-4C49-BA1F-037320B09247"}],
        "specimens": [
            {"url": "https://example.org/specimens", "name": "Specimens", "language": "en"}
        ],
        "taxonomies": [{"url": "https://example.org/taxa", "name": "Taxa", "language": "en"}],
        "picGranted": True,
        "picInformation": {"en": "<div><!--block-->PIC granted by the community</div>"},
        "picDocuments": [{"url": "https://example.org/pic.pdf", "name": "PIC", "language": "en"}],
        "matEstablished": True,
        "matInformation": {"en": "<div><!--block-->MAT signed 2024-06-30</div>"},
        "matDocuments": [{"url": "https://example.org/mat.pdf", "name": "MAT", "language": "en"}],
        "usages": [{"identifier": rng.choice([COMMERCIAL, NON_COMMERCIAL, NON_COMMERCIAL])}],
        "usagesDescription": {"en": "<div><!--block-->Research and development</div>"},
        "thirdPartyTransferCondition": {"en": "<div><!--block-->Only with consent</div>"},
        "dateOfExpiry": "2024-06-30" if kind == "expired" else "2099-01-01",
        "permitFiles": [
            {"url": "https://example.org/permit.pdf", "name": "Permit", "language": "en"}
        ],
    }
    if kind == "confidential":
        del body["entitiesToWhomPICGranted"]
        body["entitiesToWhomPICGrantedConfidential"] = True
        del body["usages"]
        body["usagesConfidential"] = True
    return body


def ircc_events(n: int, rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """(event type, IrccEvent payload) for n IRCCs, in publication order."""
    kinds = ["valid"] * 60 + ["amended"] * 15 + ["revoked"] * 10 + ["expired"] * 10
    kinds += ["confidential"] * 5
    events = []
    for doc in range(1, n + 1):
        ident = f"CB51626B-CF45-2AA0-3A24-{doc:012d}"
        kind = kinds[doc % len(kinds)]
        revisions = 2 if kind in ("amended", "revoked") else 1
        for rev in range(1, revisions + 1):
            body = ircc_record(ident, rng, kind)
            etype = "ircc.published" if rev == 1 else "ircc.amended"
            data: dict[str, Any] = {
                "uid": f"ABSCH-IRCC-MX-{doc}-{rev}",
                "identifier": ident,
                "document_id": doc,
                "revision": rev,
                "government": "mx",
                "record": body,
            }
            if rev > 1:
                data["reason"] = {"en": "conditions changed"}
                body["amendmentDescription"] = {"en": "conditions changed"}
            if kind == "revoked" and rev == revisions:
                etype = "ircc.revoked"
                body["amendmentIntent"] = 1
            events.append((etype, data))
    return events


def build_mix(seed: int = 7, irccs: int = 200, cpcs: int = 1000) -> dict[str, Any]:
    rng = random.Random(seed)
    events = ircc_events(irccs, rng)
    states: dict[str, IrccState] = {}
    for etype, data in events:
        states[data["identifier"]] = apply_ircc_event(states.get(data["identifier"]), etype, data)
    idents = list(states)
    checkpoints = {
        "3E387C20-E70C-997B-EABB-BC4C9A1E142F": CheckpointState(
            "3E387C20-E70C-997B-EABB-BC4C9A1E142F", "de", True
        )
    }
    received = datetime(2026, 1, 1, tzinfo=UTC)
    mix = []
    for doc in range(1, cpcs + 1):
        body: dict[str, Any] = {
            "header": {
                "identifier": f"63B9CA56-9D43-E877-2A96-{doc:012d}",
                "schema": "absCheckpointCommunique",
                "languages": ["en"],
            },
            "government": {"identifier": "de"},
            "title": {"en": "Due diligence declaration"},
            "absCheckpoints": [{"identifier": "3E387C20-E70C-997B-EABB-BC4C9A1E142F@1"}],
            "description": rng.choice(DESCRIPTIONS),
            "personsAtCheckpoint": [{"identifier": rng.choice(HOLDERS) + "@1"}],
            "dateCollected": rng.choice(["2024-03-01", "2025-10-26"]),
            "relevantInformation": {"en": "<div><!--block-->Test Info</div>"},
        }
        if rng.random() < 0.1:
            body["absIRCCsNotAvailable"] = True
            body["sourceCountries"] = [{"identifier": "mx"}]
            body["subjectMatter"] = {"en": "Yeasts"}
            if rng.random() < 0.5:
                body["evidenceOfPIC"] = {"en": "Permit 12/2024"}
        else:
            refs = []
            for ident in rng.sample(idents, rng.choice([1, 1, 1, 2, 3])):
                if rng.random() < 0.05:
                    ident = f"UNKNOWN-{doc}-{ident[-4:]}"
                    refs.append({"identifier": ident})
                    continue
                pin = rng.choice([None, 1, states[ident].latest_revision])
                refs.append({"identifier": ident if pin is None else f"{ident}@{pin}"})
            body["absIRCCs"] = refs
            body["absIRCCsNotAvailable"] = False
            if rng.random() < 0.2:
                body["sourceCountries"] = [{"identifier": rng.choice(["mx", "br"])}]
        mix.append((f"ABSCH-CPC-DE-{doc}-1", body))
    return {
        "events": events,
        "states": states,
        "checkpoints": checkpoints,
        "cpcs": mix,
        "received": received,
        "now": received + timedelta(hours=1),
        "grace": timedelta(minutes=10),
    }


def rate(fn: Callable[[], int], seconds: float) -> tuple[float, float]:
    """(items per CPU second of this thread, items per wall second) of ``fn``, which returns
    how many items one call handled. CPU time is the figure that other processes on the
    machine do not disturb (much); wall time is what a loop would see."""
    fn()  # warm caches (regexes, lazy imports)
    items = 0
    c0, t0 = time.thread_time(), time.perf_counter()
    while True:
        items += fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            cpu = max(time.thread_time() - c0, 1e-9)
            return items / cpu, items / elapsed


def _citations(mix: dict[str, Any]) -> list[ev.Citation]:
    out = []
    for uid, body in mix["cpcs"]:
        for ref in body.get("absIRCCs") or []:
            out.append(ev.Citation(uid, body, ref["identifier"], mix["received"]))
    return out


def _short(path: str) -> str:
    for root in ("services/", "shared/", "bench/"):
        if root in path and "site-packages" not in path:
            return root + path.split(root, 1)[1]
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    return path.rsplit("/", 1)[-1]


async def run(session: Any) -> Outcome:
    secs = 0.3 if session.quick else 2.0
    mix = build_mix()
    states, cps = mix["states"], mix["checkpoints"]
    now, grace, received = mix["now"], mix["grace"], mix["received"]
    cpcs = mix["cpcs"]
    findings_total = sum(
        len(
            evaluate(
                u, b, irccs=states, checkpoints=cps, received_at=received, now=now, grace=grace
            )
        )
        for u, b in cpcs
    )
    t = Table(
        "rules: monitor pure code on one core (in-process, single thread)",
        ["function", "unit", "per CPU second", "µs CPU each", "per wall second", "note"],
    )
    data: dict[str, Any] = {"findings_per_cpc": findings_total / len(cpcs)}

    def add(label: str, unit: str, fn: Callable[[], int], note: str = "") -> float:
        progress(f"rules: {label}")
        per_s, wall = rate(fn, secs)
        t.add(label, unit, per_s, 1e6 / per_s, wall, note)
        return per_s

    def all_evaluate() -> int:
        for uid, body in cpcs:
            evaluate(
                uid, body, irccs=states, checkpoints=cps, received_at=received, now=now, grace=grace
            )
        return len(cpcs)

    data["evaluate_per_s"] = add(
        "rules.evaluate (CPC vs cited IRCCs + checkpoints)",
        "CPC",
        all_evaluate,
        f"{findings_total / len(cpcs):.2f} findings per CPC in the mix",
    )
    citations = _citations(mix)

    def all_citations() -> int:
        for c in citations:
            ident = c.reference.split("@", 1)[0]
            ev.citation_findings(c, states.get(ident), now=now, grace=grace)
        return len(citations)

    data["citation_per_s"] = add(
        "evaluation.citation_findings (worker, IRCC key)", "citation", all_citations
    )

    def all_cpc_findings() -> int:
        for uid, body in cpcs:
            ev.cpc_findings(uid, body, received, cps, now=now, grace=grace)
        return len(cpcs)

    add("evaluation.cpc_findings (worker, cpc: key)", "CPC", all_cpc_findings)
    events = mix["events"]

    def fold() -> int:
        folded: dict[str, IrccState] = {}
        for etype, d in events:
            folded[d["identifier"]] = apply_ircc_event(folded.get(d["identifier"]), etype, d)
        return len(events)

    data["apply_per_s"] = add("domain.apply_ircc_event (fold)", "event", fold)

    def fold_dup() -> int:
        for etype, d in events:
            apply_ircc_event(states[d["identifier"]], etype, d)
        return len(events)

    add(
        "domain.apply_ircc_event (redelivered duplicate)",
        "event",
        fold_dup,
        "same revision again: ranks both bodies by canonical JSON",
    )
    sample_findings = [
        evaluate(u, b, irccs=states, checkpoints=cps, received_at=received, now=now, grace=grace)
        for u, b in cpcs[:200]
    ]
    n_findings = sum(len(f) for f in sample_findings)

    def transitions() -> int:
        for f in sample_findings:
            ev.transition({}, f)
        return n_findings

    add("evaluation.transition (new flags -> CloudEvents)", "finding", transitions)
    wire = [
        new_event(
            "cpc.published",
            source="checkpoint",
            subject=u,
            data=CpcPublished(
                uid=u,
                identifier=b["header"]["identifier"],
                document_id=1,
                revision=1,
                government="de",
                checkpoints=["3E387C20-E70C-997B-EABB-BC4C9A1E142F"],
                record=b,
            ),
        ).to_json_bytes()
        for u, b in cpcs[:200]
    ]

    def decode() -> int:
        for raw in wire:
            decode_event(raw)
        return len(wire)

    add("shared.events.decode_event (cpc.published)", "event", decode, "every consumer pays it")

    worker_tables, worker_data = await worker_rates(mix, secs)
    data.update(worker_data)

    progress("rules: cProfile of evaluate over the mix")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(3):
        all_evaluate()
    prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:10]  # type: ignore[attr-defined]
    p = Table("rules: cProfile of rules.evaluate, top self time", ["function", "self %", "calls"])
    top = []
    for (file, line, func), (_cc, nc, tt, _ct, _callers) in rows:
        short = _short(file)
        p.add(f"{short}:{line} {func}", 100 * tt / total, nc)
        top.append({"function": f"{short}:{line} {func}", "self_pct": 100 * tt / total})
    data["evaluate_profile"] = top
    t.notes.append(f"{len(states)} IRCC states, {len(cpcs)} CPCs, {len(citations)} citations")
    return Outcome("rules", [t, *worker_tables, p], data)


def _ircc_event(etype: str, data: dict[str, Any]) -> CloudEvent[Any]:
    return new_event(etype, source="registry", subject=data["uid"], data=IrccEvent(**data))


def _cpc_event(uid: str, body: dict[str, Any]) -> CloudEvent[Any]:
    data = CpcPublished(
        uid=uid,
        identifier=body["header"]["identifier"],
        document_id=int(uid.split("-")[3]),
        revision=1,
        government="de",
        checkpoints=[CHECKPOINT],
        record=body,
    )
    return new_event("cpc.published", source="checkpoint", subject=uid, data=data)


async def _new_worker(url: str, mix: dict[str, Any]) -> tuple[MonitorWorker, Any]:
    """A MonitorWorker on a fresh database; its relay is never started (nothing is sent)."""
    engine = create_engine(url)
    await create_schema(engine, Base.metadata)
    sessions = session_factory(engine)
    metrics = MonitorMetrics(CollectorRegistry())
    producer = EventProducer("127.0.0.1:9", client_id="bench", metrics=metrics.plumbing)
    view = Checkpoints()
    view.mirror(Entry(CHECKPOINT, "absCheckpoint", "de", "ABSCH-CP-DE-1-1", 1, True, {}))
    worker = MonitorWorker(
        sessions=sessions,
        relay=OutboxRelay(sessions, OutboxRow, producer, metrics.plumbing),
        metrics=metrics,
        checkpoints=view,
        clock=lambda: mix["now"],
        prefix="bench.",
        grace_seconds=mix["grace"].total_seconds(),
        recheck_interval=3600,
    )
    return worker, engine


async def _timed(events: list[CloudEvent[Any]], worker: MonitorWorker) -> tuple[float, float]:
    """(events per process CPU second, per wall second) of ``worker.on_event``, in order.

    Process CPU, not thread CPU: aiosqlite runs SQLite on its own thread."""
    delivery = Delivery("bench", 0, 0, None)
    c0, t0 = time.process_time(), time.perf_counter()
    for event in events:
        await worker.on_event(event, delivery)
    cpu = max(time.process_time() - c0, 1e-9)
    return len(events) / cpu, len(events) / (time.perf_counter() - t0)


async def _worker_run(server: str | None, mix: dict[str, Any], quick: bool) -> dict[str, Any]:
    VAR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=VAR, prefix="rules-") as folder:
        async with scratch_databases(server, Path(folder)) as make:
            worker, engine = await _new_worker(await make("monitor"), mix)
            try:
                irccs = [_ircc_event(t, d) for t, d in mix["events"]]
                ircc_rate = await _timed(irccs, worker)
                rounds = 1 if quick else 3
                cpcs = [
                    _cpc_event(f"ABSCH-CPC-DE-{r * 10_000 + i + 1}-1", body)
                    for r in range(rounds)
                    for i, (_uid, body) in enumerate(mix["cpcs"])
                ]
                cpc_rate = await _timed(cpcs, worker)
                # One IRCC cited by k more CPCs each step; amend it and time the re-checks.
                revisions = Counter(d["identifier"] for _, d in mix["events"])
                target = next(d for _, d in mix["events"] if revisions[d["identifier"]] == 1)
                ident = target["identifier"]
                body = next(b for _, b in mix["cpcs"] if b.get("absIRCCs"))
                body = body | {"absIRCCs": [{"identifier": ident}]}
                scaling, cited, revision, n_uid = [], 0, 1, 100_000
                for k in (1, 10, 100, 1000):
                    extra = [
                        _cpc_event(f"ABSCH-CPC-DE-{n_uid + i}-1", body) for i in range(k - cited)
                    ]
                    n_uid += len(extra)
                    cited = k
                    await _timed(extra, worker)
                    count = max(3, min(50, 2000 // k)) if not quick else 3
                    amendments = []
                    for _ in range(count):
                        revision += 1
                        data = target | {
                            "uid": f"ABSCH-IRCC-MX-{target['document_id']}-{revision}",
                            "revision": revision,
                            "reason": {"en": "conditions changed"},
                        }
                        amendments.append(_ircc_event("ircc.amended", data))
                    per_cpu, per_wall = await _timed(amendments, worker)
                    scaling.append({"citations": k, "per_cpu": per_cpu, "per_wall": per_wall})
                return {
                    "ircc": {"per_cpu": ircc_rate[0], "per_wall": ircc_rate[1], "n": len(irccs)},
                    "cpc": {"per_cpu": cpc_rate[0], "per_wall": cpc_rate[1], "n": len(cpcs)},
                    "scaling": scaling,
                }
            finally:
                await engine.dispose()


async def worker_rates(mix: dict[str, Any], secs: float) -> tuple[list[Table], dict[str, Any]]:
    """MonitorWorker.on_event through a real database: the monitor's whole per-event work."""
    quick = secs < 1
    dbs: list[tuple[str, str | None]] = [("SQLite", None)]
    if (pg := postgres_url()) is not None:
        dbs.append(("PostgreSQL", pg))
    results = {}
    for label, server in dbs:
        progress(f"rules: MonitorWorker.on_event on {label}")
        results[label] = await _worker_run(server, mix, quick)
    t = Table(
        "rules: MonitorWorker.on_event (fold or check, findings, outbox, one transaction)",
        ["database", "event", "events", "per process CPU s", "per wall s", "ms each (wall)"],
    )
    for label, r in results.items():
        for kind, what in (("ircc", "ircc.* (no citations yet)"), ("cpc", "cpc.published (mix)")):
            x = r[kind]
            t.add(label, what, x["n"], x["per_cpu"], x["per_wall"], 1000 / x["per_wall"])
    t.notes += [
        "in order, one event at a time, as one consumer partition is handled; the mix's "
        f"{len(mix['events'])} IRCC events first, then its CPCs (repeated with new UIDs)",
        "process CPU includes aiosqlite's thread, not the PostgreSQL server; the relay is "
        "not started, so staged discrepancy events stay in the outbox",
    ]
    s = Table(
        "rules: one ircc.amended vs CPCs citing that IRCC (every citation re-checked)",
        ["database", "citing CPCs", "events/s (wall)", "ms per event", "citations checked/s"],
    )
    for label, r in results.items():
        for row in r["scaling"]:
            k = row["citations"]
            s.add(label, k, row["per_wall"], 1000 / row["per_wall"], row["per_wall"] * k)
    data = {
        "worker": results,
        "worker_cpc_per_s": results["SQLite"]["cpc"]["per_wall"],
    }
    return [t, s], data
