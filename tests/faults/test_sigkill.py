"""SIGKILL each service in turn under load, restart it: nothing lost, nothing doubled.

Services run as real processes. A client keeps submitting communiqués (each cites a
revoked IRCC, so each raises one discrepancy and several mails) and retries with its
Idempotency-Key when the checkpoint service is down, as a real client would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from services.notifier.settings import NotifierSettings
from shared.events import topic_name
from tests.integration.monitor.test_rules import cpc
from tests.support.kafka import TopicReader
from tests.support.poll import eventually
from tests.support.processes import ServiceProcess
from tests.support.records import authority, checkpoint, focal_point, permit
from tests.support.registry import ADMIN_TOKEN, auth, create_user, government_users, publish
from tools.smtp_sink import SmtpSink

ORDER = ("registry", "checkpoint", "notifier", "monitor")
# Mails a notifier has in flight at once (one per SMTP connection): what a kill may resend.
SMTP_CONNECTIONS = int(NotifierSettings.model_fields["smtp_connections"].default)


def _processes(kafka: str, prefix: str, tmp: Path, smtp: SmtpSink) -> dict[str, ServiceProcess]:
    procs: dict[str, ServiceProcess] = {}
    for name in ORDER:
        procs[name] = ServiceProcess(name, {}, tmp / f"{name}.log")
    registry_url = procs["registry"].url
    common = {
        "KAFKA_BOOTSTRAP": kafka,
        "KAFKA_TOPIC_PREFIX": prefix,
        "ABSCH_ENV": "test",
        "JWKS_URL": f"{registry_url}/.well-known/jwks.json",
        "PUBLIC_BASE_URL": registry_url,
        "LOG_LEVEL": "WARNING",
    }
    extra = {
        "registry": {
            "ABSCH_ADMIN_TOKEN": ADMIN_TOKEN,
            "JWT_PRIVATE_KEY_PATH": str(tmp / "key.pem"),
        },
        "notifier": {
            "SMTP_HOST": smtp.host,
            "SMTP_PORT": str(smtp.port),
            "NOTIFIER_RETRY_BASE_SECONDS": "0.05",
            "NOTIFIER_RETRY_MAX_SECONDS": "0.5",
        },
        "monitor": {
            "MONITOR_RECHECK_INTERVAL_SECONDS": "1",
        },
    }
    for name, proc in procs.items():
        proc.env.update(common | extra.get(name, {}))
        proc.env[f"{name.upper()}_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp / name}.db"
    return procs


class Load:
    """Submits communiqués until stopped; retries each with its key until accepted."""

    def __init__(self, url: str, token: str, cp: str, ircc: str) -> None:
        self.url, self.token, self.cp, self.ircc = url, token, cp, ircc
        self.accepted: list[str] = []
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            n = 0
            while not self.stopping.is_set():
                n += 1
                body = cpc("de", self.cp, irccs=[self.ircc])
                headers = {**auth(self.token), "Idempotency-Key": f"load-{n}"}
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        resp = await client.post("/v1/communiques", json=body, headers=headers)
                        if resp.status_code in (200, 201):
                            self.accepted.append(resp.json()["uid"])
                            break
                    await asyncio.sleep(0.2)  # the service is restarting: back off, retry
                await asyncio.sleep(0.1)


async def test_sigkill_each_service_under_load(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, smtp: SmtpSink
) -> None:
    procs = _processes(kafka_bootstrap, topic_prefix, tmp_path, smtp)
    try:
        for proc in procs.values():
            await proc.start()
        async with httpx.AsyncClient(base_url=procs["registry"].url, timeout=30) as reg:
            mx, de = await government_users(reg, "mx"), await government_users(reg, "de")
            await publish(reg, ADMIN_TOKEN, focal_point("mx", ["nfp@mx.example"]))
            cna = authority("mx", ["cna@mx.example"])
            await publish(reg, mx["pa"], cna)
            ircc = permit("mx", cna["header"]["identifier"])
            await publish(reg, mx["pa"], ircc)
            ident = ircc["header"]["identifier"]
            await reg.post(
                f"/v1/records/absPermit/{ident}/revoke",
                json={"reason": {"en": "withdrawn"}},
                headers=auth(mx["pa"]),
            )
            cp = checkpoint("de", contacts=[])
            cp["contactsToInform"] = []
            await publish(reg, de["pa"], cp)
            operator = await create_user(
                reg, de["pa"], "checkpoint", "de", checkpoint=cp["header"]["identifier"]
            )
        load = Load(procs["checkpoint"].url, operator, cp["header"]["identifier"], ident)
        await eventually(
            lambda: _accepts(procs["checkpoint"].url, operator, cp, ident),
            what="the checkpoint service knows the checkpoint",
        )
        task = asyncio.create_task(load.run())
        for name in os.environ.get("ABSCH_KILL_ONLY", ",".join(ORDER)).split(","):
            before = len(load.accepted)
            await eventually(
                lambda before=before: len(load.accepted) >= before + 5,  # type: ignore[misc]
                timeout=60,
                what=f"load flowing before killing {name}",
            )
            procs[name].signal(signal.SIGKILL)
            procs[name].wait()
            await procs[name].start()
        load.stopping.set()
        await task
        await _check_outcome(kafka_bootstrap, topic_prefix, smtp, load.accepted)
    finally:
        for proc in procs.values():
            proc.stop()


async def _accepts(url: str, token: str, cp: dict[str, Any], ident: str) -> bool:
    body = cpc("de", cp["header"]["identifier"], irccs=[ident])
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        resp = await client.post(
            "/v1/communiques", json=body, headers={**auth(token), "Idempotency-Key": "probe"}
        )
    return resp.status_code in (200, 201)


async def _check_outcome(kafka: str, prefix: str, smtp: SmtpSink, accepted: list[str]) -> None:
    cpcs = set(accepted)
    cpcs_with_probe = len(cpcs) + 1
    async with TopicReader(kafka, topic_name("absch.cpc.v1", prefix)) as reader:
        events = await reader.read_until(
            lambda evs: len({e.subject for e in evs}) >= cpcs_with_probe, timeout=120
        )
    assert cpcs <= {e.subject for e in events}, "every accepted communiqué was published"
    async with TopicReader(kafka, topic_name("absch.discrepancy.v1", prefix)) as reader:
        try:
            flags = await reader.read_until(
                lambda evs: len({e.data.cpc_uid for e in evs}) >= cpcs_with_probe, timeout=120
            )
        except AssertionError:
            missing = sorted(cpcs - {e.data.cpc_uid for e in reader.events})
            raise AssertionError(f"{len(missing)} of {len(cpcs)} not checked: {missing}") from None
    per_finding = Counter(e.data.id for e in {e.id: e for e in flags}.values())
    assert set(per_finding.values()) == {1}, "no finding was raised twice"
    assert cpcs <= {e.data.cpc_uid for e in flags}, "every communiqué was checked"

    # Per CPC: the IRCC's CNA and the provider NFP get the CPC copy and the discrepancy alert.
    def mail_keys() -> Counter[tuple[str, str]]:
        return Counter((m.header("Message-ID"), m.recipient) for m in smtp.mails)

    wanted = 4 * cpcs_with_probe
    await eventually(
        lambda: len(mail_keys()) >= wanted, timeout=180, what=f"{wanted} distinct mails"
    )
    keys = mail_keys()
    subjects = Counter(m.header("X-ABSCH-Subject") for m in smtp.mails)
    assert cpcs <= set(subjects), "every communiqué was mailed"
    resent = {k: n for k, n in keys.items() if n > 1}
    # A kill between the SMTP answer and the commit can only resend the same Message-ID,
    # at most once per SMTP connection (the mails in flight).
    assert len(resent) <= SMTP_CONNECTIONS, f"mails sent twice: {resent}"
    assert all(n == 2 for n in resent.values()), f"mails sent more than twice: {resent}"
