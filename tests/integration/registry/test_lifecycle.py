"""IRCC lifecycle through HTTP: drafts, validation, revisions, revocation, verification."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.events import topic_name
from tests.support.kafka import TopicReader
from tests.support.records import authority, contact, permit
from tests.support.registry import (
    auth,
    government_users,
    publish,
    registry_settings,
    running_registry,
)

SECRET = "SECRET-PIC-HOLDER-42"


@dataclass
class World:
    client: httpx.AsyncClient
    users: dict[str, str]
    cna: str
    kafka: str
    prefix: str


@pytest.fixture
async def world(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path
) -> AsyncIterator[World]:
    settings = registry_settings(
        kafka=kafka_bootstrap, prefix=topic_prefix, db=await db_url("registry"), tmp=tmp_path
    )
    async with running_registry(settings) as client:
        users = await government_users(client, "mx")
        cna = authority("mx", ["cna@mx.example"])
        await publish(client, users["pa"], cna)
        yield World(client, users, cna["header"]["identifier"], kafka_bootstrap, topic_prefix)


async def _put(w: World, record: dict[str, Any], token: str | None = None) -> httpx.Response:
    schema, ident = record["header"]["schema"], record["header"]["identifier"]
    return await w.client.put(
        f"/v1/records/{schema}/{ident}", json=record, headers=auth(token or w.users["pa"])
    )


async def _publish(w: World, record: dict[str, Any]) -> httpx.Response:
    schema, ident = record["header"]["schema"], record["header"]["identifier"]
    return await w.client.post(f"/v1/records/{schema}/{ident}/publish", headers=auth(w.users["pa"]))


async def test_an_invalid_record_is_saved_as_a_draft_and_its_publication_names_every_field(
    world: World,
) -> None:
    """Drafts may be incomplete; publishing refuses, naming each field, publishing nothing."""
    bad = permit("mx", world.cna)
    bad["picGranted"] = False
    del bad["dateOfIssuance"]
    bad["providersConfidential"] = False
    assert (await _put(world, bad)).status_code == 200
    resp = await _publish(world, bad)
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"
    fields = {e["field"] for e in resp.json()["errors"]}
    assert {"dateOfIssuance", "picGranted"} <= fields
    got = await world.client.get(f"/v1/records/{bad['header']['identifier']}")
    assert got.status_code == 404


async def test_cross_field_rules_are_reported_by_field(world: World) -> None:
    no_pic = permit("mx", world.cna, picGranted=False)
    assert (await _put(world, no_pic)).status_code == 200
    resp = await _publish(world, no_pic)
    assert resp.status_code == 422
    assert {e["field"] for e in resp.json()["errors"]} == {"picGranted"}
    early = permit("mx", world.cna, dateOfExpiry="2020-01-01")
    early["providersConfidential"] = False
    assert (await _put(world, early)).status_code == 200
    resp = await _publish(world, early)
    assert resp.status_code == 422
    assert {e["field"] for e in resp.json()["errors"]} == {"dateOfExpiry", "providers"}


async def test_cna_must_be_an_authority_of_the_same_government(world: World) -> None:
    other = authority("br", ["cna@br.example"])
    br_users = await government_users(world.client, "br")
    await publish(world.client, br_users["pa"], other)
    for cna in (other["header"]["identifier"], "NO-SUCH-CNA-000"):
        ircc = permit("mx", cna)
        assert (await _put(world, ircc)).status_code == 200
        resp = await _publish(world, ircc)
        assert resp.status_code == 422
        assert resp.json()["errors"][0]["field"] == "absCNA"


async def test_cna_must_be_published_before_the_ircc(world: World) -> None:
    draft_cna = authority("mx", ["draft@mx.example"])
    assert (await _put(world, draft_cna)).status_code == 200
    ircc = permit("mx", draft_cna["header"]["identifier"])
    assert (await _put(world, ircc)).status_code == 200
    resp = await _publish(world, ircc)
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "absCNA"


async def test_confidential_parts_are_stripped_before_storage(world: World) -> None:
    holder = contact(["holder@de.example"], gov="mx")
    ircc = permit("mx", world.cna, pic_holders=[holder["header"]["identifier"]])
    ircc["entitiesToWhomPICGranted"] = [{"identifier": SECRET}]
    ircc["entitiesToWhomPICGrantedConfidential"] = True
    ircc["notes"] = "editor remark"
    resp = await _put(world, ircc)
    assert resp.status_code == 200, resp.text
    draft = resp.json()["record"]
    assert "entitiesToWhomPICGranted" not in draft
    assert draft["notes"] == "editor remark"
    published = await _publish(world, ircc)
    got = await world.client.get(f"/v1/records/{published.json()['uid']}")
    assert SECRET not in got.text
    assert "notes" not in got.json()["record"]


async def test_revisions_amendment_revocation_and_verification(world: World) -> None:
    ircc = permit("mx", world.cna, dateOfExpiry="2099-12-31")
    ident = ircc["header"]["identifier"]
    first = (await publish(world.client, world.users["pa"], ircc))["uid"]
    permanent = first.rsplit("-", 1)[0]
    assert first.endswith("-1")
    assert (await world.client.get(f"/v1/verify/{first}")).json() == {
        "status": "valid",
        "latest_uid": first,
    }

    ircc["title"] = {"en": "Permit, corrected"}
    assert (await _put(world, ircc)).status_code == 200
    no_reason = await _publish(world, ircc)
    assert no_reason.status_code == 422
    assert no_reason.json()["errors"][0]["field"] == "amendmentDescription"
    ircc["amendmentDescription"] = {"en": "typo in the title"}
    await _put(world, ircc)
    second = (await _publish(world, ircc)).json()["uid"]
    assert second == f"{permanent}-2"
    assert (await world.client.get(f"/v1/verify/{first}")).json()["status"] == "superseded"
    assert (await world.client.get(f"/v1/verify/{permanent}")).json() == {
        "status": "valid",
        "latest_uid": second,
    }
    old = (await world.client.get(f"/v1/records/{first}")).json()
    assert old["status"] == "old-version"  # until the revocation below
    assert old["record"]["title"] == {"en": ircc["title"]["en"]} or old["revision"] == 1
    assert (await world.client.get(f"/v1/records/{second}")).json()["record"][
        "amendmentIntent"
    ] == 0

    no = await world.client.post(
        f"/v1/records/absPermit/{ident}/revoke",
        json={"reason": {}},
        headers=auth(world.users["pa"]),
    )
    assert no.status_code == 422
    revoked = await world.client.post(
        f"/v1/records/absPermit/{ident}/revoke",
        json={"reason": {"en": "permit withdrawn"}},
        headers=auth(world.users["pa"]),
    )
    assert revoked.status_code == 200, revoked.text
    third = revoked.json()["uid"]
    assert third == f"{permanent}-3"
    for uid in (first, second, third, permanent):
        assert (await world.client.get(f"/v1/verify/{uid}")).json()["status"] == "revoked"
    latest = (await world.client.get(f"/v1/records/{permanent}")).json()
    assert latest["status"] == "revoked"
    assert (await world.client.get(f"/v1/records/{first}")).json()["status"] == "revoked"
    assert latest["record"]["amendmentIntent"] == 1
    assert latest["record"]["amendmentDescription"] == {"en": "permit withdrawn"}
    frozen = await _put(world, ircc)
    assert frozen.status_code == 409
    again = await world.client.post(
        f"/v1/records/absPermit/{ident}/revoke",
        json={"reason": {"en": "x"}},
        headers=auth(world.users["pa"]),
    )
    assert again.status_code == 409

    history = (await world.client.get(f"/v1/records/{permanent}/revisions")).json()
    assert [(h["revision"], h["label"]) for h in history] == [
        (1, "OLD VERSION"),
        (2, "OLD VERSION"),
        (3, "REVOKED"),
    ]
    by_identifier = await world.client.get(f"/v1/records/{ident}@1")
    assert by_identifier.json()["uid"] == first
    by_document = await world.client.get(f"/v1/records/{permanent.rsplit('-', 1)[1]}@2")
    assert by_document.json()["uid"] == second
    assert (await world.client.get(f"/v1/records/{permanent.lower()}-1")).json()["uid"] == first

    async with TopicReader(world.kafka, topic_name("absch.ircc.v1", world.prefix)) as reader:
        events = await reader.read_until(lambda evs: len(evs) >= 3)
    mine = [e for e in events if e.data.identifier == ident]
    assert [(e.type, e.subject) for e in mine] == [
        ("ircc.published", first),
        ("ircc.amended", second),
        ("ircc.revoked", third),
    ]
    assert mine[1].data.reason == {"en": "typo in the title"}
    assert mine[2].data.reason == {"en": "permit withdrawn"}


async def test_verify_expired_and_unknown(world: World) -> None:
    ircc = permit("mx", world.cna, dateOfIssuance="2020-01-01", dateOfExpiry="2021-01-01")
    uid = (await publish(world.client, world.users["pa"], ircc))["uid"]
    assert (await world.client.get(f"/v1/verify/{uid}")).json()["status"] == "expired"
    for unknown in ("ABSCH-IRCC-MX-999999-1", "not-a-uid", "ABSCH-IRCC-BR-1-1"):
        body = (await world.client.get(f"/v1/verify/{unknown}")).json()
        assert body == {"status": "unknown", "latest_uid": None}, unknown
    # A revision that was never published is unknown, but the latest one is named.
    body = (await world.client.get(f"/v1/verify/{uid[:-1]}7")).json()
    assert body == {"status": "unknown", "latest_uid": uid}
    cna_uid = (await world.client.get(f"/v1/records/{world.cna}")).json()["uid"]
    assert (await world.client.get(f"/v1/verify/{cna_uid}")).json()["status"] == "unknown"


async def test_related_ircc_links_stay_within_the_government(world: World) -> None:
    parent = permit("mx", world.cna)
    await publish(world.client, world.users["pa"], parent)
    child = permit("mx", world.cna, relatedIRCCs=[{"identifier": parent["header"]["identifier"]}])
    uid = (await publish(world.client, world.users["pa"], child))["uid"]
    got = (await world.client.get(f"/v1/records/{uid}")).json()["record"]
    assert got["relatedIRCCs"] == [{"identifier": parent["header"]["identifier"]}]
    selfish = permit("mx", world.cna)
    selfish["relatedIRCCs"] = [{"identifier": selfish["header"]["identifier"]}]
    assert (await _put(world, selfish)).status_code == 200
    resp = await _publish(world, selfish)
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"].startswith("relatedIRCCs")


async def test_directory_publications_go_out_on_the_directory_topic(world: World) -> None:
    async with TopicReader(world.kafka, topic_name("absch.directory.v1", world.prefix)) as r:
        events = await r.read_until(lambda evs: len(evs) >= 1)
    assert events[0].type == "directory.record.published"
    assert events[0].data.schema_ == "authority"
    assert events[0].data.identifier == world.cna
    assert events[0].data.record["emails"] == ["cna@mx.example"]


async def test_search_finds_published_records_in_every_language(world: World) -> None:
    ircc = permit(
        "mx",
        world.cna,
        title={"fr": "Permis d'accès aux levures"},
        subjectMatter={"es": "Levaduras del altiplano", "zh": "高原酵母"},
    )
    await publish(world.client, world.users["pa"], ircc)
    draft_only = permit("mx", world.cna, title={"en": "Levaduras draft"})
    await _put(world, draft_only)
    for q in ("levures", "LEVADURAS", "高原"):
        page = (await world.client.get("/v1/search", params={"q": q})).json()
        assert [i["identifier"] for i in page["items"]] == [ircc["header"]["identifier"]], q
    page = (
        await world.client.get("/v1/search", params={"schema": "authority", "government": "MX"})
    ).json()
    assert page["total"] == 1
    assert page["items"][0]["identifier"] == world.cna
    paged = (await world.client.get("/v1/search", params={"page_size": 1, "page": 2})).json()
    assert paged["total"] == 2
    assert len(paged["items"]) == 1
    bad = await world.client.get("/v1/search", params={"page_size": 0})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "page_size"
