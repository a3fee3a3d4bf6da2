"""PROVIDER_MISMATCH from the API: the checkpoint service keeps ``sourceCountries`` sent
beside cited IRCCs (warning about the mix), and the monitor compares them with the IRCC's
government [K1, DESIGN §6]. Before, the field was dropped and the rule fired only from
injected events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from shared.events import Topic, topic_name
from tests.support.communiques import communique, identifier
from tests.support.mail import consumed
from tests.support.poll import eventually
from tests.support.records import authority, checkpoint, permit
from tests.support.registry import auth, create_user, government_users, publish
from tests.support.stack import Stack, running_stack
from tools.smtp_sink import SmtpSink


async def _submit(stack: Stack, token: str, body: dict[str, Any]) -> dict[str, Any]:
    """Submit a CPC, retrying while the checkpoint service has not read its checkpoint yet."""

    async def accepted() -> httpx.Response | None:
        resp = await stack.checkpoint.post("/v1/communiques", json=body, headers=auth(token))
        return None if resp.status_code == 422 and "absCheckpoints" in resp.text else resp

    resp = await eventually(accepted, what="checkpoint known to the checkpoint service")
    assert resp.status_code == 201, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


async def test_source_countries_beside_an_ircc_of_another_government_flag_provider_mismatch(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path, smtp: SmtpSink
) -> None:
    async with running_stack(
        kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path, smtp=smtp
    ) as stack:
        reg = stack.registry
        mx, de = await government_users(reg, "mx"), await government_users(reg, "de")
        cna = authority("mx", ["cna@mx.example"])
        await publish(reg, mx["pa"], cna)
        ircc = permit("mx", identifier(cna))
        ircc_uid = (await publish(reg, mx["pa"], ircc))["uid"]
        cp = checkpoint("de")
        await publish(reg, de["pa"], cp)
        operator = await create_user(reg, de["pa"], "checkpoint", "de", checkpoint=identifier(cp))

        def cpc(source: str) -> dict[str, Any]:
            # A use the IRCC allows, so that the provider is the only question.
            use = {"en": "Basic research, non-commercial."}
            body = communique("de", [identifier(cp)], irccs=[f"{identifier(ircc)}@1"])
            return body | {"description": use, "sourceCountries": [{"identifier": source}]}

        control = await _submit(stack, operator, cpc("MX"))
        mixed = await _submit(stack, operator, cpc("br"))
        for answer in (control, mixed):
            assert [w["field"] for w in answer["warnings"]] == ["sourceCountries"]
            stored = (await stack.checkpoint.get(f"/v1/communiques/{answer['uid']}")).json()
            assert stored["record"]["absIRCCs"] == [{"identifier": f"{identifier(ircc)}@1"}]
            assert len(stored["record"]["sourceCountries"]) == 1

        # The provider country's focal point reads its cases; wait until the monitor has
        # handled both communiqués and flagged the mismatch.
        cpc_topic = topic_name(Topic.CPC, topic_prefix)

        async def cases() -> list[dict[str, Any]] | None:
            if await consumed(stack.monitor, "monitor", cpc_topic) < 2:
                return None
            resp = await stack.monitor.get("/v1/discrepancies", headers=auth(mx["nfp"]))
            assert resp.status_code == 200, resp.text
            items: list[dict[str, Any]] = resp.json()["items"]
            flagged = any(c["rule"] == "PROVIDER_MISMATCH" for c in items)
            return items if flagged else None

        items = await eventually(cases, timeout=60, what="PROVIDER_MISMATCH listed")
        assert [(c["rule"], c["cpc_uid"]) for c in items] == [("PROVIDER_MISMATCH", mixed["uid"])]
        (case,) = items
        assert case["ircc_uid"] == ircc_uid
        assert (case["provider_country"], case["user_country"]) == ("mx", "de")
        assert case["evidence"]["sourceCountries"] == ["br"]
        assert case["evidence"]["ircc_government"] == "mx"
        assert case["status"] == "open"
