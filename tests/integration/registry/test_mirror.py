"""The mirror of a real clearing-house (issue 18) against a local one answering like it
(``tests/support/absch_source.py``, fixtures in ``tests/fixtures/absch/``): first and
incremental passes, the same events as a local publication, read-only records, a crash
and its resumption, retries, rejects, and a record changing between pages."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from services.registry.adapters.tables import (
    MirrorCursorRow,
    MirroredCommuniqueRow,
    OutboxRow,
    RecordRow,
    RevisionRow,
)
from services.registry.migrations import MIGRATIONS
from services.registry.mirror.run import MirrorMetrics
from services.registry.mirror.source import SourceError, cursor_filter, parse_entry
from shared.db import create_engine, session_factory
from shared.events import CloudEvent, Topic, topic_name
from shared.uid import format_solr_id
from tests.support.absch_source import (
    CB,
    CNA,
    CP,
    M1,
    ClearingHouse,
    incremental_changes,
    latest_body,
    run_mirror,
)
from tests.support.kafka import TopicReader
from tests.support.poll import eventually
from tests.support.records import authority, permit
from tests.support.registry import (
    auth,
    government_users,
    publish,
    registry_settings,
    running_registry,
)
from tests.support.servers import serving

SAMPLES = Path(__file__).parents[2] / "fixtures" / "samples"
FIRST_CHANGES = [
    "CHM-NFP-AF-100101-1 directory.record.published",
    "ABSCH-CNA-AF-207001-1 directory.record.published",
    "ABSCH-CNA-AF-207001-2 directory.record.published",
    "ABSCH-CP-AF-257216-1 directory.record.published",
    "ABSCH-IRCC-AF-207443-1 ircc.published",
    "ABSCH-IRCC-AF-207608-1 ircc.published",
    "ABSCH-CPC-AF-263001-1 cpc.published",
]


async def counts(db: str) -> dict[str, int]:
    """Rows the mirror writes, by table, and the outbox's distinct subjects."""
    engine = create_engine(db)
    try:
        async with session_factory(engine)() as session:
            out = {}
            for name, table in (
                ("records", RecordRow),
                ("revisions", RevisionRow),
                ("communiques", MirroredCommuniqueRow),
                ("outbox", OutboxRow),
            ):
                out[name] = int(await session.scalar(select(func.count()).select_from(table)) or 0)
            payloads = (await session.scalars(select(OutboxRow.payload))).all()
            out["subjects"] = len({json.loads(p)["subject"] for p in payloads})
            cursor = await session.scalar(
                select(func.sum(MirrorCursorRow.records)).select_from(MirrorCursorRow)
            )
            out["passed"] = int(cursor or 0)
            return out
    finally:
        await engine.dispose()


