"""PostgreSQL stops for 30 s under load: nothing lost, nothing doubled, nothing dead-lettered.

The four services run as real processes, each on its own database of one private
PostgreSQL cluster, with the embedded broker and a real SMTP sink. A client keeps
submitting communiqués (each cites a revoked IRCC, so each raises one discrepancy) and the
registry keeps publishing IRCCs; both retry on 5xx answers and dropped connections, as a
real client does, the communiqués with their Idempotency-Key. Then the cluster stops for
``ABSCH_FAULT_SECONDS`` (30) and starts again. It stops while the notifier is sending a
burst of mails (one communiqué to a checkpoint with many contacts), the moment an outcome
can be lost. A database that can't be reached is a transient failure (DESIGN.md §8):
consumers pause and retry, ``/readyz`` says 503 naming ``database`` while it lasts, and no
event reaches a dead-letter topic.

The helpers here (patient client, load, mail and dead-letter accounting) are shared with
``test_scale_out.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.events import topic_name
from tests.integration.monitor.test_rules import cpc
from tests.support.kafka import TopicReader
from tests.support.metrics import metrics_url
from tests.support.pgcluster import PrivateCluster
from tests.support.poll import eventually
from tests.support.processes import ServiceProcess
from tests.support.records import authority, checkpoint, contact, focal_point, permit
from tests.support.registry import ADMIN_TOKEN, auth, create_user, government_users, publish
from tools.smtp_sink import SmtpSink

OUTAGE_SECONDS = float(os.environ.get("ABSCH_FAULT_SECONDS", "30"))
ORDER = ("registry", "checkpoint", "notifier", "monitor")
BURST = 30  # contacts of the checkpoint whose communiqué is being mailed when the outage starts
CNA_MAIL, NFP_MAIL = "cna@mx.example", "nfp@mx.example"
DLQ_TOPIC = re.compile(r"absch\.[a-z_]+\.v1\.dlq")
# (X-ABSCH-Subject, X-ABSCH-Template, recipient): what one mail is about, and to whom.
MailKey = tuple[str, str, str]


# -- services as processes -------------------------------------------------------------


def service_env(
    name: str,
    *,
    kafka: str,
    prefix: str,
    registry_url: str,
    tmp: Path,
    smtp: SmtpSink,
    database_url: str,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one service process (fast retries, quiet logs), plus ``extra``."""
    env = {
        "KAFKA_BOOTSTRAP": kafka,
        "KAFKA_TOPIC_PREFIX": prefix,
        "ABSCH_ENV": "test",
        "JWKS_URL": f"{registry_url}/.well-known/jwks.json",
        "PUBLIC_BASE_URL": registry_url,
        "LOG_LEVEL": "WARNING",
        f"{name.upper()}_DATABASE_URL": database_url,
    }
    if name == "registry":
        env |= {"ABSCH_ADMIN_TOKEN": ADMIN_TOKEN, "JWT_PRIVATE_KEY_PATH": str(tmp / "key.pem")}
    elif name == "notifier":
        env |= {
            "SMTP_HOST": smtp.host,
            "SMTP_PORT": str(smtp.port),
            "NOTIFIER_RETRY_BASE_SECONDS": "0.05",
            "NOTIFIER_RETRY_MAX_SECONDS": "0.5",
            # A claim whose worker lost the database is taken over this soon after.
            "NOTIFIER_SMTP_TIMEOUT": "2",
            "NOTIFIER_CLAIM_SECONDS": "5",
        }
    elif name == "monitor":
        env |= {"MONITOR_RECHECK_INTERVAL_SECONDS": "1"}
    return env | (extra or {})


async def ready_status(url: str) -> tuple[int, dict[str, Any]]:
    """``GET /readyz``: status code and body (0 and {} when nothing answers)."""
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            resp = await client.get(f"{url}/readyz")
    except httpx.HTTPError:
        return 0, {}
    body: dict[str, Any] = resp.json()
    return resp.status_code, body


# -- a patient client ------------------------------------------------------------------


