"""state: the monitor's IRCC table (``monitor_irccs``) with 1,000,000 IRCCs, for real.

The value stored per IRCC is ``evaluation.state_to_json(IrccState)``, folded with
``domain.apply_ircc_event`` from IRCC records shaped like the ABSCH documentation example
(``bench.b_rules.ircc_record``) for four kinds: valid (1 revision), amended (2), revoked (2,
the second revoking), expired (1); the table gets a 75/15/10 % mix (1, 2, 2 revisions).

Rows are inserted through the monitor's own table and engine (SQLAlchemy, the JSON column
the worker writes) into a fresh SQLite file and, when ``BENCH_PG_URL`` or
``DATABASE_URL_TEST_PG`` names a PostgreSQL server, into a scratch database created and
dropped there. Reported: bytes on disk (SQLite file after a WAL checkpoint; PostgreSQL
table + TOAST + index), build rate, and the worker's read path (``adapters.state
.lock_irccs`` in its own transaction, random identifiers) at 1 % of the rows and at all of
them. The monitor keeps none of this in memory; its RSS is in the ``rss`` benchmark.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from bench.common import VAR, Outcome, Table, mib, pct, postgres_url, progress
from services.monitor.adapters import state as store
from services.monitor.adapters.tables import Base, IrccStateRow
from shared.db import create_engine, create_schema, session_factory
from tools.scratch_db import scratch_databases

TARGET = 1_000_000
PLACEHOLDER = "CB51626B-CF45-2AA0-3A24-000000000001"
KINDS = {"valid": 0.75, "amended": 0.15, "revoked": 0.10}
BATCH = 5_000


def state_values() -> dict[str, dict[str, Any]]:
    """``state_to_json`` of one IRCC of each kind, identifier = PLACEHOLDER."""
    from bench.b_rules import ircc_record
    from services.monitor.domain import apply_ircc_event
    from services.monitor.evaluation import state_to_json

    out = {}
    for kind in ("valid", "amended", "revoked", "expired"):
        rng = random.Random(1)
        revisions = 2 if kind in ("amended", "revoked") else 1
        state = None
        for rev in range(1, revisions + 1):
            body = ircc_record(PLACEHOLDER, rng, kind)
            etype = "ircc.published" if rev == 1 else "ircc.amended"
            data: dict[str, Any] = {
                "uid": f"ABSCH-IRCC-MX-1-{rev}",
                "identifier": PLACEHOLDER,
                "document_id": 1,
                "revision": rev,
                "government": "mx",
                "record": body,
            }
            if rev > 1:
                data["reason"] = {"en": "conditions changed"}
            if kind == "revoked" and rev == revisions:
                etype = "ircc.revoked"
            state = apply_ircc_event(state, etype, data)
        assert state is not None
        out[kind] = state_to_json(state)
    return out


def _mix_kind(i: int) -> str:
    r = (i * 2654435761 % 100) / 100  # deterministic spread
    return "valid" if r < 0.75 else ("amended" if r < 0.90 else "revoked")


def _file_size(file: str) -> int:
    return Path(file).stat().st_size


def early_rows(n: int) -> int:
    """Where the first lookups are timed: 1 % of the rows, at a batch boundary."""
    return max(n // 100 // BATCH * BATCH, BATCH)


def _ident(i: int) -> str:
    return f"CB51626B-CF45-2AA0-3A24-{i:012d}"


async def _lookups(sessions: Any, n_rows: int, count: int) -> dict[str, float]:
    """``lock_irccs`` of one random stored IRCC per transaction, as the worker does."""
    rng = random.Random(n_rows)
    times = []
    for _ in range(count):
        ident = _ident(rng.randrange(n_rows))
        t0 = time.perf_counter()
        async with sessions() as session, session.begin():
            found = await store.lock_irccs(session, [ident])
        times.append(time.perf_counter() - t0)
        assert ident in found, ident
    return {
        "per_s": count / sum(times),
        "p50_ms": 1000 * (pct(times, 50) or 0),
        "p99_ms": 1000 * (pct(times, 99) or 0),
    }


async def _size(engine: Any) -> dict[str, int]:
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            await conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            return {"total": _file_size(str(engine.url.database))}
        row = (
            await conn.execute(
                text(
                    "SELECT pg_relation_size('monitor_irccs'), "
                    "pg_total_relation_size('monitor_irccs') - pg_relation_size('monitor_irccs')"
                    " - pg_indexes_size('monitor_irccs'), pg_indexes_size('monitor_irccs'), "
                    "pg_total_relation_size('monitor_irccs')"
                )
            )
        ).one()
        return {"heap": row[0], "toast": row[1], "index": row[2], "total": row[3]}


async def build(url: str, n: int, lookups: int) -> dict[str, Any]:
    """Fill ``monitor_irccs`` with n IRCC states; sizes and lookups at 1 % and at n."""
    engine = create_engine(url)
    sessions = session_factory(engine)
    await create_schema(engine, Base.metadata)
    templates = {k: json.dumps(v) for k, v in state_values().items()}
    early = early_rows(n)
    result: dict[str, Any] = {"n": n}
    build_s = 0.0
    try:
        for start in range(0, n, BATCH):
            rows = [
                {
                    "identifier": _ident(i),
                    "state": json.loads(templates[_mix_kind(i)].replace(PLACEHOLDER, _ident(i))),
                }
                for i in range(start, min(start + BATCH, n))
            ]
            t0 = time.perf_counter()
            async with engine.begin() as conn:
                await conn.execute(insert(IrccStateRow), rows)
            build_s += time.perf_counter() - t0
            done = start + len(rows)
            if done == early:
                result["early"] = {"n": done, **await _lookups(sessions, done, lookups)}
            if done % 100_000 == 0 or done == n:
                progress(f"state: {done:,}/{n:,} rows ({done / build_s:,.0f} rows/s)")
        result["build_s"] = build_s
        result["full"] = {"n": n, **await _lookups(sessions, n, lookups)}
        result["size"] = await _size(engine)
    finally:
        await engine.dispose()
    return result


async def run(session: Any) -> Outcome:
    values = state_values()
    stored = {k: len(json.dumps(v).encode()) for k, v in values.items()}
    t = Table(
        "state: one IRCC's value in monitor_irccs (state_to_json, as the JSON column stores it)",
        ["IRCC kind", "revisions", "JSON bytes"],
    )
    for k in ("valid", "amended", "revoked", "expired"):
        t.add(k, len(values[k]["revisions"]), stored[k])
    mix = sum(stored[k] * w for k, w in KINDS.items())
    t.add("mix 75/15/10", None, mix)

    n = 20_000 if session.quick else TARGET
    count = 200 if session.quick else 2_000
    servers: list[tuple[str, str | None]] = [("SQLite", None)]
    if (pg := postgres_url()) is not None:
        servers.append(("PostgreSQL", pg))
    built: list[tuple[str, dict[str, Any]]] = []
    VAR.mkdir(parents=True, exist_ok=True)
    for label, server in servers:
        progress(f"state: {n:,} IRCCs into {label} (scratch database)")
        with tempfile.TemporaryDirectory(dir=VAR, prefix="state-") as folder:
            async with scratch_databases(server, Path(folder)) as make:
                built.append((label, await build(await make("monitor"), n, count)))

    b = Table(
        f"state: monitor_irccs with {n:,} IRCCs, built through the monitor's table",
        [
            "database",
            "rows",
            "on disk MiB",
            "bytes per IRCC",
            "rows/s built",
            f"lock_irccs/s @{early_rows(n):,}",
            f"lock_irccs/s @{n:,}",
            "p50 ms",
            "p99 ms",
        ],
    )
    data: dict[str, Any] = {"json_bytes": stored, "mix_json_bytes": mix, "built": {}}
    for label, r in built:
        size = r["size"]["total"]
        early = r["early"]
        b.add(
            label,
            r["n"],
            mib(size),
            size / r["n"],
            r["n"] / r["build_s"],
            early["per_s"],
            r["full"]["per_s"],
            r["full"]["p50_ms"],
            r["full"]["p99_ms"],
        )
        data["built"][label] = r
    if len(servers) == 1:
        b.notes.append("PostgreSQL skipped: set BENCH_PG_URL (or DATABASE_URL_TEST_PG)")
    for label, r in built:
        if label == "PostgreSQL":
            s = r["size"]
            b.notes.append(
                f"PostgreSQL: heap {mib(s['heap']):.0f} MiB, TOAST {mib(s['toast']):.0f} MiB "
                f"(values over ~2 KB are first compressed in the row; TOAST takes what is still "
                f"too large), index {mib(s['index']):.0f} MiB"
            )
    b.notes += [
        f"lock_irccs = INSERT … ON CONFLICT DO NOTHING + SELECT … FOR UPDATE of one random "
        f"stored IRCC in its own transaction (the worker's read of an IRCC), {count:,} times, "
        "one connection; p50/p99 at the full table",
        "not included: citations (one row per cited IRCC per CPC, with the CPC body), CPCs, "
        "findings; the monitor process keeps none of the state in memory",
    ]
    return Outcome("state", [t, b], data)