async def test_first_and_incremental_mirror_emit_local_events_and_stay_read_only(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path
) -> None:
    source = ClearingHouse()
    source.load()
    db = await db_url("registry")
    settings = registry_settings(kafka=kafka_bootstrap, prefix=topic_prefix, db=db, tmp=tmp_path)
    async with serving(source.app) as url, running_registry(settings) as client:
        first = await run_mirror(db, url, topic_prefix, rows=2)
        assert first.changes == FIRST_CHANGES
        assert (first.mirrored, first.revisions, first.rejected) == (6, 7, 0)

        # Real identities, never renumbered.
        view = (await client.get("/v1/records/ABSCH-IRCC-AF-207608-1")).json()
        assert (view["identifier"], view["documentID"]) == (CB, 207608)
        history = (await client.get(f"/v1/records/{CNA}/revisions")).json()
        assert [r["uid"] for r in history] == ["ABSCH-CNA-AF-207001-1", "ABSCH-CNA-AF-207001-2"]
        nfp = await client.get("/v1/records/CHM-NFP-AF-100101")
        assert nfp.status_code == 200, nfp.text

        # Twice is once: the cursor leaves nothing to read but five empty pages.
        again = await run_mirror(db, url, topic_prefix, rows=2)
        assert (again.mirrored, again.unchanged, again.requests, again.changes) == (0, 0, 5, [])

        incremental_changes(source)
        second = await run_mirror(db, url, topic_prefix, rows=2, notify=True)
        assert second.changes == [
            "ABSCH-IRCC-AF-207443-2 ircc.amended",
            "ABSCH-IRCC-AF-207608-2 ircc.revoked",
            "ABSCH-CPC-AF-263002-1 cpc.published",
        ]
        verified = (await client.get("/v1/verify/ABSCH-IRCC-AF-207608-1")).json()
        assert verified["status"] == "revoked"
        verified = (await client.get("/v1/verify/ABSCH-IRCC-AF-207443-1")).json()
        assert verified == {"status": "superseded", "latest_uid": "ABSCH-IRCC-AF-207443-2"}

        # The same events as a local publication, from the mirror, mail off unless asked.
        events = await _read(kafka_bootstrap, topic_prefix, Topic.IRCC, 4)
        # (Ordered per record: each record's key keeps its events on one partition.)
        events.sort(key=lambda e: e.subject)
        assert [(e.type, e.subject, e.source, e.data.notify) for e in events] == [
            ("ircc.published", "ABSCH-IRCC-AF-207443-1", "/absch/mirror", False),
            ("ircc.amended", "ABSCH-IRCC-AF-207443-2", "/absch/mirror", True),
            ("ircc.published", "ABSCH-IRCC-AF-207608-1", "/absch/mirror", False),
            ("ircc.revoked", "ABSCH-IRCC-AF-207608-2", "/absch/mirror", True),
        ]
        assert {e.data.mirrored_from for e in events} == {url}
        assert events[3].data.reason == {"en": "PIC withdrawn"}
        cpcs = await _read(kafka_bootstrap, topic_prefix, Topic.CPC, 2)
        cpcs.sort(key=lambda e: e.subject)
        assert [(e.type, e.data.document_id, e.data.checkpoints) for e in cpcs] == [
            ("cpc.published", 263001, [CP]),
            ("cpc.published", 263002, [CP]),
        ]
        directory = await _read(kafka_bootstrap, topic_prefix, Topic.DIRECTORY, 4)
        assert sorted(e.subject for e in directory) == sorted(
            c.split()[0] for c in FIRST_CHANGES[:4]
        )

        # Read-only here: every local change is a 409 naming the source.
        af = await government_users(client, "af")
        body = latest_body(M1, source)
        for call in (
            client.put(f"/v1/records/absPermit/{M1}", json=body, headers=auth(af["pa"])),
            client.post(f"/v1/records/absPermit/{M1}/publish", headers=auth(af["pa"])),
            client.post(
                f"/v1/records/absPermit/{M1}/revoke",
                json={"reason": {"en": "no"}},
                headers=auth(af["pa"]),
            ),
        ):
            resp = await call
            assert resp.status_code == 409, resp.text
            assert resp.headers["content-type"].startswith("application/problem+json")
            assert "mirrored read-only from" in resp.json()["detail"]
        # Local records still get numbers of their own, clear of the mirrored ones.
        local_cna = authority("af", ["local@af.example"])
        made = await publish(client, af["pa"], local_cna)
        assert made["documentID"] > 257216  # the largest documentID mirrored
        local = await publish(client, af["pa"], permit("af", local_cna["header"]["identifier"]))
        assert local["uid"].startswith("ABSCH-IRCC-AF-")


async def _read(bootstrap: str, prefix: str, topic: Topic, n: int) -> list[CloudEvent[Any]]:
    async with TopicReader(bootstrap, topic_name(topic, prefix)) as reader:
        return await reader.read_until(lambda events: len(events) >= n, timeout=30)


