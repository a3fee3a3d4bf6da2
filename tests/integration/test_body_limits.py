"""Nothing the real registry and checkpoint accept can outgrow a Kafka message (DESIGN §8).

Bodies over 1 MiB are 413 before reading or authenticating; within it, field limits and
the whole-record cap give 422 naming the field.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from shared.http import DEFAULT_MAX_BODY_BYTES, PROBLEM_JSON
from shared.records.common import MAX_NAME_CHARS
from tests.support.checkpoint import running_checkpoint
from tests.support.communiques import communique
from tests.support.records import authority, checkpoint, new_id
from tests.support.registry import auth, government_users, publish

MB = 1_000_000


def _assert_too_large(resp: httpx.Response) -> None:
    assert resp.status_code == 413, resp.text[:500]
    assert resp.headers["content-type"].startswith(PROBLEM_JSON)
    problem = resp.json()
    assert problem["title"] == "Content Too Large"
    assert str(DEFAULT_MAX_BODY_BYTES) in problem["detail"]
    assert [e["field"] for e in problem["errors"]] == ["<body>"]


def _failing_fields(resp: httpx.Response) -> set[str]:
    assert resp.status_code == 422, resp.text[:500]
    assert resp.headers["content-type"].startswith(PROBLEM_JSON)
    return {e["field"] for e in resp.json()["errors"]}


def _json(body: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments posting ``body`` as JSON with a Content-Length."""
    return {"content": json.dumps(body).encode(), "headers": {"content-type": "application/json"}}


async def _streamed(size: int, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
    """A chunked body (no Content-Length) of ``size`` bytes."""
    for start in range(0, size, chunk):
        yield b" " * min(chunk, size - start)


async def test_bodies_and_fields_are_bounded(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path
) -> None:
    async with running_checkpoint(
        kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path
    ) as pair:
        reg, cpc_api = pair.registry, pair.checkpoint
        de = await government_users(reg, "de")
        cp = checkpoint("de")
        await publish(reg, de["pa"], cp)
        await pair.wait_directory(1)
        cp_id = cp["header"]["identifier"]
        pa = auth(de["pa"])

        def cpc(title: str) -> dict[str, Any]:
            return communique("de", [cp_id], irccs=[new_id("IRCC")], title={"en": title})

        # Checkpoint: over the body limit, over the field limit, at the field limit.
        big = await cpc_api.post("/v1/communiques", headers=pa, json=cpc("x" * (11 * MB // 10)))
        _assert_too_large(big)
        long = await cpc_api.post("/v1/communiques", headers=pa, json=cpc("x" * 3000))
        assert "title.en" in _failing_fields(long)
        ok = await cpc_api.post("/v1/communiques", headers=pa, json=cpc("x" * MAX_NAME_CHARS))
        assert ok.status_code == 201, ok.text[:500]

        # Registry: a 2 MB authority description, a too-long name, and a record that
        # fits the body limit but not one event (unknown keys are kept, so capped whole).
        def save(record: dict[str, Any]) -> Any:
            ident = record["header"]["identifier"]
            return reg.put(f"/v1/records/authority/{ident}", headers=pa, json=record)

        _assert_too_large(await save(authority("de", ["cna@de.example"], description="d" * 2 * MB)))
        named = authority("de", ["cna@de.example"], name={"en": "n" * 3000})
        assert _failing_fields(await save(named)) == {"name.en"}
        padded = authority("de", ["cna@de.example"], description="d" * (MB // 2))
        assert _failing_fields(await save(padded)) == {"<record>"}
        fits = authority("de", ["cna@de.example"], description="d" * 100_000)
        assert (await save(fits)).status_code == 200

        # 20 MB without a token: 413 from every authenticated write, never 401 or 422.
        huge = {"header": {"schema": "absPermit"}, "title": {"en": "x" * 20 * MB}}
        permit = new_id("IRCC")
        writes: list[tuple[httpx.AsyncClient, str, str]] = [
            (cpc_api, "POST", "/v1/communiques"),
            (reg, "POST", "/v1/users"),
            (reg, "PUT", f"/v1/records/absPermit/{permit}"),
            (reg, "POST", f"/v1/records/absPermit/{permit}/publish"),
            (reg, "POST", f"/v1/records/absPermit/{permit}/revoke"),
            (reg, "POST", "/v1/requests/1/reject"),
        ]
        for client, method, path in writes:
            resp = await client.request(method, path, **_json(huge))
            _assert_too_large(resp)
            streamed = await client.request(method, path, content=_streamed(20 * MB))
            _assert_too_large(streamed)

        # The services still answer normally afterwards.
        assert (await cpc_api.post("/v1/communiques", json=cpc("t"))).status_code == 401
