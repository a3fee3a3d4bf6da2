"""A utilization workload with its pure-Python recount, and analytics worker processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from services.monitor.analytics.app import LOCAL_VIEW
from services.monitor.analytics.counting import month_of
from shared.events import CloudEvent, Topic, new_event, topic_name
from shared.events.models import CpcAmended, CpcPublished, DiscrepancyEvent, IrccEvent
from tests.support.poll import eventually
from tools.ports import free_port

PROVIDERS = ["mx", "br", "pe", "za", "in", "id"]
USERS = ["de", "fr", "jp", "ch", "no"]
MONTHS = [datetime(2026, m, 1, tzinfo=UTC) for m in (1, 2, 3)]
# Reports close 120 days after a month: no month of the workload closes until the
# closing citations (August) arrive, so each report holds the whole month.
GRACE_SECONDS = 120 * 86_400
CLOSING = datetime(2026, 8, 15, tzinfo=UTC)


@dataclass
class Workload:
    """Events for the input topics and what they must count to."""

    events: list[tuple[Topic, str, CloudEvent[Any]]] = field(default_factory=list)
    provider_of: dict[str, str] = field(default_factory=dict)  # IRCC identifier -> country
    # (CPC revision UID, user, cited IRCCs, checkpoints, time), each revision once
    cpcs: list[tuple[str, str, list[str], list[str], datetime]] = field(default_factory=list)
    flags: list[tuple[str, str, str, datetime]] = field(default_factory=list)  # id, P, rule, t

    def months(self) -> dict[str, dict[str, Any]]:
        """The pure recount: ``<provider>|<month>`` -> cells, checkpoints, discrepancies."""
        out: dict[str, dict[str, Counter[str]]] = {}

        def month(provider: str, at: datetime) -> dict[str, Counter[str]]:
            return out.setdefault(
                f"{provider}|{month_of(at)}",
                {"cells": Counter(), "checkpoints": Counter(), "discrepancies": Counter()},
            )

        for _uid, user, cited, checkpoints, at in self.cpcs:
            for ident in dict.fromkeys(cited):
                m = month(self.provider_of[ident], at)
                m["cells"][f"{user}|{ident}"] += 1
                for cp in checkpoints:
                    m["checkpoints"][cp] += 1
        for _id, provider, rule, at in self.flags:
            month(provider, at)["discrepancies"][rule] += 1
        return {k: {n: dict(c) for n, c in v.items()} for k, v in out.items()}

    def pairs(self) -> set[tuple[str, str]]:
        """(provider, user) pairs with at least one citation: one first-use alert each."""
        return {(self.provider_of[i], user) for _u, user, cited, _c, _t in self.cpcs for i in cited}

    def citations(self) -> int:
        """Citations the workload counts to."""
        return sum(len(set(cited)) for _u, _us, cited, _c, _t in self.cpcs)

    async def produce(
        self, bootstrap: str, prefix: str, events: list[tuple[Topic, str, CloudEvent[Any]]]
    ) -> None:
        """Send ``events`` in their order with the project's envelope."""
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            for topic, key, event in events:
                await producer.send(
                    topic_name(topic, prefix), event.to_json_bytes(), key=key.encode()
                )
            await producer.flush()
        finally:
            await producer.stop()


def _ircc(w: Workload, doc: int, provider: str, revision: int) -> None:
    ident = f"T-IRCC-{doc}"
    uid = f"ABSCH-IRCC-{provider.upper()}-{doc}-{revision}"
    record = {
        "header": {"identifier": ident, "schema": "absPermit", "languages": ["en"]},
        "government": {"identifier": provider},
        "absCNA": {"identifier": f"T-CNA-{provider}"},
        "subjectMatter": {"en": f"Samples {doc}"},
    }
    data = IrccEvent(
        uid=uid,
        identifier=ident,
        document_id=doc,
        revision=revision,
        government=provider,
        record=record,
    )
    kind = "ircc.published" if revision == 1 else "ircc.amended"
    event = new_event(kind, source="registry", subject=uid, data=data)
    w.events.append((Topic.IRCC, uid.rsplit("-", 1)[0], event))
    w.provider_of[ident] = provider


def cpc(
    w: Workload, doc: int, revision: int, user: str, cited: list[str], at: datetime
) -> tuple[Topic, str, CloudEvent[Any]]:
    """A CPC revision citing ``cited``, published at ``at``; recorded in the recount."""
    uid = f"ABSCH-CPC-{user.upper()}-{doc}-{revision}"
    checkpoints = [f"T-CP-{user}"]
    record = {
        "header": {"identifier": f"T-CPC-{doc}", "schema": "absCheckpointCommunique"},
        "government": {"identifier": user},
        "absIRCCs": [{"identifier": i} for i in cited],
    }
    fields: dict[str, Any] = {
        "uid": uid,
        "identifier": f"T-CPC-{doc}",
        "document_id": doc,
        "revision": revision,
        "government": user,
        "checkpoints": checkpoints,
        "record": record,
    }
    if revision == 1:
        event = new_event(
            "cpc.published", source="checkpoint", subject=uid, data=CpcPublished(**fields)
        )
    else:
        data = CpcAmended(
            **fields,
            reason={"en": "corrected"},
            previous_uid=f"{uid.rsplit('-', 1)[0]}-{revision - 1}",
        )
        event = new_event("cpc.amended", source="checkpoint", subject=uid, data=data)
    event = event.model_copy(update={"time": at})
    w.cpcs.append((uid, user, cited, checkpoints, at))
    return (Topic.CPC, uid.rsplit("-", 1)[0], event)