async def test_a_crash_mid_page_resumes_with_every_record_once(db_url: Any, tmp_path: Path) -> None:
    source = ClearingHouse()
    source.load()
    db = await db_url("registry")
    await MIGRATIONS.upgrade(db)
    # The IRCC page (two records, same update time) is held at its second record's body.
    held = source.hold(f"/api/v2013/documents/{CB}@1")
    async with serving(source.app) as url:
        log = tmp_path / "mirror.log"
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.registry.mirror",
                "--source",
                url,
                "--rows",
                "2",
                "--rps",
                "0",
                stdout=err,
                stderr=err,
                env={**os.environ, "REGISTRY_DATABASE_URL": db},
            )
            try:
                await asyncio.wait_for(held.reached.wait(), 60)
            finally:
                proc.kill()
                await proc.wait()
                held.release.set()
        assert await counts(db) == {
            "records": 4,  # focal point, CNA, checkpoint, the first IRCC of the page
            "revisions": 5,
            "communiques": 0,
            "outbox": 5,
            "subjects": 5,
            "passed": 4,
        }, log.read_text()
        report = await run_mirror(db, url, rows=2)
        assert report.changes == FIRST_CHANGES[5:]
        assert await counts(db) == {
            "records": 5,
            "revisions": 6,
            "communiques": 1,
            "outbox": 7,
            "subjects": 7,
            "passed": 6,
        }


async def test_sigterm_mid_pass_stops_at_once_and_the_next_run_resumes(
    db_url: Any, tmp_path: Path
) -> None:
    source = ClearingHouse()
    source.load()
    db = await db_url("registry")
    await MIGRATIONS.upgrade(db)
    held = source.hold(f"/api/v2013/documents/{CB}@1")
    async with serving(source.app) as url:
        log = tmp_path / "mirror.log"
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.registry.mirror",
                "--source",
                url,
                "--follow",
                "--rps",
                "0",
                stdout=err,
                stderr=err,
                env={**os.environ, "REGISTRY_DATABASE_URL": db},
            )
            try:
                await asyncio.wait_for(held.reached.wait(), 60)
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 30) == 0, log.read_text()
            finally:
                held.release.set()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        assert (await counts(db))["revisions"] == 5
        assert b"stopped during a pass" in log.read_bytes()
        report = await run_mirror(db, url)
    assert report.changes == FIRST_CHANGES[5:]


async def test_429_and_5xx_are_retried_and_a_failed_pass_resumes(
    db_url: Any, tmp_path: Path
) -> None:
    source = ClearingHouse()
    source.load()
    db = await db_url("registry")
    await MIGRATIONS.upgrade(db)
    metrics = MirrorMetrics(CollectorRegistry())
    source.fail("/index/select", 429, times=2, retry_after="0")
    source.fail("/versions", 502, times=1)
    source.fail("/documents/", 503, times=2)
    async with serving(source.app) as url:
        report = await run_mirror(db, url, rows=2, metrics=metrics)
        assert report.changes == FIRST_CHANGES
        value = metrics.registry.get_sample_value
        assert value("registry_mirror_errors_total", {"kind": "429"}) == 2
        assert value("registry_mirror_errors_total", {"kind": "5xx"}) == 3
        assert (
            value("registry_mirror_records_total", {"schema": "absPermit", "outcome": "mirrored"})
            == 2
        )
        assert value("registry_mirror_lag_seconds", {"schema": "absPermit"}) == 0

        # A source failing longer than the attempts: the pass fails, what it stored stays,
        # and the next pass takes the rest.
        incremental_changes(source)
        source.fail(f"/documents/{CB}@2", 500, times=4)
        with pytest.raises(SourceError):
            await run_mirror(db, url, rows=2, metrics=metrics, attempts=4)
        assert value("registry_mirror_errors_total", {"kind": "pass"}) == 1
        resumed = await run_mirror(db, url, rows=2, metrics=metrics)
        assert resumed.changes == [
            "ABSCH-IRCC-AF-207608-2 ircc.revoked",
            "ABSCH-CPC-AF-263002-1 cpc.published",
        ]
        assert (await counts(db))["outbox"] == 10


