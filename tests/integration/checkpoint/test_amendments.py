"""Amending a published communiqué over HTTP: revision n+1, the older one archived,
``cpc.amended`` on the broker, who may amend, stale and conflicting amendments, and the
Idempotency-Key as for a submission."""

from __future__ import annotations

import asyncio
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
REASON = {"en": "The wrong certificate was cited"}


@dataclass
class World:
    """Germany's users and two checkpoints with an operator each; France's users."""

    de: dict[str, str]
    fr: dict[str, str]
    cp1: str
    cp2: str
    operator1: str
    operator2: str


async def _world(pair: CheckpointPair) -> World:
    reg = pair.registry
    de, fr = await government_users(reg, "de"), await government_users(reg, "fr")
    cp1, cp2 = checkpoint("de"), checkpoint("de")
    for record in (cp1, cp2):
        await publish(reg, de["pa"], record)
    world = World(
        de=de,
        fr=fr,
        cp1=identifier(cp1),
        cp2=identifier(cp2),
        operator1=await create_user(reg, de["pa"], "checkpoint", "de", checkpoint=identifier(cp1)),
        operator2=await create_user(reg, de["pa"], "checkpoint", "de", checkpoint=identifier(cp2)),
    )
    await pair.wait_directory(2)
    return world


async def _submit(client: httpx.AsyncClient, token: str, body: dict[str, Any]) -> str:
    resp = await client.post("/v1/communiques", json=body, headers=auth(token))
    assert resp.status_code == 201, resp.text
    return str(resp.json()["uid"])


async def _amend(
    client: httpx.AsyncClient,
    token: str,
    target: str,
    record: dict[str, Any],
    reason: Any = None,
    key: str | None = None,
) -> httpx.Response:
    headers = auth(token) | ({"Idempotency-Key": key} if key else {})
    body = {"reason": REASON if reason is None else reason, "record": record}
    return await client.post(f"/v1/communiques/{target}/amend", json=body, headers=headers)


def _problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    problem: dict[str, Any] = resp.json()
    assert problem["status"] == status
    return problem


def _fields(resp: httpx.Response) -> set[str]:
    return {e["field"] for e in _problem(resp, 422)["errors"]}


