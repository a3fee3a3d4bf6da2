"""The data a pipeline run needs, set up through the registry API, and its observers.

Setup (as in tests/integration/monitor/test_rules.py): NFP/PA of a provider country (mx)
and of a user country (de); in mx a focal point, a CNA, a PIC-holder contact and a pool of
IRCCs that are published then revoked; in de a contact, a checkpoint informing it and a
checkpoint operator. Every CPC then cites one revoked IRCC of the pool (round robin), so
the monitor flags ``IRCC_REVOKED`` for each, and the notifier mails the CPC's recipients
(checkpoint contact, IRCC CNA, provider NFP, PIC holder) and the discrepancy's (provider NFP,
IRCC CNA).

Observers: :class:`MailLog` tails the sink's timing log (mails per CPC uid, from the
``X-ABSCH-Subject`` header); :class:`VerdictReader` reads ``absch.discrepancy.v1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer

from tests.support.records import authority, checkpoint, contact, focal_point, header, permit

PROVIDER, USER = "mx", "de"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_user(
    client: httpx.AsyncClient, creator: str, role: str, gov: str | None, **extra: Any
) -> str:
    body = {
        "name": f"{role} {gov}",
        "email": f"{role}@{gov or 'scbd'}.example",
        "role": role,
        "government": gov,
        **extra,
    }
    resp = await client.post("/v1/users", json=body, headers=auth(creator))
    if resp.status_code != 201:
        raise RuntimeError(f"create user {role}/{gov}: {resp.status_code} {resp.text}")
    return str(resp.json()["token"])


async def publish(client: httpx.AsyncClient, token: str, record: dict[str, Any]) -> dict[str, Any]:
    schema, ident = record["header"]["schema"], record["header"]["identifier"]
    resp = await client.put(f"/v1/records/{schema}/{ident}", json=record, headers=auth(token))
    if resp.status_code != 200:
        raise RuntimeError(f"save {schema}: {resp.status_code} {resp.text}")
    resp = await client.post(f"/v1/records/{schema}/{ident}/publish", headers=auth(token))
    if resp.status_code != 200:
        raise RuntimeError(f"publish {schema}: {resp.status_code} {resp.text}")
    out: dict[str, Any] = resp.json()
    return out


@dataclass
class World:
    """Identifiers and tokens created by :func:`setup`."""

    operator: str
    checkpoint_id: str
    holder_id: str
    irccs: list[str]
    pa_de: str
    setup_mails_expected: int
    _next: int = 0

    def cpc(self) -> dict[str, Any]:
        """A valid CPC on the IRCC branch citing the next revoked IRCC of the pool."""
        ircc = self.irccs[self._next % len(self.irccs)]
        self._next += 1
        return cpc_body(self.checkpoint_id, ircc, self.holder_id)


def cpc_body(checkpoint_id: str, ircc: str, holder_id: str) -> dict[str, Any]:
    return {
        "header": header("absCheckpointCommunique"),
        "government": {"identifier": USER},
        "title": {"en": "Due diligence declaration"},
        "absCheckpoints": [{"identifier": checkpoint_id}],
        "absIRCCs": [{"identifier": ircc}],
        "description": {"en": "Basic research on soil bacteria, non-commercial."},
        "dateCollected": "2025-03-01",
        "personsAtCheckpoint": [{"identifier": holder_id}],
    }


async def setup(registry_url: str, admin: str, *, pool: int) -> World:
    """Users and records through the registry API; ``pool`` revoked IRCCs."""
    async with httpx.AsyncClient(base_url=registry_url, timeout=60) as reg:
        nfp_mx = await create_user(reg, admin, "nfp", PROVIDER)
        pa_mx = await create_user(reg, nfp_mx, "pa", PROVIDER)
        nfp_de = await create_user(reg, admin, "nfp", USER)
        pa_de = await create_user(reg, nfp_de, "pa", USER)
        await publish(reg, admin, focal_point(PROVIDER, ["nfp@mx.example"]))
        cna = authority(PROVIDER, ["cna@mx.example"])
        await publish(reg, pa_mx, cna)
        holder = contact(["holder@mx.example"], gov=PROVIDER)
        holder["header"]["identifier"] = f"BENCH-HOLDER-{uuid.uuid4().hex[:8].upper()}"
        await publish(reg, pa_mx, holder)
        cna_id = cna["header"]["identifier"]
        holder_id = holder["header"]["identifier"]

        async def one_ircc() -> str:
            body = permit(PROVIDER, cna_id, pic_holders=[holder_id], dateOfExpiry="2099-01-01")
            await publish(reg, pa_mx, body)
            ident = str(body["header"]["identifier"])
            resp = await reg.post(
                f"/v1/records/absPermit/{ident}/revoke",
                json={"reason": {"en": "withdrawn by the provider"}},
                headers=auth(pa_mx),
            )
            if resp.status_code != 200:
                raise RuntimeError(f"revoke: {resp.status_code} {resp.text}")
            return ident

        irccs = [await one_ircc() for _ in range(pool)]
        cp_contact = contact(["checkpoint-desk@de.example"], gov=USER)
        await publish(reg, pa_de, cp_contact)
        cp = checkpoint(USER, contacts=[cp_contact["header"]["identifier"]])
        await publish(reg, pa_de, cp)
        cp_id = str(cp["header"]["identifier"])
        operator = await create_user(reg, pa_de, "checkpoint", USER, checkpoint=cp_id)
    # each IRCC: published + revoked, each mailed to CNA, NFP and PIC holder
    return World(operator, cp_id, holder_id, irccs, pa_de, setup_mails_expected=pool * 2 * 3)


# ------------------------------------------------------------------------------ observers


class MailLog:
    """Tails the timing sink's log: arrival times of mails per CPC uid and template."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.by_subject: dict[str, list[float]] = defaultdict(list)
        self.by_template: dict[str, int] = defaultdict(int)
        self.total = 0
        self.last_arrival = 0.0

    def poll(self) -> int:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return 0
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            parts = raw.decode(errors="replace").split("\t")
            if len(parts) < 4:
                continue
            t = float(parts[0])
            self.by_subject[parts[1]].append(t)
            self.by_template[parts[2]] += 1
            self.total += 1
            self.last_arrival = max(self.last_arrival, t)
        return len(lines)


@dataclass
class Verdicts:
    first: dict[str, float] = field(default_factory=dict)  # cpc uid -> time of first flag
    rules: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total: int = 0


class VerdictReader:
    """Reads ``absch.discrepancy.v1`` from the beginning; times are the records' CreateTime
    (set by the monitor's producer), so a busy benchmark process does not delay them."""

    def __init__(self, bootstrap: str, topic: str = "absch.discrepancy.v1") -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.verdicts = Verdicts()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        v = self.verdicts
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=1000)
            now = time.time()
            for records in batches.values():
                for rec in records:
                    try:
                        obj = json.loads(rec.value)
                    except ValueError:
                        continue
                    if obj.get("type") != "discrepancy.flagged":
                        continue
                    data = obj.get("data") or {}
                    uid = data.get("cpc_uid")
                    ts = rec.timestamp / 1000.0 if rec.timestamp and rec.timestamp > 0 else now
                    v.total += 1
                    v.rules[str(data.get("rule"))] += 1
                    if uid and uid not in v.first:
                        v.first[uid] = ts

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
