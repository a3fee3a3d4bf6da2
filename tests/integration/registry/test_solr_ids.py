"""Solr ids through HTTP [C8]: search results carry ``documentID`` and the real index's ``id``,
and every read by UID also takes that id (any letter case, ``@rev`` allowed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from shared.uid import format_solr_id
from tests.support.records import authority, contact, permit
from tests.support.registry import government_users, publish, registry_settings, running_registry

SAMPLE_09 = Path(__file__).parents[2] / "fixtures" / "samples" / "09_solr_index_ircc_response.json"


def _real_id() -> str:
    """The one real Solr id among the samples (documentID 207608)."""
    answer: dict[str, Any] = json.loads(SAMPLE_09.read_text(encoding="utf-8"))["record"]
    return str(answer["response"]["docs"][0]["id"])


async def _search(client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    resp = await client.get("/v1/search", params=params)
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


async def test_solr_ids_resolve_and_search_results_carry_them(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path
) -> None:
    settings = registry_settings(
        kafka=kafka_bootstrap, prefix=topic_prefix, db=await db_url("registry"), tmp=tmp_path
    )
    async with running_registry(settings) as client:
        pa = (await government_users(client, "ht"))["pa"]
        cna = authority("ht", ["cna@ht.example"])
        await publish(client, pa, cna)
        ircc = permit("ht", cna["header"]["identifier"])
        first = await publish(client, pa, ircc)
        ircc["amendmentDescription"] = {"en": "new conditions"}
        second = await publish(client, pa, ircc)
        document_id = first["documentID"]
        assert second["documentID"] == document_id
        solr_id = format_solr_id(document_id)
        # The real index's shape: 24 hex characters, the 15 fixed ones of a national record.
        real = _real_id()
        assert len(solr_id) == len(real) == 24
        assert solr_id[:15] == real[:15]

        (hit,) = await _search(client, schema="absPermit", government="ht")
        assert hit["documentID"] == document_id
        assert hit["solrId"] == solr_id
        assert hit["uid"] == second["uid"]
        (cna_hit,) = await _search(client, schema="authority", government="ht")
        assert cna_hit["solrId"] == format_solr_id(cna_hit["documentID"])
        assert cna_hit["documentID"] != document_id

        for ref, revision in ((solr_id, 2), (solr_id.upper(), 2), (f"{solr_id}@1", 1)):
            resp = await client.get(f"/v1/records/{ref}")
            assert resp.status_code == 200, (ref, resp.text)
            view = resp.json()
            assert (view["documentID"], view["revision"]) == (document_id, revision), ref
            assert view["record"]["header"]["identifier"] == ircc["header"]["identifier"]
        cna_view = (await client.get(f"/v1/records/{cna_hit['solrId']}")).json()
        assert cna_view["identifier"] == cna["header"]["identifier"]
        history = (await client.get(f"/v1/records/{solr_id}/revisions")).json()
        assert [r["uid"] for r in history] == [first["uid"], second["uid"]]
        verified = (await client.get(f"/v1/verify/{solr_id}@1")).json()
        assert verified == {"status": "superseded", "latest_uid": second["uid"]}

        # A Solr id names a documentID first, like digits do; a header.identifier that only
        # looks like one is still found when no such document exists.
        lookalike = contact(["x@ht.example"], gov="ht")
        lookalike["header"]["identifier"] = solr_id
        await publish(client, pa, lookalike)
        resp = await client.get(f"/v1/records/{solr_id}")
        assert resp.json()["documentID"] == document_id
        orphan_id = format_solr_id(10**9)
        orphan = contact(["y@ht.example"], gov="ht")
        orphan["header"]["identifier"] = orphan_id
        await publish(client, pa, orphan)
        resp = await client.get(f"/v1/records/{orphan_id}")
        assert resp.status_code == 200, resp.text
        assert resp.json()["identifier"] == orphan_id

        # Ids of documents we do not hold, or of other kinds of record, name nothing here.
        for unknown in (real, f"52000000cbd018{real[14:]}", format_solr_id(10**9 + 1)):
            resp = await client.get(f"/v1/records/{unknown}")
            assert resp.status_code == 404, (unknown, resp.text)
            assert resp.headers["content-type"].startswith("application/problem+json")
