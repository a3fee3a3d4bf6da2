"""The real ABSCH sample documents import and export back with the same shapes.

Normalisations applied on the way (and nothing else):
- 01: ``amendmentIntent`` is cleared on a first publication [P6].
- 02: every confidential group is flagged, so ``providers``, ``entitiesToWhomPICGranted``,
  ``subjectMatter`` and ``usages`` are stripped [P1]; editors' ``notes`` never publish.
- 04: ``notes`` never publish.
- 05, 06: unchanged (05 keeps ``jurisdictionName`` beside the national jurisdiction: the
  server keeps what it is sent).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.support.poll import eventually
from tests.support.records import authority, checkpoint
from tests.support.registry import ADMIN_TOKEN, auth, create_user, publish
from tests.support.stack import running_stack
from tools.smtp_sink import SmtpSink

SAMPLES = Path(__file__).parents[1] / "fixtures" / "samples"


def _sample(name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((SAMPLES / name).read_text())["record"]
    return record


def _without(record: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in fields}


async def test_samples_round_trip_through_the_services(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path, smtp: SmtpSink
) -> None:
    async with running_stack(
        kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path, smtp=smtp
    ) as stack:
        reg = stack.registry
        nfp_af = await create_user(reg, ADMIN_TOKEN, "nfp", "af")
        pa_af = await create_user(reg, nfp_af, "pa", "af")
        nfp_us = await create_user(reg, ADMIN_TOKEN, "nfp", "us")
        pa_us = await create_user(reg, nfp_us, "pa", "us")
        # The samples cite a CNA and a checkpoint that are not among them: create both.
        cna = authority("af", ["cna@af.example"])
        cna["header"]["identifier"] = "C84C7E6C-134C-F1B1-9A3B-B7443F135239"
        await publish(reg, pa_af, cna)
        cp = checkpoint("af")
        cp["header"]["identifier"] = "3E387C20-E70C-997B-EABB-BC4C9A1E142F"
        await publish(reg, pa_af, cp)

        expected = {
            "01_ircc_dev_test_api-examples.json": (pa_af, ("amendmentIntent",)),
            "06_cna_authority_docs_example.json": (pa_af, ()),
            "02_ircc_docs_create_example.json": (
                pa_af,
                ("providers", "entitiesToWhomPICGranted", "subjectMatter", "usages", "notes"),
            ),
            "05_checkpoint_docs_example.json": (pa_us, ()),
        }
        for name, (token, dropped) in expected.items():
            record = _sample(name)
            uid = (await publish(reg, token, record))["uid"]
            exported = (await reg.get(f"/v1/records/{uid}")).json()["record"]
            assert exported == _without(record, *dropped), name

        operator = await create_user(
            reg, pa_af, "checkpoint", "af", checkpoint=cp["header"]["identifier"]
        )
        cpc = _sample("04_cpc_docs_example_with_ircc_reference.json")

        async def accepted() -> httpx.Response | None:
            # The checkpoint service learns of the checkpoint from Kafka: retry until then.
            resp = await stack.checkpoint.post("/v1/communiques", json=cpc, headers=auth(operator))
            return None if resp.status_code == 422 else resp

        resp = await eventually(accepted, what="CPC accepted")
        assert resp.status_code == 201, resp.text
        got = (await stack.checkpoint.get(f"/v1/communiques/{resp.json()['uid']}")).json()
        assert got["record"] == _without(cpc, "notes")
