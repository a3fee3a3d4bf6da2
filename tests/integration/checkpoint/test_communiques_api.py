"""Checkpoint service over HTTP: validation [K1], roles, idempotency, UIDs and queries."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from shared.events import Topic, topic_name
from tests.support.checkpoint import CheckpointPair, running_checkpoint
from tests.support.communiques import communique, identifier
from tests.support.kafka import TopicReader
from tests.support.metrics import scrape
from tests.support.records import checkpoint, new_id
from tests.support.registry import auth, create_user, government_users, publish

PROBLEM = "application/problem+json"


@dataclass
class World:
    """Users and checkpoints of two governments, known to the checkpoint service."""

    de: dict[str, str]
    fr: dict[str, str]
    cp1: str
    cp2: str
    cp_fr: str
    operator1: str
    operator2: str


async def _world(pair: CheckpointPair) -> World:
    reg = pair.registry
    de, fr = await government_users(reg, "de"), await government_users(reg, "fr")
    cps = [checkpoint("de"), checkpoint("de"), checkpoint("fr")]
    for record, token in zip(cps, (de["pa"], de["pa"], fr["pa"]), strict=True):
        await publish(reg, token, record)
    cp1, cp2, cp_fr = (identifier(c) for c in cps)
    world = World(
        de=de,
        fr=fr,
        cp1=cp1,
        cp2=cp2,
        cp_fr=cp_fr,
        operator1=await create_user(reg, de["pa"], "checkpoint", "de", checkpoint=cp1),
        operator2=await create_user(reg, de["pa"], "checkpoint", "de", checkpoint=cp2),
    )
    await pair.wait_directory(3)
    return world


async def _post(
    client: httpx.AsyncClient, token: str, body: dict[str, Any], key: str | None = None
) -> httpx.Response:
    headers = auth(token) | ({"Idempotency-Key": key} if key else {})
    return await client.post("/v1/communiques", json=body, headers=headers)


def _failing_fields(resp: httpx.Response) -> set[str]:
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    problem = resp.json()
    assert problem["status"] == 422
    return {e["field"] for e in problem["errors"]}


def _without(body: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in fields}


async def test_both_branches_are_validated_field_by_field(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path
) -> None:
    async with running_checkpoint(
        kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path
    ) as pair:
        w = await _world(pair)
        post = pair.checkpoint
        pa = w.de["pa"]
        with_ircc = communique("de", [w.cp1], irccs=[new_id("IRCC")])
        resp = await _post(
            post, pa, _without(with_ircc, "absIRCCs", "description", "dateCollected")
        )
        assert _failing_fields(resp) == {"absIRCCs", "description", "dateCollected"}

        no_ircc = communique("de", [w.cp1], source_countries=["br"])
        broken = _without(no_ircc, "sourceCountries", "subjectMatter", "dateCollected")
        broken |= {"dateCollectedFrom": "2025-01-01", "description": {"en": " "}}
        assert _failing_fields(await _post(post, pa, broken)) == {
            "sourceCountries",
            "subjectMatter",
            "dateCollectedTo",
            "description",
        }
        both = no_ircc | {"absIRCCs": [{"identifier": new_id("IRCC")}]}
        assert _failing_fields(await _post(post, pa, both)) == {"absIRCCs"}
        period = _without(with_ircc, "dateCollected") | {
            "dateCollectedFrom": "2025-02-01",
            "dateCollectedTo": "2025-01-01",
        }
        assert _failing_fields(await _post(post, pa, period)) == {"dateCollectedTo"}

        # Valid on each branch; no-IRCC evidence sent with IRCCs is kept as sent (the ABSCH
        # API stores it too; only its web form drops it) and named in a warning.
        period["dateCollectedTo"] = "2025-03-01"
        resp = await _post(post, pa, period)
        assert resp.status_code == 201, resp.text
        assert resp.json()["warnings"] == []
        mixed = period | {
            "header": period["header"] | {"identifier": new_id("CPC")},
            "sourceCountries": [{"identifier": "br"}],
        }
        resp = await _post(post, pa, mixed)
        assert resp.status_code == 201, resp.text
        assert [w["field"] for w in resp.json()["warnings"]] == ["sourceCountries"]
        stored = (await post.get(f"/v1/communiques/{resp.json()['uid']}")).json()["record"]
        assert stored["sourceCountries"] == [{"identifier": "br"}]
        assert stored["dateCollectedFrom"] == "2025-02-01"
        own = communique("de", [w.cp1], source_countries=["br", "de"])
        resp = await _post(post, pa, own)
        assert resp.status_code == 201, resp.text
        assert resp.json()["warnings"] == [
            {"field": "sourceCountries", "message": "includes the issuing government"}
        ]

        assert _failing_fields(await _post(post, pa, {"header": "junk"})) == {"header.schema"}
        cited = communique("de", [w.cp1, new_id("CP"), w.cp_fr], irccs=[new_id("IRCC")])
        assert _failing_fields(await _post(post, pa, cited)) == {
            "absCheckpoints.1.identifier",
            "absCheckpoints.2.identifier",
        }


async def test_who_may_submit_for_which_checkpoint(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path
) -> None:
    async with running_checkpoint(
        kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path
    ) as pair:
        w = await _world(pair)

        def body() -> dict[str, Any]:
            return communique("de", [w.cp1], irccs=[new_id("IRCC")])

        for allowed in (w.operator1, w.de["pa"], w.de["nau"]):
            resp = await _post(pair.checkpoint, allowed, body())
            assert resp.status_code == 201, resp.text
        for refused in (w.fr["pa"], w.de["cna"], w.operator2, w.de["nfp"]):
            resp = await _post(pair.checkpoint, refused, body())
            assert resp.status_code == 403, resp.text
            assert resp.headers["content-type"].startswith(PROBLEM)
        # A CNA reader learns nothing about validation either.
        resp = await _post(pair.checkpoint, w.de["cna"], _without(body(), "description"))
        assert resp.status_code == 403
        resp = await pair.checkpoint.post("/v1/communiques", json=body())
        assert resp.status_code == 401
        metrics = await scrape(pair.checkpoint)
        assert 'checkpoint_communiques_rejected_total{reason="forbidden"} 5.0' in metrics


async def test_idempotent_submission_uid_and_queries(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path
) -> None:
    async with running_checkpoint(
        kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path
    ) as pair:
        w = await _world(pair)
        client = pair.checkpoint
        ircc_a, ircc_b = new_id("IRCC"), new_id("IRCC")
        first = communique("de", [w.cp1], irccs=[f"{ircc_a}@2"])
        key = new_id("KEY")
        resp = await _post(client, w.operator1, first, key)
        assert resp.status_code == 201, resp.text
        uid = resp.json()["uid"]
        match = re.fullmatch(r"ABSCH-CPC-DE-([0-9]+)-1", uid)
        assert match, uid
        replay = await _post(client, w.operator1, first, key)
        assert (replay.status_code, replay.json()["uid"]) == (200, uid)
        other = first | {"description": {"en": "Commercial use"}}
        resp = await _post(client, w.operator1, other, key)
        assert resp.status_code == 409, resp.text
        assert resp.headers["content-type"].startswith(PROBLEM)
        second = communique("de", [w.cp2], irccs=[ircc_a, ircc_b])
        resp = await _post(client, w.operator2, second, new_id("KEY"))
        assert resp.status_code == 201, resp.text
        uid2 = resp.json()["uid"]

        # The relay publishes in outbox order: once the later event is out, a duplicate of
        # the first would be out too.
        async with TopicReader(kafka_bootstrap, topic_name(Topic.CPC, topic_prefix)) as reader:
            events = await reader.read_until(lambda evs: {e.subject for e in evs} >= {uid, uid2})
        published = [e for e in events if e.subject == uid]
        assert [e.type for e in published] == ["cpc.published"]
        assert published[0].data.document_id == int(match.group(1))
        assert published[0].data.checkpoints == [w.cp1]

        for ref in (uid, uid.rsplit("-", 1)[0], identifier(first), uid.lower()):
            resp = await client.get(f"/v1/communiques/{ref}")
            assert resp.status_code == 200, ref
            assert resp.json()["uid"] == uid
            assert resp.json()["record"]["absIRCCs"] == [{"identifier": f"{ircc_a}@2"}]
        assert (await client.get(f"/v1/communiques/{uid[:-1]}2")).status_code == 404
        # A prefix of a UID names no communiqué (it used to answer with the first match).
        for prefix in ("ABSCH", "ABSCH-CPC", "ABSCH-CPC-DE", uid.rsplit("-", 1)[0][:-1]):
            assert (await client.get(f"/v1/communiques/{prefix}")).status_code == 404, prefix

        await _assert_queries(client, [uid2, uid], ircc_a, ircc_b)


async def _assert_queries(
    client: httpx.AsyncClient, newest_first: list[str], ircc_a: str, ircc_b: str
) -> None:
    """Filters by government and cited IRCC (with or without ``@rev``), newest first."""
    uid2, uid = newest_first

    async def listed(**params: str) -> list[str]:
        resp = await client.get("/v1/communiques", params=params)
        assert resp.status_code == 200, resp.text
        return [c["uid"] for c in resp.json()]

    assert await listed(government="de") == [uid2, uid]
    assert await listed(government="DE", limit="1", offset="1") == [uid]
    assert await listed(government="fr") == []
    assert await listed(ircc=ircc_a) == [uid2, uid]
    assert await listed(ircc=f"{ircc_b}@1") == [uid2]
    assert await listed(ircc=ircc_b[:-1]) == []
    assert await listed(government="fr", ircc=ircc_a) == []
    bad = await client.get("/v1/communiques", params={"ircc": "not an id"})
    assert _failing_fields(bad) == {"ircc"}
    # Junk is refused before it reaches the database (PostgreSQL rejects NUL in text).
    assert (await client.get("/v1/communiques/a%00b")).status_code == 422
    bad = await client.get("/v1/communiques", params={"offset": str(2**63)})
    assert _failing_fields(bad) == {"offset"}
