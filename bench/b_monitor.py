"""monitor: CPC events per second through the checking worker's transactional handler.

Feeds the ``rules`` mix (its IRCC events first, then its CPCs with fresh UIDs) through
``MonitorWorker.on_event_tx`` the way the kit's transactional consumer does: one
transaction per poll batch of ``BATCH`` events, hooks after the commit. No broker: the
relay is never started, so staged ``discrepancy.*`` events stay in the outbox. SQLite, and
PostgreSQL when ``BENCH_PG_URL`` or ``DATABASE_URL_TEST_PG`` names a server.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.b_rules import _cpc_event, _ircc_event, _new_worker, build_mix
from bench.common import VAR, Outcome, Table, postgres_url, progress
from services.monitor.worker import MonitorWorker
from shared.events import CloudEvent
from shared.kit.consumer import Delivery, Tx
from tools.scratch_db import scratch_databases

BATCH = 100  # events per poll batch (the consumer takes up to 500)


async def feed(worker: MonitorWorker, events: list[CloudEvent[Any]], batch: int) -> float:
    """Handle ``events`` in transactions of ``batch`` events; wall seconds taken."""
    sessions = worker._sessions  # the worker's own engine, as the consumer's would be
    t0 = time.perf_counter()
    for start in range(0, len(events), batch):
        async with sessions() as session, session.begin():
            tx = Tx(session)
            for i, event in enumerate(events[start : start + batch]):
                await worker.on_event_tx(tx, event, Delivery("bench", 0, start + i, None))
        for hook in tx.hooks:
            hook()
    return time.perf_counter() - t0


async def _run_one(server: str | None, quick: bool) -> dict[str, Any]:
    mix = build_mix()
    VAR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=VAR, prefix="monitor-") as folder:
        async with scratch_databases(server, Path(folder)) as make:
            worker, engine = await _new_worker(await make("monitor"), mix)
            try:
                await feed(worker, [_ircc_event(t, d) for t, d in mix["events"]], BATCH)
                rounds = 1 if quick else 3
                cpcs = [
                    _cpc_event(f"ABSCH-CPC-DE-{r * 10_000 + i + 1}-1", body)
                    for r in range(rounds)
                    for i, (_uid, body) in enumerate(mix["cpcs"])
                ]
                seconds = await feed(worker, cpcs, BATCH)
                return {"n": len(cpcs), "per_s": len(cpcs) / seconds}
            finally:
                await engine.dispose()


async def run(session: Any) -> Outcome:
    """CPC events/s per worker through SQLite (and PostgreSQL when configured)."""
    dbs: list[tuple[str, str | None]] = [("SQLite", None)]
    if (pg := postgres_url()) is not None:
        dbs.append(("PostgreSQL", pg))
    t = Table(
        f"monitor: cpc.published through on_event_tx, {BATCH} events per transaction",
        ["database", "events", "events/s (wall)", "ms each"],
    )
    data: dict[str, Any] = {}
    for label, server in dbs:
        progress(f"monitor: on_event_tx on {label}")
        r = await _run_one(server, session.quick)
        t.add(label, r["n"], r["per_s"], 1000 / r["per_s"])
        data[label] = r
    t.notes.append("target: >= 1,000 events/s per worker (issue 15, target 4)")
    return Outcome("monitor", [t], data)
