"""The faust app of the utilization analytics: topics, tables and agents.

Flow (``<id>`` is the app id, internal topics have the deployment's partition count):

- ``absch.ircc.v1`` -> ``ircc_facts``: each revision's facts, re-keyed by IRCC identifier
  to ``<id>-by-ircc`` (the IRCC topic is keyed by UID, CPCs cite the identifier).
- ``absch.cpc.v1`` (``cpc.published``, ``cpc.amended``) -> ``cpc_citations``: one citation
  per cited IRCC, keyed by IRCC identifier to ``<id>-by-ircc``.
- ``<id>-by-ircc`` -> ``resolve``: table ``irccs`` (identifier -> provider, subject,
  usages, CNA). A citation of a known IRCC goes on to ``<id>-by-provider`` keyed by its
  provider country; one of an unknown IRCC is parked in table ``parked`` and sent on when
  the IRCC arrives.
- ``absch.discrepancy.v1`` -> ``discrepancy_flags``: flagged discrepancies, keyed by
  provider country to ``<id>-by-provider``.
- ``<id>-by-provider`` -> ``count``: tables ``months`` (monthly windows per provider
  country: citations per user country x IRCC, checkpoints, discrepancies), ``providers``
  (watermark, months, first uses, reports sent) and ``counted``; alerts (``alerts.py``) go to
  ``absch.utilization.v1`` keyed by provider country.

The re-keying by provider is a keyed send, what ``Stream.group_by`` does, done by hand: a
CPC fans out into citations, and the key (the IRCC's government) is only known once the
IRCC is. The rules are in ``counting.py``; see its docstring for why counting is exact.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import faust
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import generate_latest

from services.monitor.analytics import alerts
from services.monitor.analytics import counting as cnt
from services.monitor.analytics.metrics import AnalyticsMetrics
from services.monitor.analytics.settings import AnalyticsSettings
from services.monitor.analytics.transport import TrueEndApp
from shared.events import CloudEvent, DecodeError, Topic, UnknownEventType, decode_event
from shared.events import topic_name as full_name
from shared.events.models import CpcPublished, DiscrepancyEvent, IrccEvent

log = logging.getLogger(__name__)
RAW: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
LOCAL_VIEW = "/utilization/local"


def partition_of(key: str, partitions: int) -> int:
    """Partition of a keyed send (the producer's default partitioner, murmur2)."""
    every = list(range(partitions))
    return int(DefaultPartitioner()(key.encode(), every, every))


def decode(raw: bytes | None, metrics: AnalyticsMetrics) -> CloudEvent[Any] | None:
    """An input event, or None for one of an unknown type or not an event (logged; the
    kit's consumers dead-letter those, analytics only skips them)."""
    try:
        return decode_event(raw or b"")
    except UnknownEventType:
        return None
    except DecodeError as exc:
        log.warning("skipped an undecodable message: %s", exc)
        metrics.skipped.inc()
        return None


def build_app(settings: AnalyticsSettings, metrics: AnalyticsMetrics | None = None) -> faust.App:
    """The analytics app for ``settings``; run it with ``faust.Worker`` (``__main__``)."""
    metrics = metrics or AnalyticsMetrics()
    app = TrueEndApp(
        settings.app_id,
        broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")],
        store=settings.store,
        datadir=str(settings.data_dir),
        web_host=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=settings.kafka_replication,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=settings.heartbeat_interval_seconds,
        broker_rebalance_timeout=settings.rebalance_timeout_seconds,
        broker_request_timeout=settings.request_timeout_seconds,
        broker_commit_interval=settings.commit_interval_seconds,
        producer_linger=settings.producer_linger_seconds,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        autodiscover=False,
    )
    app.on_offset_gap = lambda tp, n: metrics.gaps.labels(tp.topic).inc(n)
    _wire(app, settings, metrics)
    return app


def _wire(app: faust.App, settings: AnalyticsSettings, metrics: AnalyticsMetrics) -> None:
    prefix, parts = settings.kafka_topic_prefix, settings.kafka_partitions
    grace = timedelta(seconds=settings.report_grace_seconds)

    def source(t: Topic) -> Any:
        metrics.gaps.labels(full_name(t, prefix))  # at 0 from the start: increase() sees one
        return app.topic(full_name(t, prefix), **RAW)

    def internal(name: str) -> Any:
        metrics.gaps.labels(f"{settings.app_id}-{name}")
        return app.topic(f"{settings.app_id}-{name}", partitions=parts, internal=True, **RAW)

    by_ircc, by_provider = internal("by-ircc"), internal("by-provider")
    utilization = app.topic(full_name(Topic.UTILIZATION, prefix), **RAW)
    irccs = app.Table("irccs", partitions=parts)
    parked = app.Table("parked", partitions=parts)
    counted = app.Table("counted", partitions=parts)
    months = app.Table("months", partitions=parts)
    providers = app.Table("providers", partitions=parts)

    async def route(topic: Any, key: str, msg: cnt.IrccFacts | cnt.Citation | cnt.Flag) -> None:
        await topic.send(key=key.encode(), value=msg.model_dump_json().encode())

    @app.agent(source(Topic.IRCC), name="ircc_facts")
    async def ircc_facts(stream: Any) -> None:
        async for raw in stream:
            event = decode(raw, metrics)
            if event is not None and isinstance(event.data, IrccEvent):
                facts = cnt.facts_of(event.data)
                await route(by_ircc, facts.identifier, facts)

    @app.agent(source(Topic.CPC), name="cpc_citations")
    async def cpc_citations(stream: Any) -> None:
        async for raw in stream:
            event = decode(raw, metrics)
            if event is not None and isinstance(event.data, CpcPublished):
                for citation in cnt.citations_of(event):
                    await route(by_ircc, citation.ircc, citation)

    @app.agent(source(Topic.DISCREPANCY), name="discrepancy_flags")
    async def discrepancy_flags(stream: Any) -> None:
        async for raw in stream:
            event = decode(raw, metrics)
            if event is not None and isinstance(event.data, DiscrepancyEvent):
                flag = cnt.flag_of(event)
                if flag is not None:
                    await route(by_provider, flag.provider, flag)

    @app.agent(by_ircc, name="resolve")
    async def resolve(stream: Any) -> None:
        async for event in stream.events():
            msg = cnt.ROUTED.validate_json(event.value)
            offset: int = event.message.offset
            if isinstance(msg, cnt.IrccFacts):
                irccs[msg.identifier] = msg.model_dump(mode="json")
                waiting = parked.get(msg.identifier)
                # Released at this offset: a replay, whose sends may have been lost.
                if waiting and waiting["released"] in (None, offset):
                    for item in waiting["citations"]:
                        c = cnt.resolve(cnt.Citation.model_validate(item), msg)
                        await route(by_provider, msg.provider, c)
                    parked[msg.identifier] = {**waiting, "released": offset}
            elif isinstance(msg, cnt.Citation):
                known = irccs.get(msg.ircc)
                if known is not None:
                    facts = cnt.IrccFacts.model_validate(known)
                    await route(by_provider, facts.provider, cnt.resolve(msg, facts))
                    continue
                waiting = parked.get(msg.ircc) or {"citations": [], "released": None}
                keys = {cnt.Citation.model_validate(i).key for i in waiting["citations"]}
                if msg.key not in keys:
                    items = [*waiting["citations"], msg.model_dump(mode="json")]
                    parked[msg.ircc] = {**waiting, "citations": items}
                    metrics.parked.inc()

    @app.agent(by_provider, name="count")
    async def count(stream: Any) -> None:
        async for event in stream.events():
            msg = cnt.ROUTED.validate_json(event.value)
            offset = event.message.offset
            if isinstance(msg, cnt.Citation) and msg.provider:
                await _count_citation(msg, msg.provider, offset)
            elif isinstance(msg, cnt.Flag):
                key = f"{msg.provider}|{cnt.month_of(msg.at)}"
                step = cnt.count_flag(
                    msg,
                    offset,
                    counted=counted.get(msg.key),
                    month=cnt.MonthCounts.load(months.get(key)),
                )
                if step.month is not None:
                    months[key] = step.month.dump()
                if step.counted is not None:
                    counted[msg.key] = step.counted
                _observe(step, "discrepancy")

    async def _count_citation(c: cnt.Citation, provider: str, offset: int) -> None:
        key = f"{provider}|{cnt.month_of(c.at)}"
        step = cnt.count_citation(
            c,
            offset,
            counted=counted.get(c.key),
            month=cnt.MonthCounts.load(months.get(key)),
            provider=cnt.ProviderState.load(providers.get(provider)),
            grace=grace,
        )
        if step.month is not None:
            months[key] = step.month.dump()
        if step.provider is not None:
            providers[provider] = step.provider.dump()
        if step.counted is not None:
            counted[c.key] = step.counted
        _observe(step, "citation")
        out: list[CloudEvent[Any]] = []
        if step.first_use is not None:
            out.append(alerts.first_use_event(provider, c.user, step.first_use))
        for month in step.reports:
            counts = cnt.MonthCounts.load(months.get(f"{provider}|{month}"))
            out.append(alerts.report_event(provider, month, counts))
        for alert in out:
            await utilization.send(key=provider.encode(), value=alert.to_json_bytes())
            metrics.alerts.labels(alert.type).inc()

    def _observe(step: cnt.Step, kind: str) -> None:
        if step.month is None:
            metrics.duplicates.labels(kind).inc()
        else:
            metrics.counted.labels(kind).inc()

    def local() -> dict[str, Any]:
        """This worker's active partitions of ``by-provider`` and their counts (standby
        copies of other partitions left out)."""
        mine = sorted(
            tp.partition
            for tp in app.assignor.assigned_actives()
            if tp.topic == by_provider.get_topic_name()
        )

        def own(key: str) -> bool:
            return partition_of(key.split("|", 1)[0], parts) in mine

        return {
            "partitions": mine,
            "months": {k: v for k, v in months.items() if own(k)},
            "providers": {k: v for k, v in providers.items() if own(k)},
        }

    @app.page(LOCAL_VIEW)
    async def local_view(view: Any, _request: Any) -> Any:
        return view.json(local())

    @app.page("/metrics")
    async def metrics_view(view: Any, _request: Any) -> Any:
        # aiohttp takes no parameters in content_type; plain text is exposition 0.0.4.
        return view.bytes(generate_latest(metrics.registry), content_type="text/plain")
