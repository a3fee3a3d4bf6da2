"""notifier: mails per second over one SMTP connection, ``SmtpMailer`` -> ``SmtpSink``.

The sink runs as its own process (``python -m bench.sink``: ``tools.smtp_sink.SmtpSink``,
which parses every message), the mailer in this process, one message at a time over its one
reused connection, exactly as ``DeliveryWorker`` uses it. Messages are real
``cpc_published`` mails: rendered by ``services.notifier.rendering.render`` and built into MIME
by ``services.notifier.delivery.to_message``. Rows:

- send only: the same prebuilt message again and again (SMTP + serialisation);
- build + send: ``to_message`` for each mail, then send (the delivery worker's own work,
  without its database commit per mail);
- render only: ``render`` per mail (done when the event is consumed, not when sending);
- DeliveryWorker: the service's own worker, from a SQLite file of pending deliveries, over
  2 and 4 connections (claims, sends, outcome commits and their events included).

CPU of both processes is shown, to tell which side limits.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from prometheus_client import CollectorRegistry
from sqlalchemy import insert

from bench.common import Outcome, Table, cpu_seconds, out, progress
from bench.stack import Proc
from services.notifier.adapters.smtp import SmtpMailer, SmtpPool
from services.notifier.adapters.tables import Base, DeliveryRow, OutboxRow
from services.notifier.context import NotifierContext, utc_now
from services.notifier.delivery import DeliveryWorker, MailCache, mail_bytes, to_message
from services.notifier.metrics import NotifierMetrics
from services.notifier.projection import Projection
from services.notifier.rendering import MailContext, render
from services.notifier.settings import NotifierSettings
from shared.db import create_engine, create_schema, session_factory
from shared.kafka.producer import EventProducer
from shared.kit.outbox import OutboxRelay
from tools.ports import free_port, wait_for_port


def _context() -> MailContext:
    record = {
        "header": {
            "identifier": "63B9CA56-9D43-E877-2A96-2C95986522D5",
            "schema": "absCheckpointCommunique",
            "languages": ["en"],
        },
        "government": {"identifier": "de"},
        "title": {"en": "Due diligence declaration"},
        "absCheckpoints": [{"identifier": "3E387C20-E70C-997B-EABB-BC4C9A1E142F"}],
        "absIRCCs": [{"identifier": "CB51626B-CF45-2AA0-3A24-459669DDCC34@1"}],
        "description": {"en": "<div><!--block-->Basic research on soil bacteria</div>"},
        "dateCollected": "2025-03-01",
        "personsAtCheckpoint": [{"identifier": "DECLARE-ORGANISATION_19584@1"}],
    }
    return MailContext(
        uid="ABSCH-CPC-DE-1001-1",
        public_base_url="http://127.0.0.1:8101",
        event_type="cpc.published",
        record=record,
        labels={
            "CB51626B-CF45-2AA0-3A24-459669DDCC34": "ABSCH-IRCC-MX-207443-2",
            "3E387C20-E70C-997B-EABB-BC4C9A1E142F": {"en": "Checkpoint of de"},
        },
    )


SENDER = "no-reply@absch.example"
RECIPIENTS = 6  # mails per CPC in the pipeline: one event, six recipients


def _row(i: int, mail: Any, event: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        event_id=f"bench-{i if event is None else event}",
        recipient=f"user{i % 50}@de.example",
        mail_subject=mail.subject,
        subject="ABSCH-CPC-DE-1001-1",
        template="cpc_published",
        text_body=mail.text,
        html_body=mail.html,
        language="en",
    )


async def _worker_rate(
    state: Path, port: int, sink_pid: int, k: int, mail: Any, secs: float
) -> tuple[float, float, float]:
    """The service's own ``DeliveryWorker`` over ``k`` connections, from a SQLite file of
    pending deliveries to the sink: mails/s, then this process's and the sink's CPU %."""
    db = state / f"worker-{k}.sqlite"
    db.unlink(missing_ok=True)
    settings = NotifierSettings(
        database_url=f"sqlite+aiosqlite:///{db}",
        smtp_connections=k,
        mail_from="ABS Clearing-House <no-reply@absch.example>",
        environment="test",
    )
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    await create_schema(engine, Base.metadata)
    metrics = NotifierMetrics(CollectorRegistry())
    pool = SmtpPool(lambda: SmtpMailer("127.0.0.1", port), k)
    producer = EventProducer("127.0.0.1:9", client_id="bench", metrics=metrics.plumbing)
    ctx = NotifierContext(
        settings=settings,
        sessions=sessions,
        projection=Projection(sessions),
        relay=OutboxRelay(sessions, OutboxRow, producer, metrics.plumbing),
        mailer=pool,
        metrics=metrics,
    )
    # Enough pending mails for the whole window at well above the raw rate.
    total = int(max(secs, 1.0) * 2000)
    now = utc_now()
    pending = dict(
        event_type="cpc.published",
        subject="ABSCH-CPC-DE-1001-1",
        role="nfp",
        template="cpc_published",
        language="en",
        mail_subject=mail.subject,
        text_body=mail.text,
        html_body=mail.html,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    rows = [
        pending
        | {"event_id": f"bench-{i // RECIPIENTS}", "recipient": f"u{i % RECIPIENTS}@de.example"}
        for i in range(total)
    ]
    async with sessions.begin() as session:
        await session.execute(insert(DeliveryRow), rows)
    worker = DeliveryWorker(ctx)
    try:
        await worker.run_once()  # connects the pool
        me0, sk0 = time.process_time(), cpu_seconds(sink_pid) or 0.0
        sent, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < secs:
            sent += await worker.run_once()
        wall = time.perf_counter() - t0
        me = 100 * (time.process_time() - me0) / wall
        sk = 100 * ((cpu_seconds(sink_pid) or 0.0) - sk0) / wall
    finally:
        await pool.close()
        await engine.dispose()
    return sent / wall, me, sk


async def run(session: Any) -> Outcome:
    secs = 1.0 if session.quick else 10.0
    state = session.state / "notifier-bench"
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    sink = Proc(
        "smtp-sink",
        [sys.executable, "-m", "bench.sink", "--port", str(port), "--log", str(state / "mail.log")],
        dict(os.environ),
        state / "sink.log",
    )
    sink.start()
    ctx = SimpleNamespace(
        settings=SimpleNamespace(mail_from="ABS Clearing-House <no-reply@absch.example>")
    )
    context = _context()
    mail = render("cpc_published", "en", context)
    prebuilt = to_message(ctx, _row(0, mail))  # type: ignore[arg-type]
    size = len(prebuilt.as_bytes())
    t = Table(
        "notifier: SmtpMailer and SmtpPool -> SmtpSink (separate process)",
        ["what", "mails/s", "ms per mail", "client CPU %", "sink CPU %"],
    )
    data: dict[str, Any] = {"message_bytes": size}
    try:
        wait_for_port("127.0.0.1", port, 30)
        mailer = SmtpMailer("127.0.0.1", port)
        for _ in range(20):  # connect and warm up
            await mailer.send(prebuilt)

        async def measure(label: str, make: Any) -> float:
            progress(f"notifier: {label} for {secs:.0f}s")
            me0, sk0 = time.process_time(), cpu_seconds(sink.pid) or 0.0
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < secs:
                await mailer.send(make(n))
                n += 1
            wall = time.perf_counter() - t0
            me = 100 * (time.process_time() - me0) / wall
            sk = 100 * ((cpu_seconds(sink.pid) or 0.0) - sk0) / wall
            t.add(label, n / wall, 1000 * wall / n, me, sk)
            return n / wall

        data["send_per_s"] = await measure("send only (prebuilt message)", lambda n: prebuilt)
        data["build_send_per_s"] = await measure(
            "to_message + send",
            lambda n: to_message(cast(Any, ctx), cast(Any, _row(n, mail))),
        )
        await mailer.close()
        for k in (2, 4):
            mailers = [SmtpMailer("127.0.0.1", port) for _ in range(k)]
            for m in mailers:
                await m.send(prebuilt)
            progress(f"notifier: send only over {k} connections in parallel for {secs:.0f}s")
            me0, sk0 = time.process_time(), cpu_seconds(sink.pid) or 0.0
            t0 = time.perf_counter()
            counts = [0] * k

            async def loop(
                i: int, m: SmtpMailer, t0: float = t0, counts: list[int] = counts
            ) -> None:
                while time.perf_counter() - t0 < secs:
                    await m.send(prebuilt)
                    counts[i] += 1

            await asyncio.gather(*(loop(i, m) for i, m in enumerate(mailers)))
            wall = time.perf_counter() - t0
            n = sum(counts)
            t.add(
                f"send only, {k} connections in parallel",
                n / wall,
                1000 * wall / n,
                100 * (time.process_time() - me0) / wall,
                100 * ((cpu_seconds(sink.pid) or 0.0) - sk0) / wall,
            )
            data[f"send_{k}conn_per_s"] = n / wall
            for m in mailers:
                await m.close()
            # What the delivery worker does per mail: mail_bytes (one flattened body per
            # event, reused for its recipients) then SmtpPool.send_bytes, k at once.
            pool = SmtpPool(lambda: SmtpMailer("127.0.0.1", port), k)
            await asyncio.gather(*(pool.send(prebuilt) for _ in range(k)))
            progress(f"notifier: mail_bytes + SmtpPool over {k} connections for {secs:.0f}s")
            me0, sk0 = time.process_time(), cpu_seconds(sink.pid) or 0.0
            t0 = time.perf_counter()
            sent = 0
            while time.perf_counter() - t0 < secs:
                cache: MailCache = {}
                wave = [_row(sent + i, mail, event=(sent + i) // RECIPIENTS) for i in range(k)]
                await asyncio.gather(
                    *(
                        pool.send_bytes(SENDER, row.recipient, mail_bytes(ctx, row, cache))  # type: ignore[arg-type]
                        for row in wave
                    )
                )
                sent += k
            wall = time.perf_counter() - t0
            t.add(
                f"mail_bytes + SmtpPool, {k} connections",
                sent / wall,
                1000 * wall / sent,
                100 * (time.process_time() - me0) / wall,
                100 * ((cpu_seconds(sink.pid) or 0.0) - sk0) / wall,
            )
            data[f"pool_{k}conn_per_s"] = sent / wall
            data[f"pool_vs_raw_{k}conn"] = (sent / wall) / data[f"send_{k}conn_per_s"]
            await pool.close()
            label = f"DeliveryWorker (SQLite file), {k} connections"
            progress(f"notifier: {label}")
            rate, me_cpu, sk_cpu = await _worker_rate(state, port, sink.pid, k, mail, secs)
            t.add(label, rate, 1000 / rate, me_cpu, sk_cpu)
            data[f"worker_{k}conn_per_s"] = rate
            data[f"worker_vs_raw_{k}conn"] = rate / data[f"send_{k}conn_per_s"]
    finally:
        sink.stop(10)
    for key, label, fn in (
        (
            "to_message_per_s",
            "to_message only (MIME build)",
            lambda n: to_message(cast(Any, ctx), cast(Any, _row(n, mail))),
        ),
        ("flatten_per_s", "as_bytes only (MIME serialise)", lambda n: prebuilt.as_bytes()),
        (
            "render_per_s",
            "render only (cpc_published, en)",
            lambda n: render("cpc_published", "en", context),
        ),
    ):
        progress(f"notifier: {label}")
        n, t0, c0 = 0, time.perf_counter(), time.thread_time()
        while time.perf_counter() - t0 < secs / 2:
            fn(n)
            n += 1
        wall = time.perf_counter() - t0
        cpu = time.thread_time() - c0
        data[key] = n / cpu
        t.add(label + " [per CPU second]", n / cpu, 1000 * cpu / n, 100 * cpu / wall, None)
    t.notes += [
        f"message: {size:,} bytes (text + HTML alternative, X-ABSCH headers)",
        "DeliveryWorker rows: the service's worker from a SQLite file of pending mails "
        "(claims, sends in waves, commits each wave's outcomes and events), client CPU "
        "included",
    ]
    return Outcome("notifier", [t], data)


if __name__ == "__main__":  # pragma: no cover - manual use
    from bench.session import Session

    outcome = asyncio.run(run(Session(quick=True, state=Path("var/bench/notifier-manual"))))
    for table in outcome.tables:
        out(table.render())