class Api:
    """HTTP calls as a real client makes them: a 5xx answer or a dropped connection is
    retried after a short pause, on the next instance when there are several."""

    def __init__(self, urls: list[str], *, pause: float = 0.2) -> None:
        self.urls = urls
        self.pause = pause
        self.retries = 0
        self._next = 0
        self._client = httpx.AsyncClient(timeout=10)

    async def close(self) -> None:
        await self._client.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[httpx.Response, int]:
        """The first answer below 500, and how many attempts failed before it."""
        failed = 0
        self._next += 1  # spread calls over the instances
        while True:
            url = self.urls[(self._next + failed) % len(self.urls)]
            try:
                resp = await self._client.request(
                    method, f"{url}{path}", json=body, headers={**auth(token), **(headers or {})}
                )
                if resp.status_code < 500:
                    return resp, failed
            except httpx.HTTPError:
                pass
            failed += 1
            self.retries += 1
            await asyncio.sleep(self.pause)  # a client's back-off, not a synchronisation


async def first_submission(api: Api, token: str, body: dict[str, Any], key: str) -> str:
    """Submit a communiqué, retrying also while the checkpoint service has not yet read
    the cited checkpoint from the directory topic (422 naming it); its UID."""

    async def accepted() -> str | None:
        resp, _ = await api.call(
            "POST", "/v1/communiques", token=token, body=body, headers={"Idempotency-Key": key}
        )
        if resp.status_code == 422 and "absCheckpoints" in resp.text:
            return None
        assert resp.status_code in (200, 201), f"communiqué {key} refused: {resp.text}"
        return str(resp.json()["uid"])

    uid: str = await eventually(accepted, what=f"communiqué {key} accepted")
    return uid


async def submit_cpc(api: Api, token: str, body: dict[str, Any], key: str) -> str:
    """Submit a communiqué until accepted (same Idempotency-Key every time); its UID."""
    resp, _ = await api.call(
        "POST", "/v1/communiques", token=token, body=body, headers={"Idempotency-Key": key}
    )
    assert resp.status_code in (200, 201), f"communiqué {key} refused: {resp.text}"
    return str(resp.json()["uid"])


async def publish_ircc(api: Api, token: str, record: dict[str, Any]) -> str:
    """Save and publish an IRCC through the registry, retrying; the UID of revision 1."""
    ident = record["header"]["identifier"]
    resp, _ = await api.call("PUT", f"/v1/records/absPermit/{ident}", token=token, body=record)
    assert resp.status_code == 200, f"draft of {ident}: {resp.text}"
    resp, failed = await api.call("POST", f"/v1/records/absPermit/{ident}/publish", token=token)
    if resp.status_code == 200:
        return str(resp.json()["uid"])
    # An attempt whose answer was lost may have published it: then revision 1 exists.
    assert failed, f"publishing {ident}: {resp.text}"
    assert resp.status_code == 409, f"publishing {ident} again: {resp.text}"
    resp, _ = await api.call("GET", f"/v1/records/{ident}/revisions", token=token)
    assert resp.status_code == 200, f"revisions of {ident}: {resp.text}"
    revisions = resp.json()
    assert len(revisions) == 1, f"{ident} was published once: {revisions}"
    return str(revisions[0]["uid"])


@dataclass
class Load:
    """Communiqués citing ``ircc`` one after the other until stopped; each retried with its
    Idempotency-Key until accepted."""

    api: Api
    token: str
    checkpoint: str
    ircc: str
    tag: str
    pause: float = 0.1
    accepted: list[str] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            body = cpc("de", self.checkpoint, irccs=[self.ircc])
            self.accepted.append(await submit_cpc(self.api, self.token, body, f"{self.tag}-{n}"))
            await asyncio.sleep(self.pause)  # the client's pace

    async def flowing(self, more: int, what: str, timeout: float = 60) -> None:
        """Until ``more`` communiqués beyond those accepted now were accepted."""
        target = len(self.accepted) + more
        await eventually(lambda: len(self.accepted) >= target, timeout=timeout, what=what)


# -- what came out -----------------------------------------------------------------------


def cpc_mails(uid: str, *, user_side: Iterable[str] = ()) -> set[MailKey]:
    """A communiqué citing the revoked IRCC: its copy and the discrepancy alert, to the
    IRCC's CNA and the provider NFP (and the checkpoint's contacts)."""
    parties = (CNA_MAIL, NFP_MAIL)
    return {(uid, "cpc_published", who) for who in (*parties, *user_side)} | {
        (uid, "discrepancy_flagged", who) for who in parties
    }