async def _get(client: httpx.AsyncClient, ref: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/communiques/{ref}")
    assert resp.status_code == 200, resp.text
    view: dict[str, Any] = resp.json()
    return view


async def test_an_amendment_is_revision_two_and_revision_one_stays_archived(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path
) -> None:
    async with running_checkpoint(
        kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path
    ) as pair:
        w = await _world(pair)
        client = pair.checkpoint
        ircc_a, ircc_b = new_id("IRCC"), new_id("IRCC")
        first = communique("de", [w.cp1], irccs=[ircc_a])
        uid1 = await _submit(client, w.operator1, first)
        permanent = uid1.rsplit("-", 1)[0]

        second = first | {
            "absIRCCs": [{"identifier": f"{ircc_b}@1"}],
            "description": {"en": "Research on soil bacteria, commercialisation stage"},
        }
        resp = await _amend(client, w.operator1, uid1, second)
        assert resp.status_code == 201, resp.text
        uid2 = resp.json()["uid"]
        assert uid2 == f"{permanent}-2"

        old = await _get(client, uid1)
        assert (old["uid"], old["status"], old["revision"]) == (uid1, "archived", 1)
        assert (old["latest_revision"], old["latest_uid"], old["reason"]) == (2, uid2, None)
        assert old["record"]["absIRCCs"] == [{"identifier": ircc_a}]
        for ref in (uid2, permanent, identifier(first), uid2.lower()):
            latest = await _get(client, ref)
            assert (latest["uid"], latest["status"], latest["revision"]) == (uid2, "current", 2)
            assert latest["reason"] == REASON
            assert latest["record"]["absIRCCs"] == [{"identifier": f"{ircc_b}@1"}]
        assert (await client.get(f"/v1/communiques/{permanent}-3")).status_code == 404
        # Lists show each communiqué once, at its latest revision.
        listed = (await client.get("/v1/communiques", params={"ircc": ircc_b})).json()
        assert [(c["uid"], c["reason"]) for c in listed] == [(uid2, REASON)]
        assert (await client.get("/v1/communiques", params={"ircc": ircc_a})).json() == []

        async with TopicReader(kafka_bootstrap, topic_name(Topic.CPC, topic_prefix)) as reader:
            await reader.read_until(lambda evs: uid2 in {e.subject for e in evs})
        assert [(e.type, e.subject) for e in reader.events] == [
            ("cpc.published", uid1),
            ("cpc.amended", uid2),
        ]
        amended = reader.events[1].data
        assert (amended.revision, amended.previous_uid, amended.reason) == (2, uid1, REASON)
        assert amended.changed == ["absIRCCs", "description"]
        assert amended.record["absIRCCs"] == [{"identifier": f"{ircc_b}@1"}]
        # Every revision has the same key: a communiqué's events stay in order.
        assert {r.key.decode() for r in reader.raw} == {permanent}

        # Amending what is no longer the latest revision, or changing nothing, is refused.
        third = second | {"dateCollected": "2025-04-01"}
        assert (
            "not the latest"
            in _problem(await _amend(client, w.de["pa"], uid1, third), 409)["detail"]
        )
        assert _fields(await _amend(client, w.de["pa"], uid2, second)) == {"record"}
        resp = await _amend(client, w.de["pa"], permanent, third)
        assert resp.status_code == 201, resp.text
        assert resp.json()["uid"] == f"{permanent}-3"
        assert (await _get(client, uid2))["status"] == "archived"
        metrics = await scrape(client)
        assert "checkpoint_communiques_amended_total 2.0" in metrics


async def test_amendments_are_validated_and_keep_their_identity(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path
) -> None:
    async with running_checkpoint(
        kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path
    ) as pair:
        w = await _world(pair)
        client, pa = pair.checkpoint, w.de["pa"]
        first = communique("de", [w.cp1], irccs=[new_id("IRCC")])
        uid = await _submit(client, pa, first)
        broken = {k: v for k, v in first.items() if k != "description"}
        assert _fields(await _amend(client, pa, uid, broken)) == {"record.description"}
        renamed = first | {"header": first["header"] | {"identifier": new_id("CPC")}}
        assert _fields(await _amend(client, pa, uid, renamed)) == {"record.header.identifier"}
        moved = first | {"government": {"identifier": "at"}}
        assert _fields(await _amend(client, pa, uid, moved)) == {"record.government"}
        unknown_cp = first | {"absCheckpoints": [{"identifier": new_id("CP")}]}
        assert _fields(await _amend(client, pa, uid, unknown_cp)) == {
            "record.absCheckpoints.0.identifier"
        }
        changed = first | {"dateCollected": "2025-04-01"}
        for reason in ({"en": "  "}, {}, {"xx": "why"}, "because"):
            fields = _fields(await _amend(client, pa, uid, changed, reason))
            assert {f.split(".")[0] for f in fields} == {"reason"}, (reason, fields)
        resp = await client.post(
            f"/v1/communiques/{uid}/amend",
            json={"reason": REASON, "record": changed, "note": "x"},
            headers=auth(pa),
        )
        assert _fields(resp) == {"note"}
        # Nothing above changed the communiqué.
        assert (await _get(client, uid))["revision"] == 1
        # A reason in another language is a reason.
        resp = await _amend(client, pa, uid, changed, {"fr": "Date de collecte corrigée"})
        assert resp.status_code == 201, resp.text


async def test_who_may_amend_which_communique(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path
) -> None:
    async with running_checkpoint(
        kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path
    ) as pair:
        w = await _world(pair)
        client = pair.checkpoint
        record = communique("de", [w.cp1], irccs=[new_id("IRCC")])
        uid = await _submit(client, w.operator1, record)
        for refused in (w.operator2, w.fr["pa"], w.de["cna"], w.de["nfp"]):
            edit = record | {"dateCollected": "2025-05-01"}
            _problem(await _amend(client, refused, uid, edit), 403)
        # An operator can't hand the communiqué over to a checkpoint it does not operate.
        elsewhere = record | {"absCheckpoints": [{"identifier": w.cp2}]}
        _problem(await _amend(client, w.operator1, uid, elsewhere), 403)
        _problem(await _amend(client, w.de["pa"], f"{uid[:-2]}9-1", record), 404)
        resp = await client.post(
            f"/v1/communiques/{uid}/amend", json={"reason": REASON, "record": record}
        )
        assert resp.status_code == 401
        dates = ("2025-05-02", "2025-05-03", "2025-05-04")
        for token, date in zip((w.operator1, w.de["nau"], w.de["pa"]), dates, strict=True):
            resp = await _amend(
                client, token, record["header"]["identifier"], record | {"dateCollected": date}
            )
            assert resp.status_code == 201, resp.text
        # The PA may move it to the other checkpoint; then its operator may amend it, and
        # the first one may not any more.
        latest = (await _get(client, uid))["latest_uid"]
        resp = await _amend(client, w.de["pa"], latest, elsewhere)
        assert resp.status_code == 201, resp.text
        edit = elsewhere | {"dateCollected": "2025-06-01"}
        _problem(await _amend(client, w.operator1, identifier(record), edit), 403)
        resp = await _amend(client, w.operator2, identifier(record), edit)
        assert resp.status_code == 201, resp.text
        metrics = await scrape(client)
        assert 'checkpoint_communiques_rejected_total{reason="forbidden"} 6.0' in metrics


async def test_idempotency_keys_and_racing_amendments(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path
) -> None:
    async with running_checkpoint(
        kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path
    ) as pair:
        w = await _world(pair)
        client, pa = pair.checkpoint, w.de["pa"]
        record = communique("de", [w.cp1], irccs=[new_id("IRCC")])
        submitted_with = new_id("KEY")
        resp = await client.post(
            "/v1/communiques", json=record, headers=auth(pa) | {"Idempotency-Key": submitted_with}
        )
        assert resp.status_code == 201, resp.text
        uid1 = resp.json()["uid"]
        permanent = uid1.rsplit("-", 1)[0]
        key = new_id("KEY")
        edit = record | {"dateCollected": "2025-05-01"}
        resp = await _amend(client, pa, uid1, edit, key=key)
        assert (resp.status_code, resp.json()["uid"]) == (201, f"{permanent}-2")
        # A retry answers as the first time, even though uid1 is no longer the latest.
        replay = await _amend(client, pa, uid1, edit, key=key)
        assert (replay.status_code, replay.json()["uid"]) == (200, f"{permanent}-2")
        _problem(await _amend(client, pa, uid1, edit, {"en": "other words"}, key=key), 409)
        # One key space per caller: a submission's key is not an amendment's.
        other = record | {"dateCollected": "2025-05-09"}
        _problem(await _amend(client, pa, f"{permanent}-2", other, key=submitted_with), 409)
        assert (await _get(client, permanent))["revision"] == 2

        # Two amendments of the same revision at once: one is revision 3, the other a 409.
        latest = f"{permanent}-2"
        a = record | {"dateCollected": "2025-06-01"}
        b = record | {"dateCollected": "2025-07-01"}
        answers = await asyncio.gather(
            _amend(client, pa, latest, a), _amend(client, w.de["nau"], latest, b)
        )
        assert sorted(r.status_code for r in answers) == [201, 409], [r.text for r in answers]
        won = next(r for r in answers if r.status_code == 201)
        assert won.json()["uid"] == f"{permanent}-3"
        for r in answers:
            if r.status_code == 409:
                _problem(r, 409)
        async with TopicReader(kafka_bootstrap, topic_name(Topic.CPC, topic_prefix)) as reader:
            await reader.read_until(lambda evs: f"{permanent}-3" in {e.subject for e in evs})
        assert [e.data.revision for e in reader.events] == [1, 2, 3]
