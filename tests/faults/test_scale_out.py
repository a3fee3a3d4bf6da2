"""Two instances of every service on one PostgreSQL and one broker; one of each is
SIGKILLed under load and restarted: every effect still happens exactly once.

DESIGN.md §8: every service runs N instances on one PostgreSQL and one Kafka cluster.
A client submits communiqués to either checkpoint instance (each cites a revoked IRCC, so
each raises one discrepancy), retrying on the other instance with the same Idempotency-Key
when one is down. A few communiqués cite an IRCC nobody published yet: the monitor flags
IRCC_UNKNOWN after its grace period, then the IRCC is published and the finding clears.
In the middle one instance of each service is killed; the load goes on against the
survivors, then the killed ones start again. At the end every mail arrived exactly once,
each (CPC, rule, IRCC) has one finding and one case, each finding was flagged before it
was cleared, and nothing reached a dead-letter topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.notifier.settings import NotifierSettings
from shared.events import CloudEvent, topic_name
from tests.faults.test_database_outage import (
    ORDER,
    Api,
    Load,
    all_mails_arrive,
    check_mails,
    cpc_mails,
    cpcs_on_topic,
    dead_letters,
    dlq_metric,
    first_submission,
    ircc_mails,
    mail_counts,
    mail_summary,
    publish_ircc,
    revoked_ircc_world,
    service_env,
    submit_cpc,
)
from tests.integration.monitor.test_rules import cpc
from tests.support.databases import PG_URL, databases
from tests.support.kafka import TopicReader
from tests.support.poll import eventually
from tests.support.processes import ServiceProcess
from tests.support.records import checkpoint, contact, permit
from tests.support.registry import create_user, publish
from tools.smtp_sink import SmtpSink

INSTANCES = ("a", "b")
# Mails a notifier has in flight at once (one per SMTP connection): what a kill may resend.
SMTP_CONNECTIONS = int(NotifierSettings.model_fields["smtp_connections"].default)
# Killed: registry b (a serves the JWKS the others verify tokens with) and instance a of
# the others (the first member of each consumer group).
KILLED = {"registry": "b", "checkpoint": "a", "notifier": "a", "monitor": "a"}
CP_MAIL = "checkpoint@de.example"  # the checkpoint's contact: a copy of every communiqué
GRACE_SECONDS = 3  # the monitor's wait before an unknown IRCC is flagged
UNKNOWN_AT_LEAST = 3  # communiqués citing an IRCC that is published only after the flag
EXTRA = {
    "monitor": {"MONITOR_UNKNOWN_GRACE_SECONDS": str(GRACE_SECONDS)},
    # The copy of a communiqué citing an unknown IRCC goes out after this wait.
    "notifier": {"NOTIFIER_REFERENCE_WAIT_SECONDS": "2"},
}

Procs = dict[tuple[str, str], ServiceProcess]


def _require_postgres() -> None:
    """Skip without a PostgreSQL server to create databases on; fail under CI."""
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("DATABASE_URL_TEST_PG is not set; CI must provide PostgreSQL")
        pytest.skip("DATABASE_URL_TEST_PG not set")


class Discrepancies:
    """Reads the discrepancy topic in the background while the test runs."""

    def __init__(self, kafka: str, prefix: str) -> None:
        self.reader = TopicReader(kafka, topic_name("absch.discrepancy.v1", prefix))
        self._done = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> Discrepancies:
        await self.reader.__aenter__()
        self._task = asyncio.create_task(
            self.reader.read_until(lambda _: self._done.is_set(), timeout=600)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._done.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        await self.reader.__aexit__()

    @property
    def events(self) -> list[CloudEvent[Any]]:
        return list(self.reader.events)

    def flagged(self, cpc_uid: str, rule: str) -> bool:
        return any(
            e.type == "discrepancy.flagged" and e.data.cpc_uid == cpc_uid and e.data.rule == rule
            for e in self.reader.events
        )


async def _start(procs: Procs, keys: list[tuple[str, str]]) -> None:
    await asyncio.gather(*(procs[key].start() for key in keys))


async def test_two_instances_each_one_killed_under_load(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, smtp: SmtpSink
) -> None:
    _require_postgres()
    started = time.monotonic()
    async with databases("postgres", tmp_path) as make:
        urls = {name: await make(name) for name in ORDER}
        procs: Procs = {
            (name, inst): ServiceProcess(name, {}, tmp_path / f"{name}-{inst}.log")
            for name in ORDER
            for inst in INSTANCES
        }
        registry_url = procs["registry", "a"].url
        for (name, inst), proc in procs.items():
            extra = EXTRA.get(name, {}) | {f"{name.upper()}_INSTANCE_ID": inst}
            proc.env.update(
                service_env(
                    name,
                    kafka=kafka_bootstrap,
                    prefix=topic_prefix,
                    registry_url=registry_url,
                    tmp=tmp_path,
                    smtp=smtp,
                    database_url=urls[name],
                    extra=extra,
                )
            )
        api_reg = Api([procs["registry", i].url for i in INSTANCES])
        api_cp = Api([procs["checkpoint", i].url for i in INSTANCES])
        try:
            # Instance a of each service creates its schema (there is no migration command
            # yet, and two instances creating one schema at once collide), then the b's.
            await procs["registry", "a"].start()  # writes the signing key the others share
            await _start(procs, [(name, "a") for name in ORDER[1:]])
            await _start(procs, [(name, "b") for name in ORDER])
            async with Discrepancies(kafka_bootstrap, topic_prefix) as found:
                await _run(
                    kafka_bootstrap,
                    topic_prefix,
                    smtp,
                    procs,
                    api_reg,
                    api_cp,
                    found,
                    urls,
                    started,
                )
        finally:
            await api_reg.close()
            await api_cp.close()
            for proc in procs.values():
                proc.stop()


async def _run(
    kafka: str,
    prefix: str,
    smtp: SmtpSink,
    procs: Procs,
    api_reg: Api,
    api_cp: Api,
    found: Discrepancies,
    urls: dict[str, str],
    started: float,
) -> None:
    async with httpx.AsyncClient(base_url=procs["registry", "a"].url, timeout=30) as reg:
        world = await revoked_ircc_world(reg)
        mx, de, cna_id, ident, expected = (
            world.mx,
            world.de,
            world.cna_id,
            world.ident,
            world.expected,
        )
        person = contact([CP_MAIL], gov="de")
        await publish(reg, de["pa"], person)
        cp = checkpoint("de", contacts=[person["header"]["identifier"]])
        await publish(reg, de["pa"], cp)
        cp_id = cp["header"]["identifier"]
        operator = await create_user(reg, de["pa"], "checkpoint", "de", checkpoint=cp_id)

    probe = await first_submission(api_cp, operator, cpc("de", cp_id, irccs=[ident]), "probe")
    # The monitor knows the revoked IRCC before the load starts (else its communiqués would
    # first be flagged IRCC_UNKNOWN, then cleared).
    await eventually(
        lambda: found.flagged(probe, "IRCC_REVOKED"), timeout=60, what="the probe's flag"
    )
    load = Load(api_cp, operator, cp_id, ident, tag="load", pause=0.2)
    unknown: list[tuple[str, str]] = []  # (communiqué, IRCC published after its flag)
    stopping = asyncio.Event()

    async def unknown_then_published() -> None:
        n = 0
        while not stopping.is_set() or len(unknown) < UNKNOWN_AT_LEAST:
            n += 1
            record = permit("mx", cna_id)
            body = cpc("de", cp_id, irccs=[record["header"]["identifier"]])
            uid = await submit_cpc(api_cp, operator, body, f"unknown-{n}")
            # Only once the IRCC_UNKNOWN flag is out and the copy went to the checkpoint's
            # contact alone (the IRCC's parties were unknown then) is the IRCC published.
            await eventually(
                lambda u=uid: found.flagged(u, "IRCC_UNKNOWN"),  # type: ignore[misc]
                timeout=60,
                interval=0.2,
                what=f"IRCC_UNKNOWN flagged for {uid}",
            )
            await eventually(
                lambda u=uid: (u, "cpc_published", CP_MAIL) in mail_counts(smtp)[0],  # type: ignore[misc]
                timeout=60,
                interval=0.2,
                what=f"the copy of {uid} to the checkpoint's contact",
            )
            unknown.append((uid, await publish_ircc(api_reg, mx["pa"], record)))

    load_started = time.monotonic()
    tasks = [asyncio.create_task(load.run()), asyncio.create_task(unknown_then_published())]
    try:
        await load.flowing(10, "communiqués accepted before the kill")
        await eventually(lambda: unknown, timeout=60, what="a first unknown IRCC published")
        before = len(load.accepted)
        killed = list(KILLED.items())
        for key in killed:
            procs[key].signal(signal.SIGKILL)
        for key in killed:
            procs[key].wait()
        killed_at = time.monotonic()
        await load.flowing(10, "communiqués accepted by the survivors")
        # The survivors take over the partitions and mail claims of the killed instances:
        # everything accepted so far is checked and mailed before those start again.
        so_far = set(load.accepted)
        mails = set().union(*(cpc_mails(uid, user_side=[CP_MAIL]) for uid in so_far))
        await eventually(
            lambda: (
                mails <= set(mail_counts(smtp)[0])
                and all(found.flagged(uid, "IRCC_REVOKED") for uid in so_far)
            ),
            timeout=60,
            interval=0.2,
            what=f"the survivors checked and mailed the {len(so_far)} communiqués so far",
        )
        during = len(load.accepted) - before
        await _start(procs, killed)
        down = time.monotonic() - killed_at
        await load.flowing(10, "communiqués accepted after the restart")
    finally:
        load.stopping.set()
        stopping.set()
        await asyncio.gather(*tasks)
    load_seconds = time.monotonic() - load_started

    revoked_cpcs = set(load.accepted) | {probe}
    unknown_cpcs = {uid for uid, _ in unknown}
    accepted = revoked_cpcs | unknown_cpcs
    assert len(accepted) == len(load.accepted) + 1 + len(unknown), "one UID per submission"
    lost = accepted - await cpcs_on_topic(kafka, prefix, accepted)
    assert not lost, f"{len(lost)} of {len(accepted)} accepted communiqués not published: {lost}"

    for uid in revoked_cpcs:
        expected |= cpc_mails(uid, user_side=[CP_MAIL])
    for uid, ircc_uid in unknown:
        expected |= {(uid, "cpc_published", CP_MAIL)} | ircc_mails(ircc_uid)
    wanted = {(uid, "IRCC_REVOKED") for uid in revoked_cpcs} | {
        (uid, "IRCC_UNKNOWN") for uid in unknown_cpcs
    }
    await all_mails_arrive(smtp, expected)
    findings = await _check_findings(found, wanted, unknown_cpcs)
    cases = await _check_cases(urls["monitor"], findings, unknown_cpcs)
    dlq = await dead_letters(kafka, prefix)
    assert dlq, "the dead-letter topics exist"
    assert not any(dlq.values()), f"dead letters: {dlq}"
    metric = await dlq_metric(p.url for p in procs.values())
    assert not any(metric.values()), f"absch_dlq_messages_total: {metric}"
    print(  # noqa: T201 - the summary the fault test reports under pytest -s
        f"scale-out: {len(accepted)} CPCs ({before} before the kill, {during} while "
        f"{len(killed)} instances were down for {down:.0f}s; {len(unknown)} cited an unknown "
        f"IRCC, flagged then cleared), {api_cp.retries + api_reg.retries} retried requests, "
        f"{mail_summary(smtp, expected)}, {len(findings)} findings, {cases} cases, "
        f"0 DLQ in {len(dlq)} topics; load {load_seconds:.0f}s, "
        f"total {time.monotonic() - started:.0f}s"
    )
    # One notifier instance is SIGKILLed: the mails it may have had in flight at the SMTP
    # server (one per connection) can go out again (same Message-ID); nothing else may.
    check_mails(smtp, expected, resends_allowed=SMTP_CONNECTIONS)


async def _check_findings(
    found: Discrepancies, wanted: set[tuple[str, str]], unknown: set[str]
) -> dict[str, tuple[str, str, str | None]]:
    """One finding per (CPC, rule, IRCC), each flagged once, cleared only after its flag
    (the IRCC_UNKNOWN ones, once each); returns finding id -> (CPC, rule, IRCC)."""

    def flags() -> set[tuple[str, str]]:
        return {
            (e.data.cpc_uid, e.data.rule) for e in found.events if e.type == "discrepancy.flagged"
        }

    def clears() -> set[str]:
        return {e.data.cpc_uid for e in found.events if e.type == "discrepancy.cleared"}

    await eventually(
        lambda: wanted <= flags() and unknown <= clears(),
        timeout=60,
        what=f"{len(wanted)} findings flagged, {len(unknown)} cleared",
    )
    events = [e for e in found.events if e.type in ("discrepancy.flagged", "discrepancy.cleared")]
    triples: dict[str, tuple[str, str, str | None]] = {}
    ids_per_triple: dict[tuple[str, str, str | None], set[str]] = defaultdict(set)
    sequence: dict[str, list[tuple[str, str]]] = defaultdict(list)  # id -> (type, event id)
    for e in events:
        triple = (e.data.cpc_uid, e.data.rule, e.data.ircc_uid)
        triples[e.data.id] = triple
        ids_per_triple[triple].add(e.data.id)
        if (e.type, e.id) not in sequence[e.data.id]:  # a re-sent event counts once
            sequence[e.data.id].append((e.type, e.id))
    got = Counter((cpc_uid, rule) for cpc_uid, rule, _ in triples.values())
    twice = [pair for pair, n in got.items() if n > 1]
    assert set(got) == wanted, (
        f"{len(triples)} findings for {len(wanted)} expected (CPC, rule) pairs: "
        f"unexpected {sorted(set(got) - wanted)[:10]}, missing {sorted(wanted - set(got))[:10]}"
    )
    assert not twice, f"{len(triples)} findings: (CPC, rule) with several IRCCs: {twice}"
    several = {t: ids for t, ids in ids_per_triple.items() if len(ids) > 1}
    assert not several, f"(CPC, rule, IRCC) with several finding ids: {several}"
    bad: dict[str, list[str]] = {}
    for fid, seq in sequence.items():
        kinds = [kind for kind, _ in seq]
        clear_expected = triples[fid][0] in unknown
        want = ["discrepancy.flagged", "discrepancy.cleared"] if clear_expected else kinds[:1]
        if kinds != want or kinds[0] != "discrepancy.flagged":
            bad[fid] = kinds
    assert not bad, f"{len(bad)} of {len(sequence)} findings out of order or repeated: {bad}"
    return triples


async def _check_cases(
    monitor_db: str, findings: dict[str, tuple[str, str, str | None]], unknown: set[str]
) -> int:
    """One case per finding in the monitor's database: open, or cleared for the cleared."""
    engine = create_async_engine(monitor_db)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(text("SELECT id, rule, cpc_uid, ircc_uid, status FROM cases"))
            ).all()
    finally:
        await engine.dispose()
    per_triple = Counter((r.cpc_uid, r.rule, r.ircc_uid) for r in rows)
    twice = {t: n for t, n in per_triple.items() if n > 1}
    assert not twice, f"{len(rows)} cases for {len(findings)} findings; repeated: {twice}"
    cases = {r.id: (r.cpc_uid, r.rule, r.ircc_uid) for r in rows}
    assert cases == findings, (
        f"{len(cases)} cases for {len(findings)} findings: without a case "
        f"{sorted(set(findings) - set(cases))[:5]}, without a finding "
        f"{sorted(set(cases) - set(findings))[:5]}"
    )
    status = {r.id: r.status for r in rows}
    wrong = {
        fid: status[fid]
        for fid, (cpc_uid, _, _) in findings.items()
        if status[fid] != ("cleared" if cpc_uid in unknown else "open")
    }
    assert not wrong, f"cases in the wrong state: {wrong}"
    return len(rows)
