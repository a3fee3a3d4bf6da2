"""``GET /v1/export`` (issue 18): published records back out as the real clearing-house's
JSON, each at its latest revision, filtered, streamed; drafts and confidential parts never."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.registry.handlers.export import published_records
from tests.support.records import authority, contact, permit
from tests.support.registry import (
    ADMIN_TOKEN,
    auth,
    government_users,
    publish,
    registry_settings,
    running_registry,
)

SAMPLE_02 = Path(__file__).parents[2] / "fixtures" / "samples" / "02_ircc_docs_create_example.json"


def _ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["header"]["identifier"] for r in records]


async def test_export_streams_latest_published_revisions_as_absch_json(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path
) -> None:
    settings = registry_settings(
        kafka=kafka_bootstrap, prefix=topic_prefix, db=await db_url("registry"), tmp=tmp_path
    )
    async with running_registry(settings) as client:
        pa = (await government_users(client, "af"))["pa"]
        cna = authority("af", ["cna@af.example"])
        cna["header"]["identifier"] = "C84C7E6C-134C-F1B1-9A3B-B7443F135239"
        await publish(client, pa, cna)
        # Sample 02 flags every confidential group: what it holds there is never stored.
        ircc = json.loads(SAMPLE_02.read_text())["record"]
        ircc["absCNA"] = {"identifier": cna["header"]["identifier"]}
        await publish(client, pa, ircc)
        amended = ircc | {"amendmentDescription": {"en": "Expiry extended"}}
        await publish(client, pa, amended)
        other = authority("mx", ["cna@mx.example"])
        await publish(client, (await government_users(client, "mx"))["pa"], other)
        lab = contact(["lab@de.example"], gov="de")
        await publish(client, ADMIN_TOKEN, lab)
        draft = permit("af", cna["header"]["identifier"])
        resp = await client.put(
            f"/v1/records/absPermit/{draft['header']['identifier']}", json=draft, headers=auth(pa)
        )
        assert resp.status_code == 200, resp.text

        resp = await client.get("/v1/export")
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("application/json")
        everything = resp.json()
        assert _ids(everything) == [
            cna["header"]["identifier"],
            ircc["header"]["identifier"],
            other["header"]["identifier"],
            lab["header"]["identifier"],
        ]
        exported = everything[1]
        assert exported["amendmentDescription"] == {"en": "Expiry extended"}
        assert exported["amendmentIntent"] == 0
        for stripped in ("providers", "entitiesToWhomPICGranted", "subjectMatter", "usages"):
            assert stripped not in exported
        assert "notes" not in exported

        resp = await client.get("/v1/export", params={"schema": "authority", "government": "AF"})
        assert _ids(resp.json()) == [cna["header"]["identifier"]]
        resp = await client.get("/v1/export", params={"government": "zz"})
        assert resp.json() == []
        resp = await client.get("/v1/export", params={"schema": "absCheckpointCommunique"})
        assert resp.status_code == 422, resp.text

        # Read a batch per transaction, in documentID order: every record once.
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        paged = [r async for r in published_records(ctx, batch=2)]
        assert paged == everything
