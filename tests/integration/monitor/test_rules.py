"""Every discrepancy rule through the real broker: a positive and a negative case each.

One system runs for the whole scenario; the monitor's clock is ours, so the grace period
for unknown references passes when the test says so, not after a wait.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from services.monitor.worker import MonitorWorker
from shared.events import new_event, topic_name
from shared.events.models import CpcPublished
from tests.support.kafka import TopicReader
from tests.support.poll import eventually
from tests.support.records import COMMERCIAL, authority, checkpoint, contact, header, permit
from tests.support.registry import auth, create_user, government_users, publish
from tests.support.stack import running_stack, submit
from tools.smtp_sink import SmtpSink

GRACE = 600.0


class OffsetClock:
    """Wall time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def cpc(gov: str, cp: str, *, irccs: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """A communiqué on the IRCC branch (or the no-IRCC branch when ``irccs`` is None)."""
    body: dict[str, Any] = {
        "header": header("absCheckpointCommunique"),
        "government": {"identifier": gov},
        "title": {"en": "Declaration"},
        "absCheckpoints": [{"identifier": cp}],
        "description": {"en": "Basic research, non-commercial."},
        "dateCollected": "2025-03-01",
    }
    if irccs is None:
        body |= {
            "absIRCCsNotAvailable": True,
            "sourceCountries": [{"identifier": "mx"}],
            "subjectMatter": {"en": "Yeasts"},
        }
    else:
        body["absIRCCs"] = [{"identifier": i} for i in irccs]
    return body | extra


async def inject(kafka: str, prefix: str, gov: str, body: dict[str, Any]) -> str:
    """A ``cpc.published`` from another producer (rules the API itself already prevents)."""
    uid = f"ABSCH-CPC-{gov.upper()}-{uuid.uuid4().int % 10**6 + 900000}-1"
    data = CpcPublished(
        uid=uid,
        identifier=body["header"]["identifier"],
        document_id=1,
        revision=1,
        government=gov,
        checkpoints=[],
        record=body,
    )
    event = new_event("cpc.published", source="checkpoint", subject=uid, data=data)
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic_name("absch.cpc.v1", prefix),
            event.to_json_bytes(),
            key=uid.rsplit("-", 1)[0].encode(),
        )
    finally:
        await producer.stop()
    return uid


