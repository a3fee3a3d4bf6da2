"""An amended communiqué through the whole stack: HTTP in at the checkpoint service, the
monitor re-checks the latest revision, the notifier mails the amended copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.events import Topic, topic_name
from tests.support.communiques import communique, identifier
from tests.support.mail import consumed, mails_about, wait_all_sent
from tests.support.poll import eventually
from tests.support.records import authority, checkpoint, contact, focal_point, permit
from tests.support.registry import ADMIN_TOKEN, auth, create_user, government_users, publish
from tests.support.stack import Stack, running_stack, submit
from tools.smtp_sink import SmtpSink

LAB = "lab@de.example"
REASON = {"en": "The permit presented was cited under a wrong identifier"}


async def _cases(stack: Stack, token: str) -> dict[tuple[str, str | None], dict[str, Any]]:
    """Every case the caller sees, by (rule, IRCC uid)."""
    resp = await stack.monitor.get("/v1/discrepancies", headers=auth(token))
    assert resp.status_code == 200, resp.text
    return {(c["rule"], c["ircc_uid"]): c for c in resp.json()["items"]}


async def test_an_amended_cpc_is_rechecked_and_mailed(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path, smtp: SmtpSink
) -> None:
    async with running_stack(
        kafka=kafka_bootstrap,
        prefix=topic_prefix,
        db_url=db_url,
        tmp=tmp_path,
        smtp=smtp,
        monitor_extra={"unknown_grace_seconds": 0},
    ) as stack:
        reg = stack.registry
        mx, de = await government_users(reg, "mx"), await government_users(reg, "de")
        admin = await create_user(reg, ADMIN_TOKEN, "admin")
        await publish(reg, ADMIN_TOKEN, focal_point("mx", ["nfp@mx.example"]))
        cna = authority("mx", ["cna@mx.example"])
        await publish(reg, mx["pa"], cna)
        lab = contact([LAB], gov="de")
        await publish(reg, ADMIN_TOKEN, lab)
        cp = checkpoint("de", contacts=[identifier(lab)])
        await publish(reg, de["pa"], cp)
        holder = contact(["holder@de.example"], gov="de")
        await publish(reg, ADMIN_TOKEN, holder)
        # A non-commercial IRCC, and one that is cited first but published only later.
        ircc = permit("mx", identifier(cna), pic_holders=[identifier(holder)])
        # Cited without a revision: findings name it by its revision-less UID.
        ircc_uid = (await publish(reg, mx["pa"], ircc))["uid"].rsplit("-", 1)[0]
        mistaken = permit("mx", identifier(cna), pic_holders=[identifier(holder)])

        basic = {"en": "Basic research, non-commercial."}
        first = communique("de", [identifier(cp)], irccs=[identifier(mistaken)])
        first["description"] = basic
        uid1 = await submit(stack, de["pa"], first)

        async def flagged_unknown() -> dict[str, Any] | None:
            return (await _cases(stack, admin)).get(("IRCC_UNKNOWN", identifier(mistaken)))

        unknown = await eventually(flagged_unknown, what="IRCC_UNKNOWN flagged")
        assert (unknown["status"], unknown["cpc_uid"]) == ("open", uid1)

        # The amendment cites the right IRCC, and declares commercial use it does not allow.
        second = first | {
            "absIRCCs": [{"identifier": identifier(ircc)}],
            "description": {"en": "Development of a commercial product for sale."},
        }
        resp = await stack.checkpoint.post(
            f"/v1/communiques/{uid1}/amend",
            json={"reason": REASON, "record": second},
            headers=auth(de["pa"]),
        )
        assert resp.status_code == 201, resp.text
        uid2 = resp.json()["uid"]

        async def rechecked() -> dict[tuple[str, str | None], dict[str, Any]] | None:
            cases = await _cases(stack, admin)
            return cases if ("USE_MISMATCH", ircc_uid) in cases else None

        cases = await eventually(rechecked, what="USE_MISMATCH flagged on the amendment")
        assert {key: (c["status"], c["cpc_uid"]) for key, c in cases.items()} == {
            ("IRCC_UNKNOWN", identifier(mistaken)): ("cleared", uid1),
            ("USE_MISMATCH", ircc_uid): ("open", uid2),
        }
        assert cases[("USE_MISMATCH", ircc_uid)]["provider_country"] == "mx"

        # The amended copy goes to the first copy's recipients (the cited IRCC was unknown
        # then) and to the parties of the IRCC it cites now; it says why and what changed.
        first_copy = await wait_all_sent(stack.notifier, admin, uid1, "cpc_published")
        assert first_copy == {LAB}
        amended_copy = await wait_all_sent(stack.notifier, admin, uid2, "cpc_amended")
        assert amended_copy == {LAB, "cna@mx.example", "nfp@mx.example", "holder@de.example"}
        (mail,) = [m for m in mails_about(smtp, subject=uid2) if m.recipient == LAB]
        for part in ("plain", "html"):
            text = mail.body(part)
            for said in (REASON["en"], "absIRCCs", "description", uid1, uid2):
                assert said in text, (part, said)

        # The IRCC only the first revision cited is published, then revoked: nobody cites
        # it any more, so nothing is raised about it.
        await publish(reg, mx["pa"], mistaken)
        resp = await reg.post(
            f"/v1/records/absPermit/{identifier(mistaken)}/revoke",
            json={"reason": {"en": "withdrawn"}},
            headers=auth(mx["pa"]),
        )
        assert resp.status_code == 200, resp.text
        ircc_topic = topic_name(Topic.IRCC, topic_prefix)

        async def seen_revocation() -> bool:
            # ircc, mistaken and its revocation: three IRCC events handled.
            return await consumed(stack.monitor, "monitor", ircc_topic) >= 3

        await eventually(seen_revocation, what="the monitor handled the revocation")
        after = await _cases(stack, admin)
        assert {key: c["status"] for key, c in after.items()} == {
            ("IRCC_UNKNOWN", identifier(mistaken)): "cleared",
            ("USE_MISMATCH", ircc_uid): "open",
        }
