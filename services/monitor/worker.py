"""The monitor's stream processor (faust): IRCC state, citations, checks, discrepancies.

Topology (all topics carry the deployment prefix):

- ``absch.ircc.v1`` → re-keyed by IRCC ``header.identifier`` onto the work topic;
- ``absch.cpc.v1`` → one citation per cited IRCC (keyed by that IRCC) plus one CPC item
  (keyed ``cpc:<uid>``) onto the work topic;
- the work topic's agent keeps the IRCC states, one entry per citation (``<ircc>|<cpc>``)
  with an index of the CPCs citing each IRCC, the CPC items and the findings raised per
  citation or CPC (tables with changelogs), evaluates, and emits ``discrepancy.*``;
- a timer re-checks keys whose grace period for unknown references has passed.

Everything one evaluation needs is in one partition, so any number of workers gives the
same results as one, and results do not depend on the order events arrive in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import faust

from services.monitor import evaluation as ev
from services.monitor.adapters.rewinding_transport import MonitorApp
from services.monitor.directory import CheckpointView
from services.monitor.domain import apply_ircc_event
from services.monitor.metrics import MonitorMetrics
from services.monitor.settings import MonitorSettings
from shared.events import DecodeError, Topic, UnknownEventType, decode_event, dlq_name, topic_name
from shared.events.models import CpcPublished, IrccEvent

log = logging.getLogger(__name__)


def _broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(","))


async def _acknowledged(sent: Any, what: str, *, warn_every: float = 10.0) -> None:
    """Wait for the broker's acknowledgement, saying so while it is late (a stuck send
    would otherwise stop its agent without a word)."""
    waited = 0.0
    while True:
        try:
            await asyncio.wait_for(asyncio.shield(sent), warn_every)
            return
        except TimeoutError:
            waited += warn_every
            log.warning("%s not acknowledged by the broker after %.0fs", what, waited)


def _raw_topic(app: faust.App, name: str) -> Any:
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


class MonitorWorker:
    """A faust app configured from settings; run it with ``faust_app_running``."""

    def __init__(
        self,
        settings: MonitorSettings,
        *,
        metrics: MonitorMetrics,
        checkpoints: CheckpointView,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.checkpoints = checkpoints
        self.clock = clock
        self.grace = timedelta(seconds=settings.unknown_grace_seconds)
        prefix = settings.kafka_topic_prefix
        extra: dict[str, Any] = {}
        if settings.single_record_batches:
            extra = {"producer_max_batch_size": 1, "producer_linger_ms": 0}
        parts = settings.kafka_partitions
        self.app = MonitorApp(
            f"{prefix}absch-monitor",
            broker=_broker_url(settings.kafka_bootstrap),
            store="memory://",
            web_enabled=False,
            autodiscover=False,
            datadir=str(settings.data_dir / settings.instance_id),
            topic_partitions=parts,
            topic_replication_factor=settings.kafka_replication,
            broker_session_timeout=6,
            broker_heartbeat_interval=1,
            broker_rebalance_timeout=6,
            broker_request_timeout=30,
            broker_commit_interval=settings.commit_interval_seconds,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            producer_acks=-1,
            consumer_auto_offset_reset="earliest",
            table_standby_replicas=0,
            **extra,
        )
        self.ircc_topic = _raw_topic(self.app, topic_name(Topic.IRCC, prefix))
        self.cpc_topic = _raw_topic(self.app, topic_name(Topic.CPC, prefix))
        self.out_topic = _raw_topic(self.app, topic_name(Topic.DISCREPANCY, prefix))
        self.work_topic_name = f"{prefix}absch.monitor.work.v1"
        self.work = self.app.topic(
            self.work_topic_name,
            key_type=bytes,
            key_serializer="raw",
            value_serializer="json",
            partitions=parts,
            internal=True,
        )
        self._dlqs: dict[str, Any] = {}
        table = self._table
        self.irccs, self.citations = table("irccs"), table("citations")
        self.cited_by = table("cited_by")
        self.cpcs, self.findings, self.pending = table("cpcs"), table("findings"), table("due")
        self.app.agent(self.ircc_topic, name="monitor-ircc-in")(self._ircc_in)
        self.app.agent(self.cpc_topic, name="monitor-cpc-in")(self._cpc_in)
        self.app.agent(self.work, name="monitor-work")(self._work)
        self.app.timer(settings.recheck_interval_seconds)(self._recheck_due)

    def _table(self, name: str) -> Any:
        return self.app.Table(name, default=None, partitions=self.settings.kafka_partitions)

    async def _forward(self, key: str, value: dict[str, Any]) -> None:
        # Acknowledged before the input event is: a crash can repeat a forward, never drop it.
        sent = await self.work.send(key=key.encode(), value=value)
        await _acknowledged(sent, f"forward of {key}")

    async def _dead_letter(
        self, topic: str, key: bytes | None, value: bytes, exc: Exception
    ) -> None:
        """Park a message that cannot be handled in ``<topic>.dlq`` with the reason."""
        headers = [
            ("error", str(exc)[:1000].encode()),
            ("error_type", type(exc).__name__.encode()),
            ("original_topic", topic.encode()),
            ("service", b"monitor"),
        ]
        name = dlq_name(topic)
        if name not in self._dlqs:
            self._dlqs[name] = _raw_topic(self.app, name)
        await self._dlqs[name].send(key=key, value=value, headers=headers)
        self.metrics.plumbing.dlq.labels("monitor", topic).inc()
        log.warning("sent a message of %s to its DLQ: %s", topic, exc)

    async def _decoded(self, topic: str, stream: Any) -> Any:
        """Events of a raw stream; undecodable ones go to the DLQ, unknown types are skipped."""
        async for key, raw in stream.items():
            try:
                yield decode_event(raw)
            except UnknownEventType:
                continue
            except DecodeError as exc:
                await self._dead_letter(topic, key, raw, exc)

    async def _ircc_in(self, stream: Any) -> None:
        async for event in self._decoded(self.ircc_topic.get_topic_name(), stream):
            if not isinstance(event.data, IrccEvent):
                continue
            self.metrics.events_seen.labels(event.type).inc()
            await self._forward(
                event.data.identifier,
                {"kind": "ircc", "type": event.type, "data": event.data.model_dump(mode="json")},
            )

    async def _cpc_in(self, stream: Any) -> None:
        async for event in self._decoded(self.cpc_topic.get_topic_name(), stream):
            if not isinstance(event.data, CpcPublished):
                continue
            self.metrics.events_seen.labels(event.type).inc()
            data, received = event.data, event.time.isoformat()
            refs = [r.get("identifier", "") for r in data.record.get("absIRCCs") or []]
            for ref in dict.fromkeys(r for r in refs if r):
                await self._forward(
                    ref.split("@", 1)[0],
                    {
                        "kind": "citation",
                        "cpc_uid": data.uid,
                        "cpc": data.record,
                        "reference": ref,
                        "received_at": received,
                    },
                )
            await self._forward(
                ev.CPC_KEY_PREFIX + data.uid,
                {"kind": "cpc", "cpc_uid": data.uid, "cpc": data.record, "received_at": received},
            )

    async def _work(self, stream: Any) -> None:
        async for key_bytes, value in stream.items():
            key = key_bytes.decode()
            start = time.perf_counter()
            try:
                for item in self._absorb(key, value):
                    await self._evaluate(item)
            except Exception as exc:  # one bad item must not stop the partition
                log.exception("monitor work item for %s failed", key)
                self.metrics.work_errors.inc()
                await self._dead_letter(
                    self.work.get_topic_name(), key_bytes, json.dumps(value).encode(), exc
                )
            self.metrics.check_seconds.observe(time.perf_counter() - start)

    def _absorb(self, key: str, value: dict[str, Any]) -> list[str]:
        """Store what a work message carries; return the items to evaluate now.

        Items are a citation (``<ircc>|<cpc uid>``) or a CPC (``cpc:<uid>``); each has its
        own table entries, so a much-cited IRCC never makes one large value.
        """
        kind = value.get("kind")
        if kind == "ircc":
            current = self.irccs.get(key)
            state = ev.state_from_json(current) if current else None
            folded = apply_ircc_event(state, value["type"], value["data"])
            self.irccs[key] = ev.state_to_json(folded)
            return [ev.citation_key(key, cpc) for cpc in self.cited_by.get(key) or []]
        if kind == "citation":
            item = ev.citation_key(key, value["cpc_uid"])
            self.citations[item] = {k: value[k] for k in ("cpc", "reference", "received_at")}
            cited = list(self.cited_by.get(key) or [])
            if value["cpc_uid"] not in cited:
                self.cited_by[key] = sorted([*cited, value["cpc_uid"]])
            self.metrics.citations_checked.inc()
            return [item]
        if kind == "cpc":
            self.cpcs[key] = {k: value[k] for k in ("cpc_uid", "cpc", "received_at")}
            self.metrics.cpcs_checked.inc()
            return [key]
        if kind == "recheck":
            return [str(value.get("item") or key)]
        return []

    async def _evaluate(self, item: str) -> None:
        now = self.clock()
        if item.startswith(ev.CPC_KEY_PREFIX):
            cpc = self.cpcs.get(item)
            if cpc is None:
                return
            findings, due = ev.cpc_findings(
                cpc["cpc_uid"],
                cpc["cpc"],
                datetime.fromisoformat(cpc["received_at"]),
                self.checkpoints.snapshot(),
                now=now,
                grace=self.grace,
            )
        else:
            ident, cpc_uid = ev.split_citation_key(item)
            c = self.citations.get(item)
            if c is None:
                return
            state_json = self.irccs.get(ident)
            state = ev.state_from_json(state_json) if state_json else None
            citation = ev.Citation(
                cpc_uid, c["cpc"], c["reference"], datetime.fromisoformat(c["received_at"])
            )
            findings, due = ev.citation_findings(citation, state, now=now, grace=self.grace)
        await self._apply(item, findings, due)

    async def _apply(self, key: str, findings: list[Any], due: datetime | None) -> None:
        change = ev.transition(self.findings.get(key) or {}, findings)
        for event in change.events:
            # Wait for the broker's ack before the findings table records the flag: the
            # table's changelog must never get ahead of the event it stands for.
            sent = await self.out_topic.send(
                key=event.data.id.encode(), value=event.to_json_bytes()
            )
            await _acknowledged(sent, f"{event.type} {event.id}")
        for rule in change.flagged:
            self.metrics.flagged.labels(rule).inc()
        for rule in change.cleared:
            self.metrics.cleared.labels(rule).inc()
        if change.events:
            self.findings[key] = change.stored
        if due is not None:
            self.pending[key] = due.isoformat()
        elif self.pending.get(key) is not None:
            del self.pending[key]

    async def _recheck_due(self) -> None:
        now = self.clock()
        due = [
            k
            for k, when in list(self.pending.items())
            if when and datetime.fromisoformat(when) <= now
        ]
        for item in due:
            await self._forward(ev.partition_key(item), {"kind": "recheck", "item": item})
        for name, table in (
            ("irccs", self.irccs),
            ("citations", self.citations),
            ("cpcs", self.cpcs),
            ("findings", self.findings),
        ):
            self.metrics.table_keys.labels(name).set(len(table))
        await self._record_lag()

    async def _record_lag(self) -> None:
        # Highwater comes from fetch responses (right on every broker), position is local.
        consumer = self.app.consumer
        plumbing = self.metrics.plumbing
        for tp in consumer.assignment():
            try:
                high, position = consumer.highwater(tp), await consumer.position(tp)
            except Exception as exc:  # not fetched yet, or rebalancing
                log.debug("no lag for %s yet: %s", tp, exc)
                continue
            if high is not None and position is not None:
                plumbing.lag.labels(
                    plumbing.service, self.app.conf.id, tp.topic, str(tp.partition)
                ).set(max(0, high - position))

    async def recheck_checkpoint(self, identifier: str) -> None:
        """A checkpoint changed: look again at the local CPCs that cite it."""
        for key, item in list(self.cpcs.items()):
            cited = [
                r.get("identifier", "").split("@", 1)[0]
                for r in (item or {}).get("cpc", {}).get("absCheckpoints") or []
            ]
            if identifier in cited:
                await self._forward(key, {"kind": "recheck", "item": key})
