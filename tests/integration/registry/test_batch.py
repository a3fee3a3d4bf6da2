"""Registry: many records saved and published in one call, each item answered on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from shared.events import topic_name
from tests.support.kafka import TopicReader
from tests.support.records import permit
from tests.support.registry import (
    MxRegistry,
    auth,
    publish,
)


async def _batch(
    client: httpx.AsyncClient, token: str, records: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    resp = await client.post(
        "/v1/records/absPermit/batch", json={"records": records, **extra}, headers=auth(token)
    )
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


async def test_a_batch_publishes_what_passes_and_answers_each_refusal(
    kafka_bootstrap: str, topic_prefix: str, mx_registry: MxRegistry, tmp_path: Path
) -> None:
    client, users, cna_id = mx_registry
    good = [permit("mx", cna_id) for _ in range(20)]
    unpublishable = permit("mx", cna_id)
    del unpublishable["dateOfIssuance"]
    foreign = permit("br", cna_id)
    twice = dict(good[3])
    bad_identifier = permit("mx", cna_id)
    bad_identifier["header"]["identifier"] = "short"
    records = [*good[:10], unpublishable, foreign, twice, bad_identifier, *good[10:]]

    answer = await _batch(client, users["pa"], records)

    items = answer["items"]
    assert [i["index"] for i in items] == list(range(len(records)))
    assert (answer["published"], answer["drafts"], answer["refused"]) == (20, 1, 3)
    by_status: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_status.setdefault(item["status"], []).append(item)
    published = by_status["published"]
    assert [p["identifier"] for p in published] == [g["header"]["identifier"] for g in good]
    assert all(p["uid"].startswith("ABSCH-IRCC-MX-") and p["revision"] == 1 for p in published)
    assert all(p["problem"] is None for p in published)
    [draft] = by_status["draft"]
    assert draft["problem"]["status"] == 422
    assert "dateOfIssuance" in {e["field"] for e in draft["problem"]["errors"]}
    refused = {i["index"]: i["problem"] for i in by_status["refused"]}
    assert refused[11]["status"] == 403
    assert refused[12]["status"] == 422
    assert refused[12]["errors"][0]["field"] == "header.identifier"
    assert "more than once" in refused[12]["errors"][0]["message"]
    assert refused[13]["status"] == 422
    assert refused[13]["errors"][0]["field"] == "header.identifier"

    # Published records read back as the single calls would have made them.
    for p in published[:3]:
        resp = await client.get(f"/v1/records/{p['uid']}", headers=auth(users["pa"]))
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "current"
    # The unpublishable one kept its draft, as after a refused publish call.
    resp = await client.get(
        f"/v1/records/{draft['identifier']}?draft=true", headers=auth(users["pa"])
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "draft"

    async with TopicReader(kafka_bootstrap, topic_name("absch.ircc.v1", topic_prefix)) as r:
        events = await r.read_until(lambda evs: len(evs) >= 20)
    assert sorted(e.subject for e in events) == sorted(p["uid"] for p in published)
    assert {e.type for e in events} == {"ircc.published"}


async def test_a_batch_of_drafts_and_an_nau_batch_publish_nothing(
    kafka_bootstrap: str, topic_prefix: str, mx_registry: MxRegistry, tmp_path: Path
) -> None:
    client, users, cna_id = mx_registry
    drafts = await _batch(
        client, users["pa"], [permit("mx", cna_id) for _ in range(3)], publish=False
    )
    assert (drafts["drafts"], drafts["published"]) == (3, 0)
    assert all(i["uid"] is None and i["documentID"] for i in drafts["items"])

    requested = await _batch(client, users["nau"], [permit("mx", cna_id) for _ in range(2)])
    assert (requested["requested"], requested["published"]) == (2, 0)
    ids = [i["requestId"] for i in requested["items"]]
    assert all(isinstance(i, int) for i in ids)
    assert len(set(ids)) == 2
    resp = await client.get("/v1/requests", headers=auth(users["pa"]))
    assert resp.status_code == 200, resp.text
    assert set(ids) <= {r["id"] for r in resp.json()}

    # Nothing of either batch reached the IRCC topic: the one IRCC published afterwards,
    # through the single calls, is the first and only event there.
    sentinel = (await publish(client, users["pa"], permit("mx", cna_id)))["uid"]
    async with TopicReader(kafka_bootstrap, topic_name("absch.ircc.v1", topic_prefix)) as r:
        events = await r.read_until(lambda evs: any(e.subject == sentinel for e in evs))
    assert [e.subject for e in events] == [sentinel]


async def test_a_batch_is_refused_whole_when_its_envelope_is_wrong(
    kafka_bootstrap: str, topic_prefix: str, mx_registry: MxRegistry, tmp_path: Path
) -> None:
    client, users, _ = mx_registry
    url, headers = "/v1/records/absPermit/batch", auth(users["pa"])
    for body, field in (
        ({"records": []}, "records"),
        ({"records": [{"header": {}}] * 501}, "records"),
        ({"records": [], "extra": 1}, "extra"),
    ):
        resp = await client.post(url, json=body, headers=headers)
        assert resp.status_code == 422, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert field in {e["field"] for e in resp.json()["errors"]}
    resp = await client.put(url, json={}, headers=headers)
    assert resp.status_code == 405
    assert resp.headers["allow"] == "POST"
    resp = await client.post(url, json={"records": [permit("mx", "x")]})
    assert resp.status_code == 401