def ircc_mails(uid: str, template: str = "ircc_published") -> set[MailKey]:
    """An IRCC published (or revoked): its CNA and the NFP of its government."""
    return {(uid, template, who) for who in (CNA_MAIL, NFP_MAIL)}


def mail_counts(smtp: SmtpSink) -> tuple[Counter[MailKey], Counter[tuple[str, str]]]:
    """Mails per (subject, template, recipient), and per (event id, recipient)."""
    mails = smtp.mails
    about = Counter(
        (m.header("X-ABSCH-Subject"), m.header("X-ABSCH-Template"), m.recipient.lower())
        for m in mails
    )
    per_event = Counter((m.header("X-ABSCH-Event-ID"), m.recipient.lower()) for m in mails)
    return about, per_event


async def all_mails_arrive(smtp: SmtpSink, expected: set[MailKey], *, timeout: float = 90) -> None:
    """Until every expected mail arrived (fails naming a few missing ones)."""

    def missing() -> set[MailKey]:
        return expected - set(mail_counts(smtp)[0])

    try:
        await eventually(lambda: not missing(), timeout=timeout, what="every expected mail")
    except AssertionError:
        gone = missing()
        raise AssertionError(
            f"{len(gone)} of {len(expected)} expected mails never arrived: {sorted(gone)[:10]}"
        ) from None


def mail_summary(smtp: SmtpSink, expected: set[MailKey]) -> str:
    """How many mails arrived for how many expected, and how many of them twice."""
    about, _ = mail_counts(smtp)
    again = sum(n - 1 for n in about.values() if n > 1)
    return f"{sum(about.values())} mails for {len(expected)} expected ({again} sent again)"


def check_mails(smtp: SmtpSink, expected: set[MailKey], *, resends_allowed: int = 0) -> int:
    """Every expected mail arrived, and no other; returns how many arrived.

    Exactly once, unless ``resends_allowed``: a notifier killed between the SMTP server's
    answer and its own commit sends that mail again. A resend must then carry the same
    Message-ID (what mail clients drop duplicates by), and there are at most that many."""
    about, per_event = mail_counts(smtp)
    missing = expected - set(about)
    assert not missing, f"{len(missing)} of {len(expected)} mails missing: {sorted(missing)[:10]}"
    twice = {k: n for k, n in about.items() if n > 1}
    unexpected = set(about) - expected
    total = sum(about.values())
    resent = sum(n - 1 for n in per_event.values() if n > 1)
    too_many = f"{total} mails for {len(expected)} expected; sent more than once: {twice}"
    assert resent <= resends_allowed, too_many
    assert len(twice) <= resends_allowed, too_many
    ids = Counter(
        (m.header("X-ABSCH-Event-ID"), m.recipient.lower(), m.header("Message-ID"))
        for m in smtp.mails
    )
    assert len(ids) == len(per_event), "a resent mail keeps its Message-ID"
    assert not unexpected, f"{len(unexpected)} unexpected mails: {sorted(unexpected)[:10]}"
    return total