async def test_each_rule_flags_its_case_and_nothing_else(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path, smtp: SmtpSink
) -> None:
    clock = OffsetClock()
    async with running_stack(
        kafka=kafka_bootstrap,
        prefix=topic_prefix,
        db_url=db_url,
        tmp=tmp_path,
        smtp=smtp,
        monitor_clock=clock,
        monitor_extra={"unknown_grace_seconds": GRACE, "recheck_interval_seconds": 0.2},
    ) as stack:
        reg = stack.registry
        mx, de = await government_users(reg, "mx"), await government_users(reg, "de")
        cna = authority("mx", ["cna@mx.example"])
        holder, stranger = contact(["h1@x.example"], gov="mx"), contact(["h2@x.example"], gov="mx")
        for record in (cna, holder, stranger):
            await publish(reg, mx["pa"], record)
        cna_id, h1, h2 = (r["header"]["identifier"] for r in (cna, holder, stranger))

        async def ircc(**extra: Any) -> dict[str, Any]:
            body = permit("mx", cna_id, pic_holders=[h1], dateOfExpiry="2099-01-01")
            body.update(extra)
            await publish(reg, mx["pa"], body)
            return body

        ok, revoked, amended = await ircc(), await ircc(), await ircc()
        expired = await ircc(dateOfIssuance="2020-01-01", dateOfExpiry="2024-01-01")
        secret = await ircc(entitiesToWhomPICGrantedConfidential=True)
        del secret["entitiesToWhomPICGranted"]
        await reg.post(
            f"/v1/records/absPermit/{revoked['header']['identifier']}/revoke",
            json={"reason": {"en": "withdrawn"}},
            headers=auth(mx["pa"]),
        )
        amended["amendmentDescription"] = {"en": "new conditions"}
        await publish(reg, mx["pa"], amended)
        commercial_ok = await ircc(usages=[{"identifier": COMMERCIAL}])

        cp = checkpoint("de")
        await publish(reg, de["pa"], cp)
        cp_id = cp["header"]["identifier"]
        operator = await create_user(reg, de["pa"], "checkpoint", "de", checkpoint=cp_id)
        ident = {
            k: v["header"]["identifier"]
            for k, v in {
                "ok": ok,
                "revoked": revoked,
                "amended": amended,
                "expired": expired,
                "secret": secret,
                "commercial_ok": commercial_ok,
            }.items()
        }
        late_id, missing_id = f"T-LATE-{uuid.uuid4().hex}", f"T-MISSING-{uuid.uuid4().hex}"
        commercial = {"en": "Development of a commercial product for sale."}
        plan: dict[str, tuple[dict[str, Any], set[str]]] = {
            "clean": (
                cpc(
                    "de",
                    cp_id,
                    irccs=[f"{ident['ok']}@1"],
                    personsAtCheckpoint=[{"identifier": h1}],
                ),
                set(),
            ),
            "revoked": (cpc("de", cp_id, irccs=[ident["revoked"]]), {"IRCC_REVOKED"}),
            "superseded": (cpc("de", cp_id, irccs=[f"{ident['amended']}@1"]), {"IRCC_SUPERSEDED"}),
            "current": (cpc("de", cp_id, irccs=[f"{ident['amended']}@2"]), set()),
            "expired": (cpc("de", cp_id, irccs=[ident["expired"]]), {"IRCC_EXPIRED"}),
            "before-expiry": (
                cpc("de", cp_id, irccs=[ident["expired"]], dateCollected="2023-06-01"),
                set(),
            ),
            "commercial": (
                cpc("de", cp_id, irccs=[ident["ok"]], description=commercial),
                {"USE_MISMATCH"},
            ),
            "commercial-allowed": (
                cpc("de", cp_id, irccs=[ident["commercial_ok"]], description=commercial),
                set(),
            ),
            "stranger": (
                cpc("de", cp_id, irccs=[ident["ok"]], personsAtCheckpoint=[{"identifier": h2}]),
                {"PIC_HOLDER_MISMATCH"},
            ),
            "confidential-holder": (
                cpc("de", cp_id, irccs=[ident["secret"]], personsAtCheckpoint=[{"identifier": h1}]),
                {"CANNOT_VERIFY"},
            ),
            "no-evidence": (cpc("de", cp_id), {"NO_EVIDENCE"}),
            "evidence": (cpc("de", cp_id, evidenceOfPIC={"en": "Permit 12/2024"}), set()),
            "late-ircc": (cpc("de", cp_id, irccs=[f"{late_id}@1"]), {"IRCC_SUPERSEDED"}),
            "missing-ircc": (cpc("de", cp_id, irccs=[missing_id]), {"IRCC_UNKNOWN"}),
        }
        uids = {name: await submit(stack, operator, body) for name, (body, _) in plan.items()}
        wrong_source = cpc("de", cp_id, irccs=[ident["ok"]], sourceCountries=[{"identifier": "br"}])
        right_source = cpc("de", cp_id, irccs=[ident["ok"]], sourceCountries=[{"identifier": "mx"}])
        foreign_cp = cpc("de", "T-NO-SUCH-CHECKPOINT", irccs=[ident["ok"]])
        for name, body, rules in (
            ("provider", wrong_source, {"PROVIDER_MISMATCH"}),
            ("provider-ok", right_source, set()),
            ("checkpoint", foreign_cp, {"CHECKPOINT_UNKNOWN"}),
        ):
            uids[name] = await inject(kafka_bootstrap, topic_prefix, "de", body)
            plan[name] = (body, rules)

        # The late IRCC arrives after the CPC that cites it, then gets amended.
        late = permit("mx", cna_id, pic_holders=[h1])
        late["header"]["identifier"] = late_id
        await publish(reg, mx["pa"], late)
        late["amendmentDescription"] = {"en": "second revision"}
        await publish(reg, mx["pa"], late)

        expected = {
            (rule, uids[name])
            for name, (_, rules) in plan.items()
            for rule in rules
            if rule not in {"IRCC_UNKNOWN", "CHECKPOINT_UNKNOWN"}
        }
        topic = topic_name("absch.discrepancy.v1", topic_prefix)
        async with TopicReader(kafka_bootstrap, topic) as reader:

            def flagged() -> set[tuple[str, str]]:
                return {
                    (e.data.rule, e.data.cpc_uid)
                    for e in reader.events
                    if e.type == "discrepancy.flagged"
                }

            await reader.read_until(lambda _: expected <= flagged(), timeout=60)
            worker: MonitorWorker = stack.monitor_app.state.worker

            async def pending(n: int) -> bool:
                return await worker.pending_items() == n

            await eventually(
                lambda: pending(2),
                timeout=30,
                what="the two unknown references wait for their grace period",
            )
            assert flagged() == expected

            clock.offset = timedelta(seconds=GRACE + 1)
            expected |= {
                ("IRCC_UNKNOWN", uids["missing-ircc"]),
                ("CHECKPOINT_UNKNOWN", uids["checkpoint"]),
            }
            await reader.read_until(lambda _: expected <= flagged(), timeout=60)
            await eventually(lambda: pending(0), timeout=30, what="nothing left pending")
            assert flagged() == expected

            missing = permit("mx", cna_id, pic_holders=[h1])
            missing["header"]["identifier"] = missing_id
            await publish(reg, mx["pa"], missing)
            events = await reader.read_until(
                lambda evs: any(e.type == "discrepancy.cleared" for e in evs), timeout=60
            )
        cleared = [e for e in events if e.type == "discrepancy.cleared"]
        assert [(e.data.rule, e.data.cpc_uid) for e in cleared] == [
            ("IRCC_UNKNOWN", uids["missing-ircc"])
        ]
        ids = [e.id for e in events]
        assert len(ids) == len(set(ids))
        by_rule = {e.data.rule: e for e in events if e.type == "discrepancy.flagged"}
        assert by_rule["USE_MISMATCH"].data.evidence["quote"].startswith("Development")
        assert by_rule["PIC_HOLDER_MISMATCH"].data.evidence["notPicHolders"] == [h2]
        assert by_rule["IRCC_REVOKED"].data.provider_country == "mx"
        assert by_rule["IRCC_REVOKED"].data.user_country == "de"