async def test_a_timed_out_request_is_retried(db_url: Any, tmp_path: Path) -> None:
    source = ClearingHouse()
    source.load("04_ircc_af_cb51626b.json")
    db = await db_url("registry")
    await MIGRATIONS.upgrade(db)
    metrics = MirrorMetrics(CollectorRegistry())
    held = source.hold(f"/api/v2013/documents/{CB}@1")  # answers only when let go
    async with serving(source.app) as url:
        try:
            report = await run_mirror(db, url, metrics=metrics, timeout=0.5)
        finally:
            held.release.set()
    assert report.changes == ["ABSCH-IRCC-AF-207608-1 ircc.published"]
    assert (
        metrics.registry.get_sample_value("registry_mirror_errors_total", {"kind": "timeout"}) == 1
    )


async def test_follow_mirrors_what_the_source_publishes_until_sigterm(
    db_url: Any, tmp_path: Path
) -> None:
    source = ClearingHouse()
    source.load()
    db = await db_url("registry")
    await MIGRATIONS.upgrade(db)
    async with serving(source.app) as url:
        log = tmp_path / "mirror.log"
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.registry.mirror",
                "--source",
                url,
                "--follow",
                "--interval",
                "0.2",
                "--rps",
                "0",
                stdout=err,
                stderr=err,
                env={**os.environ, "REGISTRY_DATABASE_URL": db},
            )
            try:

                async def holds(revisions: int, communiques: int) -> bool:
                    now = await counts(db)
                    return (now["revisions"], now["communiques"]) == (revisions, communiques)

                await eventually(lambda: holds(6, 1), timeout=60, what="first pass")
                incremental_changes(source)
                # IRCCs are taken before CPCs, so the revisions alone arrive before the
                # new communiqué; a SIGTERM then would end the pass before it.
                await eventually(lambda: holds(8, 2), timeout=60, what="the changes followed")
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 60) == 0, log.read_text()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    assert (await counts(db))["communiques"] == 2
    assert b"mirror pass done" in log.read_bytes()


async def test_unmappable_records_go_to_the_rejects_file_and_the_run_goes_on(
    db_url: Any, tmp_path: Path
) -> None:
    source = ClearingHouse()
    source.load()
    db = await db_url("registry")
    await MIGRATIONS.upgrade(db)
    no_pic = latest_body(M1, source)
    no_pic["header"]["identifier"] = "NO-PIC-0000-0001"
    no_pic["picGranted"] = False  # no IRCC without PIC [P3]
    source.publish(no_pic, document_id=207999)
    wrong = latest_body(CB, source)
    wrong["header"]["identifier"] = "WRONG-SCHEMA-0000-0001"
    source.publish(wrong, document_id=208000)
    # Listed as an IRCC by the index, served with another schema's header.
    source.records["WRONG-SCHEMA-0000-0001"].versions[-1]["header"]["schema"] = "contact"
    rejects = tmp_path / "rejects.jsonl"
    async with serving(source.app) as url:
        dry = await run_mirror(db, url, rows=2, rejects=rejects, dry_run=True)
        assert dry.changes == FIRST_CHANGES
        assert (await counts(db))["outbox"] == 0
        assert not rejects.exists()  # a dry run writes nothing

        report = await run_mirror(db, url, rows=2, rejects=rejects)
    assert report.changes == FIRST_CHANGES
    assert report.rejected == 2
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    by_id = {line["identifier"]: line for line in lines}
    assert set(by_id) == {"NO-PIC-0000-0001", "WRONG-SCHEMA-0000-0001"}
    assert "picGranted" in by_id["NO-PIC-0000-0001"]["reason"]
    assert by_id["NO-PIC-0000-0001"]["uid"] == "absch-ircc-af-207999-1"
    assert "header.schema" in by_id["WRONG-SCHEMA-0000-0001"]["reason"]
    assert (await counts(db))["passed"] == 8