async def dead_letters(kafka: str, prefix: str) -> dict[str, int]:
    """Messages in every ``<prefix>absch.*.v1.dlq`` topic, read from the beginning.

    The true end of a partition is the high watermark of a Fetch answer (the embedded
    broker's ListOffsets is short), so each partition is read until its watermark is known.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka, enable_auto_commit=False, group_id=None, fetch_max_wait_ms=100
    )
    await consumer.start()
    try:
        names = sorted(
            t
            for t in await consumer.topics()
            if t.startswith(prefix) and DLQ_TOPIC.fullmatch(t[len(prefix) :])
        )
        parts = [
            TopicPartition(t, p) for t in names for p in consumer.partitions_for_topic(t) or ()
        ]
        counts = dict.fromkeys(names, 0)
        if not parts:
            return counts
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)

        async def read() -> bool:
            await consumer.getmany(timeout_ms=200)
            return all(consumer.highwater(tp) is not None for tp in parts)

        await eventually(read, timeout=30, what="the end of every dead-letter topic")
        for tp in parts:  # offsets start at 0 and nothing is ever deleted
            counts[tp.topic] += consumer.highwater(tp) or 0
        return counts
    finally:
        await consumer.stop()


async def dlq_metric(urls: Iterable[str]) -> dict[str, float]:
    """``absch_dlq_messages_total`` summed per service base URL."""
    out: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for url in urls:
            text = (await client.get(metrics_url(url))).text
            values = re.findall(r"^absch_dlq_messages_total\{[^}]*\} (\S+)$", text, re.M)
            out[url] = sum(float(v) for v in values)
    return out


async def cpcs_on_topic(kafka: str, prefix: str, uids: set[str]) -> set[str]:
    """The accepted communiqués found on the cpc topic (waits for all of them)."""
    async with TopicReader(kafka, topic_name("absch.cpc.v1", prefix)) as reader:
        with contextlib.suppress(AssertionError):
            await reader.read_until(lambda evs: uids <= {e.subject for e in evs}, timeout=60)
        return uids & {e.subject for e in reader.events}


# -- the test ----------------------------------------------------------------------------


async def _outage(pg: PrivateCluster, procs: dict[str, ServiceProcess]) -> dict[str, str]:
    """Stop the cluster for OUTAGE_SECONDS; every service says 503 naming the database
    meanwhile and 200 after. Returns the database detail each service gave."""
    await pg.stop()
    stopped = time.monotonic()
    details: dict[str, str] = {}

    async def database_down(name: str) -> bool:
        status, body = await ready_status(procs[name].url)
        if status == 503 and body.get("checks", {}).get("database") is False:
            details[name] = str(body.get("details", {}).get("database", ""))
            return True
        return False

    await asyncio.gather(
        *(
            eventually(
                lambda n=name: database_down(n),  # type: ignore[misc]
                timeout=max(OUTAGE_SECONDS, 15),
                interval=0.2,
                what=f"{name} /readyz 503 naming the database",
            )
            for name in ORDER
        )
    )
    # Hold the outage for its full length: this is the fault, not a wait for it.
    await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
    await pg.start()

    async def ready(name: str) -> bool:
        return (await ready_status(procs[name].url))[0] == 200

    await asyncio.gather(
        *(
            eventually(
                lambda n=name: ready(n),  # type: ignore[misc]
                timeout=60,
                interval=0.2,
                what=f"{name} /readyz 200 after the outage",
            )
            for name in ORDER
        )
    )
    return details


async def test_database_outage_under_load_loses_and_doubles_nothing(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, smtp: SmtpSink
) -> None:
    started = time.monotonic()
    async with PrivateCluster() as pg:
        procs = {name: ServiceProcess(name, {}, tmp_path / f"{name}.log") for name in ORDER}
        for name, proc in procs.items():
            proc.env.update(
                service_env(
                    name,
                    kafka=kafka_bootstrap,
                    prefix=topic_prefix,
                    registry_url=procs["registry"].url,
                    tmp=tmp_path,
                    smtp=smtp,
                    database_url=await pg.create_database(name),
                )
            )
        api_reg = Api([procs["registry"].url])
        api_cp = Api([procs["checkpoint"].url])
        try:
            for proc in procs.values():
                await proc.start()
            await _run(kafka_bootstrap, topic_prefix, smtp, pg, procs, api_reg, api_cp, started)
        finally:
            await api_reg.close()
            await api_cp.close()
            for proc in procs.values():
                proc.stop()


@dataclass
class RevokedWorld:
    """Mexico's users, NFP and CNA, an IRCC of Mexico published then revoked, and Germany's
    users; ``expected`` are the IRCC's mails."""

    mx: dict[str, str]
    de: dict[str, str]
    cna_id: str
    ident: str
    expected: set[MailKey]


async def revoked_ircc_world(reg: httpx.AsyncClient) -> RevokedWorld:
    """Publish :class:`RevokedWorld` through the registry."""
    mx, de = await government_users(reg, "mx"), await government_users(reg, "de")
    await publish(reg, ADMIN_TOKEN, focal_point("mx", [NFP_MAIL]))
    cna = authority("mx", [CNA_MAIL])
    await publish(reg, mx["pa"], cna)
    cna_id = cna["header"]["identifier"]
    revoked = permit("mx", cna_id)
    ident = revoked["header"]["identifier"]
    first = await publish(reg, mx["pa"], revoked)
    resp = await reg.post(
        f"/v1/records/absPermit/{ident}/revoke",
        json={"reason": {"en": "withdrawn"}},
        headers=auth(mx["pa"]),
    )
    assert resp.status_code == 200, resp.text
    expected = ircc_mails(first["uid"]) | ircc_mails(resp.json()["uid"], "ircc_revoked")
    return RevokedWorld(mx, de, cna_id, ident, expected)


