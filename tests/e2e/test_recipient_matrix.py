"""Who gets a copy (DESIGN.md §5), end to end: registry and checkpoint over HTTP, the real
broker, the notifier, the SMTP sink. Each case asserts the exact set of envelope recipients
of one subject UID, and that no address got the same event twice."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from services.notifier.context import NotifierContext
from shared.events import Topic, new_event, topic_name
from shared.events.models import DiscrepancyEvent
from tests.support.communiques import communique, identifier
from tests.support.mail import (
    assert_one_mail_per_event_and_address,
    deliveries,
    envelope_recipients,
    mails_about,
    wait_all_sent,
)
from tests.support.poll import eventually
from tests.support.records import authority, checkpoint, contact, focal_point, permit
from tests.support.registry import ADMIN_TOKEN, auth, create_user, government_users, publish
from tests.support.stack import Stack, running_stack, submit
from tools.smtp_sink import SmtpSink

COUNTRIES = ("de", "mx", "br", "pe", "co")
CNA_MX, NFP_MX = "cna@mx.example", "nfp@mx.example"
CNA_BR, NFP_BR, PERSON_BR = "cna@br.example", "nfp@br.example", "person@br.example"
CNA1_DE, CNA2_DE = "cna1@de.example", "cna2@de.example"
CT_ALL, CT_SOME = "contact-all@de.example", "contact-some@de.example"
USER_CNAS = {CNA1_DE, CNA2_DE}


@dataclass
class Directory:
    """Identifiers of the published directory records, by short name."""

    ids: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return self.ids[name]


async def _publish_directory(stack: Stack, users: dict[str, dict[str, str]]) -> Directory:
    reg, d = stack.registry, Directory()

    async def put(name: str, token: str, record: dict[str, Any]) -> None:
        await publish(reg, token, record)
        d.ids[name] = identifier(record)

    for gov in ("mx", "br", "pe", "co"):
        await put(f"nfp-{gov}", ADMIN_TOKEN, focal_point(gov, [f"nfp@{gov}.example"]))
    await put("cbd-mx", ADMIN_TOKEN, focal_point("mx", ["cbd@mx.example"], type=["CBD-FP1"]))
    names = ["prov1", "pic1", "prov2", "pic2", "prov3", "pic3", "prov5", "pic5", "granted"]
    for name in names:
        await put(name, ADMIN_TOKEN, contact([f"{name}@example.org"]))
    await put("person-br", ADMIN_TOKEN, contact([PERSON_BR.upper()], gov="br"))
    await put("ct-all", ADMIN_TOKEN, contact([CT_ALL]))
    await put("ct-some", ADMIN_TOKEN, contact([CT_SOME]))
    await put("cna-mx", users["mx"]["pa"], authority("mx", [CNA_MX]))
    await put("cna-other-mx", users["mx"]["pa"], authority("mx", ["cna-other@mx.example"]))
    person = [{"identifier": d["person-br"]}]
    await put("cna-br", users["br"]["pa"], authority("br", [CNA_BR], contacts=person))
    for gov in ("pe", "co"):
        await put(f"cna-{gov}", users[gov]["pa"], authority(gov, [f"cna@{gov}.example"]))
    await put("cna1-de", users["de"]["pa"], authority("de", [CNA1_DE]))
    await put("cna2-de", users["de"]["pa"], authority("de", [CNA2_DE, CNA1_DE.upper()]))
    all_cp = checkpoint("de", inform_all=True, contacts=[d["ct-all"]])
    await put("cp-all", users["de"]["pa"], all_cp)
    await put("cp-some", users["de"]["pa"], checkpoint("de", contacts=[d["ct-some"]]))
    ctx: NotifierContext = stack.notifier_app.state.ctx
    await eventually(
        lambda: all(ctx.projection.knows(i) for i in d.ids.values()),
        what="the notifier knows the directory",
    )
    return d


def _mail(name: str) -> str:
    return f"{name}@example.org"


async def _publish_irccs(
    stack: Stack, users: dict[str, dict[str, str]], d: Directory
) -> dict[str, dict[str, Any]]:
    """I1 no flags, I2 providers confidential, I3 PIC holders confidential, I4 both, I5 br."""
    mx = d["cna-mx"]
    records = {
        "I1": permit("mx", mx, providers=[d["prov1"]], pic_holders=[d["pic1"]]),
        "I2": permit("mx", mx, providers=[d["prov2"]], pic_holders=[d["pic2"]])
        | {"providersConfidential": True},
        "I3": permit("mx", mx, providers=[d["prov3"]], pic_holders=[d["pic3"]])
        | {"entitiesToWhomPICGrantedConfidential": True},
        "I4": permit("mx", mx),
        "I5": permit("br", d["cna-br"], providers=[d["prov5"]], pic_holders=[d["pic5"]]),
    }
    out = {}
    for name, record in records.items():
        gov = record["government"]["identifier"]
        result = await publish(stack.registry, users[gov]["pa"], record)
        out[name] = {"uid": result["uid"], "id": identifier(record)}
    ctx: NotifierContext = stack.notifier_app.state.ctx
    await eventually(
        lambda: all(ctx.projection.ircc(i["id"]) for i in out.values()),
        what="the notifier knows the IRCCs",
    )
    return out


async def _flag(kafka: str, prefix: str, *, cpc_uid: str, ircc_uid: str) -> str:
    data = DiscrepancyEvent(
        id=uuid.uuid4().hex,
        rule="PIC_HOLDER_MISMATCH",
        cpc_uid=cpc_uid,
        ircc_uid=ircc_uid,
        provider_country="mx",
        user_country="de",
        evidence={"personsAtCheckpoint": "someone else"},
    )
    event = new_event("discrepancy.flagged", source="monitor", subject=cpc_uid, data=data)
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
    await producer.start()
    try:
        topic = topic_name(Topic.DISCREPANCY, prefix)
        await producer.send_and_wait(topic, event.to_json_bytes(), key=data.id.encode())
    finally:
        await producer.stop()
    return event.id


async def test_every_event_reaches_exactly_its_recipients(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path, smtp: SmtpSink
) -> None:
    async with running_stack(
        kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path, smtp=smtp
    ) as stack:
        users = {gov: await government_users(stack.registry, gov) for gov in COUNTRIES}
        d = await _publish_directory(stack, users)
        irccs = await _publish_irccs(stack, users, d)
        pa_de = users["de"]["pa"]
        cpcs = {
            "C1": communique("de", [d["cp-all"]], irccs=[irccs["I1"]["id"]]),
            "C2": communique(
                "de", [d["cp-some"]], irccs=[f"{irccs['I3']['id']}@1", irccs["I5"]["id"]]
            ),
            "C3": communique(
                "de", [d["cp-some"]], source_countries=["co"], entity_who_granted_pic=d["granted"]
            ),
            "C4": communique("de", [d["cp-all"]], source_countries=["pe", "co"]),
        }
        uids = {name: await submit(stack, pa_de, body) for name, body in cpcs.items()}
        # C2 amended to cite I3 alone: Brazil's side, no longer cited, still gets the copy.
        amended = cpcs["C2"] | {"absIRCCs": [{"identifier": f"{irccs['I3']['id']}@1"}]}
        resp = await stack.checkpoint.post(
            f"/v1/communiques/{uids['C2']}/amend",
            json={"reason": {"en": "I5 was cited by mistake"}, "record": amended},
            headers=auth(pa_de),
        )
        assert resp.status_code == 201, resp.text
        uids["C2 amended"] = resp.json()["uid"]
        flagged = await _flag(
            kafka_bootstrap, topic_prefix, cpc_uid=uids["C1"], ircc_uid=irccs["I1"]["uid"]
        )

        mx_side = {CNA_MX, NFP_MX}
        br_side = {CNA_BR, PERSON_BR, NFP_BR}
        expected = {
            (irccs["I1"]["uid"], "ircc_published"): mx_side | {_mail("prov1"), _mail("pic1")},
            (irccs["I2"]["uid"], "ircc_published"): mx_side | {_mail("pic2")},
            (irccs["I3"]["uid"], "ircc_published"): mx_side | {_mail("prov3")},
            (irccs["I4"]["uid"], "ircc_published"): mx_side,
            (irccs["I5"]["uid"], "ircc_published"): br_side | {_mail("prov5"), _mail("pic5")},
            (uids["C1"], "cpc_published"): {CT_ALL} | USER_CNAS | mx_side | {_mail("pic1")},
            (uids["C2"], "cpc_published"): {CT_SOME} | mx_side | br_side | {_mail("pic5")},
            (uids["C2 amended"], "cpc_amended"): {CT_SOME} | mx_side | br_side | {_mail("pic5")},
            (uids["C3"], "cpc_published"): {CT_SOME, _mail("granted")},
            (uids["C4"], "cpc_published"): {CT_ALL}
            | USER_CNAS
            | {"cna@pe.example", "nfp@pe.example", "cna@co.example", "nfp@co.example"},
        }
        # The Secretariat reads every side of the log; a government its own side only.
        token = await create_user(stack.registry, ADMIN_TOKEN, "admin")
        for (uid, template), want in expected.items():
            logged = await wait_all_sent(stack.notifier, token, uid, template)
            assert logged == want, (uid, template)
            assert envelope_recipients(mails_about(smtp, subject=uid, template=template)) == want
        logged = await wait_all_sent(
            stack.notifier, token, uids["C1"], "discrepancy_flagged", event_id=flagged
        )
        assert logged == mx_side
        assert envelope_recipients(mails_about(smtp, event_id=flagged)) == mx_side
        assert_one_mail_per_event_and_address(smtp.mails)
        user_side = {
            "C1": {CT_ALL} | USER_CNAS,
            "C2": {CT_SOME},
            "C2 amended": {CT_SOME},
            "C3": {CT_SOME},
            "C4": {CT_ALL} | USER_CNAS,
        }
        for name, want in user_side.items():
            rows = await deliveries(stack.notifier, users["de"]["cna"], uids[name])
            assert {row["recipient"] for row in rows} == want, name
        assert await deliveries(stack.notifier, users["de"]["cna"], irccs["I1"]["uid"]) == []