def build(seed: int, *, cpcs: int = 200, amended: int = 20, duplicates: int = 10) -> Workload:
    """6 provider and 5 user countries, 3 IRCCs per provider, ``cpcs`` CPCs over three
    months, ``amended`` of them amended, flagged discrepancies, and ``duplicates`` events
    sent twice (a producer retry), all shuffled."""
    rng = random.Random(seed)
    w = Workload()
    for n, provider in enumerate(PROVIDERS):
        for k in range(3):
            _ircc(w, 100 + n * 3 + k, provider, 1)
            if rng.random() < 0.3:
                _ircc(w, 100 + n * 3 + k, provider, 2)
    idents = sorted(w.provider_of)
    for doc in range(1, cpcs + 1):
        user = rng.choice(USERS)
        at = rng.choice(MONTHS) + timedelta(days=rng.randrange(28), seconds=rng.randrange(86_400))
        w.events.append(cpc(w, doc, 1, user, rng.sample(idents, rng.choice([1, 1, 2, 3])), at))
        if doc <= amended:
            w.events.append(cpc(w, doc, 2, user, rng.sample(idents, 1), at + timedelta(days=2)))
    for n in range(15):
        provider, user = rng.choice(PROVIDERS), rng.choice(USERS)
        at = rng.choice(MONTHS) + timedelta(days=rng.randrange(28))
        data = DiscrepancyEvent(
            id=f"T-D-{n}",
            rule=rng.choice(["IRCC_REVOKED", "USE_MISMATCH"]),
            cpc_uid=f"ABSCH-CPC-{user.upper()}-{n}-1",
            provider_country=provider,
            user_country=user,
        )
        event = new_event("discrepancy.flagged", source="monitor", subject=data.id, data=data)
        event = event.model_copy(update={"time": at})
        w.events.append((Topic.DISCREPANCY, data.id, event))
        w.flags.append((event.id, provider, data.rule, at))
    w.events += rng.sample(w.events, duplicates)
    rng.shuffle(w.events)
    return w


def closing(w: Workload) -> list[tuple[Topic, str, CloudEvent[Any]]]:
    """One August citation per provider country: their watermark passes the grace after
    March, which closes January to March."""
    by_provider = {p: i for i, p in sorted(w.provider_of.items(), reverse=True)}
    return [cpc(w, 9000 + n, 1, "de", [by_provider[p]], CLOSING) for n, p in enumerate(PROVIDERS)]


def expected_reports(w: Workload) -> set[tuple[str, str]]:
    """(provider, month) of every report the closing citations must cause."""
    return {
        (w.provider_of[i], month_of(at))
        for _u, _us, cited, _c, at in w.cpcs
        for i in cited
        if at < MONTHS[-1] + timedelta(days=31)
    }


class AnalyticsWorker:
    """``python -m services.monitor.analytics`` as an OS process with its own web port."""

    def __init__(
        self, *, kafka: str, prefix: str, app_id: str, log: Path, store: str = "memory://"
    ) -> None:
        self.log = log
        self.port = free_port()
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP": kafka,
            "KAFKA_TOPIC_PREFIX": prefix,
            "ANALYTICS_APP_ID": app_id,
            "ANALYTICS_WEB_PORT": str(self.port),
            "ANALYTICS_DATA_DIR": str(log.parent / f"data-{log.stem}"),
            "ANALYTICS_STORE": store,
            "ANALYTICS_REPORT_GRACE_SECONDS": str(GRACE_SECONDS),
            "PYTHONUNBUFFERED": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> float:
        """Start and wait until the worker owns partitions; seconds it took."""
        t0 = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                [sys.executable, "-m", "services.monitor.analytics"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        await eventually(self.ready, timeout=90, what="analytics worker ready")
        return time.monotonic() - t0

    async def local(self) -> dict[str, Any] | None:
        """The worker's own partitions and counts, None while it cannot answer."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"analytics worker exited: {self.log.read_text()[-3000:]}")
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                r = await client.get(f"http://127.0.0.1:{self.port}{LOCAL_VIEW}")
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    async def metrics(self) -> str:
        """The worker's Prometheus text."""
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(f"http://127.0.0.1:{self.port}/metrics")
        r.raise_for_status()
        return r.text

    async def ready(self) -> bool:
        """Answering, with partitions assigned."""
        local = await self.local()
        return bool(local and local["partitions"])

    def kill(self) -> None:
        """SIGKILL: no clean leave, nothing flushed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM (clean stop), then SIGKILL if it hangs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def merged(locals_: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Month counts of several workers, in the recount's shape."""
    out: dict[str, dict[str, Any]] = {}
    for local in locals_:
        for key, value in local["months"].items():
            assert key not in out, f"{key} counted by two workers"
            out[key] = {
                "cells": value["cells"],
                "checkpoints": value["checkpoints"],
                "discrepancies": value["discrepancies"],
            }
    return out