async def _run(
    kafka: str,
    prefix: str,
    smtp: SmtpSink,
    pg: PrivateCluster,
    procs: dict[str, ServiceProcess],
    api_reg: Api,
    api_cp: Api,
    started: float,
) -> None:
    reg = httpx.AsyncClient(base_url=procs["registry"].url, timeout=30)
    async with reg:
        world = await revoked_ircc_world(reg)
        mx, de, cna_id, ident, expected = (
            world.mx,
            world.de,
            world.cna_id,
            world.ident,
            world.expected,
        )
        burst_to = [f"contact-{n}@de.example" for n in range(BURST)]
        contacts = [contact([address], gov="de") for address in burst_to]
        for record in contacts:
            await publish(reg, de["pa"], record)
        burst_cp = checkpoint("de", contacts=[c["header"]["identifier"] for c in contacts])
        await publish(reg, de["pa"], burst_cp)
        cp = checkpoint("de", contacts=[])
        await publish(reg, de["pa"], cp)
        cp_id = cp["header"]["identifier"]
        operator = await create_user(reg, de["pa"], "checkpoint", "de", checkpoint=cp_id)

    probe_uid = await first_submission(api_cp, operator, cpc("de", cp_id, irccs=[ident]), "probe")
    load = Load(api_cp, operator, cp_id, ident, tag="load")
    irccs: list[str] = []
    stopping = asyncio.Event()

    async def publish_irccs() -> None:
        while not stopping.is_set():
            irccs.append(await publish_ircc(api_reg, mx["pa"], permit("mx", cna_id)))
            await asyncio.sleep(0.5)  # the registry client's pace

    load_started = time.monotonic()
    tasks = [asyncio.create_task(load.run()), asyncio.create_task(publish_irccs())]
    try:
        await load.flowing(10, "communiqués accepted before the outage")
        await eventually(lambda: len(irccs) >= 2, timeout=30, what="IRCCs before the outage")
        # The outage starts while the notifier is in the middle of sending: one communiqué
        # to a checkpoint with many contacts queues a burst of mails at once.
        body = cpc("de", burst_cp["header"]["identifier"], irccs=[ident])
        burst_uid = await first_submission(api_cp, de["pa"], body, "burst")
        await eventually(
            lambda: any(m.header("X-ABSCH-Subject") == burst_uid for m in smtp.mails),
            timeout=60,
            interval=0.01,
            what="the burst's first mail",
        )
        before = len(load.accepted)
        details = await _outage(pg, procs)
        await load.flowing(10, "communiqués accepted after the outage")
    finally:
        load.stopping.set()
        stopping.set()
        await asyncio.gather(*tasks)
    load_seconds = time.monotonic() - load_started

    accepted = set(load.accepted) | {probe_uid, burst_uid}
    assert len(accepted) == len(load.accepted) + 2, "every submission got a UID of its own"
    published = await cpcs_on_topic(kafka, prefix, accepted)
    lost = accepted - published
    assert not lost, f"{len(lost)} of {len(accepted)} accepted communiqués not published: {lost}"
    expected |= cpc_mails(burst_uid, user_side=burst_to)
    for uid in accepted - {burst_uid}:
        expected |= cpc_mails(uid)
    for uid in irccs:
        expected |= ircc_mails(uid)
    await all_mails_arrive(smtp, expected)
    dlq = await dead_letters(kafka, prefix)
    assert dlq, "the dead-letter topics exist"
    assert not any(dlq.values()), f"dead letters after the outage: {dlq}"
    metric = await dlq_metric(p.url for p in procs.values())
    assert not any(metric.values()), f"absch_dlq_messages_total after the outage: {metric}"
    print(  # noqa: T201 - the summary the fault test reports under pytest -s
        f"database outage ({OUTAGE_SECONDS:.0f}s): {len(accepted)} CPCs ({before} before, "
        f"{api_cp.retries} retried requests), {len(irccs)} IRCCs ({api_reg.retries} retried), "
        f"{mail_summary(smtp, expected)}, 0 DLQ in {len(dlq)} topics; "
        f"load {load_seconds:.0f}s, total {time.monotonic() - started:.0f}s; "
        f"readyz said {details}"
    )
    check_mails(smtp, expected)