async def test_a_record_amended_between_pages_is_taken_at_its_new_revision(
    db_url: Any, tmp_path: Path
) -> None:
    source = ClearingHouse()
    source.load()
    db = await db_url("registry")
    await MIGRATIONS.upgrade(db)

    def amend_after_first_page(page: int) -> None:
        if page == 1:  # M1 was on it: it moves behind CB, which must not be skipped
            source.publish(latest_body(M1, source) | {"amendmentDescription": {"en": "typo"}})

    source.after_page = amend_after_first_page
    async with serving(source.app) as url:
        report = await run_mirror(db, url, rows=1, schemas=("absPermit",))
    assert report.changes == [
        "ABSCH-IRCC-AF-207443-1 ircc.published",
        "ABSCH-IRCC-AF-207608-1 ircc.published",
        "ABSCH-IRCC-AF-207443-2 ircc.amended",
    ]
    assert Counter(p.split("?")[0] for p in source.requests)["/api/v2013/index/select"] == 4


async def test_mirror_rate(db_url: Any, tmp_path: Path) -> None:
    """Records per second through the whole pass against the local source (noted in the
    issue); a floor that only a broken mirror misses."""
    source = ClearingHouse()
    source.load()
    template = latest_body(M1, source)
    for n in range(200):
        body = copy.deepcopy(template)
        body["header"]["identifier"] = f"RATE-{n:04d}-0000-0000"
        source.publish(body, document_id=300000 + n)
    db = await db_url("registry")
    await MIGRATIONS.upgrade(db)
    async with serving(source.app) as url:
        started = time.monotonic()
        report = await run_mirror(db, url, rows=100)
        seconds = time.monotonic() - started
    assert report.mirrored == 206
    rate = report.mirrored / seconds
    assert rate > 5, rate
    (tmp_path / "rate.txt").write_text(f"{rate:.1f} records/s\n")


async def test_the_command_line_dry_run_prints_what_would_change(
    db_url: Any, tmp_path: Path
) -> None:
    source = ClearingHouse()
    source.load()
    db = await db_url("registry")
    await MIGRATIONS.upgrade(db)
    async with serving(source.app) as url:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.registry.mirror",
            "--source",
            url,
            "--dry-run",
            "--rps",
            "0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "REGISTRY_DATABASE_URL": db},
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert out.decode().splitlines() == [f"would publish {c}" for c in FIRST_CHANGES]
    assert (await counts(db))["outbox"] == 0
    assert b"mirror pass done" in err


async def test_the_command_refuses_a_database_not_at_head(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.registry.mirror",
        "--source",
        "http://127.0.0.1:9",
        env={**os.environ, "REGISTRY_DATABASE_URL": db},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 2, err.decode()
    assert b"migrate" in err


async def test_requests_keep_to_the_rate_asked(db_url: Any, tmp_path: Path) -> None:
    source = ClearingHouse()
    source.load()
    db = await db_url("registry")
    await MIGRATIONS.upgrade(db)
    async with serving(source.app) as url:
        report = await run_mirror(db, url, rps=40)
    # Five index pages and six bodies or version lists: ten gaps of 1/40 s at least.
    assert report.requests == len(source.requests) == 11
    assert report.seconds >= 10 / 40


def test_index_documents_and_cursors_read_as_the_real_index_writes_them() -> None:
    sample = json.loads((SAMPLES / "09_solr_index_ircc_response.json").read_text())
    doc = sample["record"]["response"]["docs"][0] | {
        "identifier_s": "X-1",
        "updatedDate_dt": "2024-01-01T00:00:00Z",
    }
    entry = parse_entry(doc)
    # The UID's government wins; the documentID is the Solr id's [C8].
    assert (entry.document_id, entry.revision, entry.government) == (207608, 2, "ht")
    assert entry.uid == "ABSCH-IRCC-HT-207608-2"
    with pytest.raises(SourceError, match="documentID"):
        parse_entry(doc | {"id": format_solr_id(207609)})
    with pytest.raises(SourceError, match="updatedDate_dt"):
        parse_entry({k: v for k, v in doc.items() if k != "updatedDate_dt"})
    assert cursor_filter(None, None) is None
    assert cursor_filter("2024-01-01T00:00:00Z", "52000000cbd0800000032af8") == (
        'updatedDate_dt:{"2024-01-01T00:00:00Z" TO *] OR '
        '(updatedDate_dt:"2024-01-01T00:00:00Z" AND id:{"52000000cbd0800000032af8" TO *])'
    )
