"""``GET /v1/utilization`` on the monitor answers from the analytics tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from shared.auth import TokenVerifier
from tests.integration.monitor.analytics.harness import resolve_key, token, until_exact, workers
from tests.integration.monitor.analytics.support import build
from tests.support.monitor import running_monitor
from tests.support.poll import eventually

pytestmark = pytest.mark.integration


async def test_utilization_reads_the_tables_for_authorities_and_operators(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, db_url: Any
) -> None:
    w = build(seed=29, cpcs=60, amended=5, duplicates=5)
    recount = w.months()
    async with (
        running_monitor(
            kafka=kafka_bootstrap,
            prefix=topic_prefix,
            db=await db_url("monitor"),
            analytics_app_id=f"{topic_prefix}analytics",
        ) as (client, app),
        workers(kafka_bootstrap, topic_prefix, tmp_path) as ws,
    ):
        app.state.verifier = TokenVerifier(resolve_key)
        await w.produce(kafka_bootstrap, topic_prefix, w.events)
        await until_exact(ws, w)
        operator = token("operator")

        async def total() -> bool:
            r = await client.get("/v1/utilization", headers=operator)
            return r.status_code == 200 and r.json()["total"] == w.citations()

        await eventually(total, timeout=30, what="the view caught up")
        items = (await client.get("/v1/utilization", headers=operator)).json()["items"]
        assert {
            (i["provider"], i["month"], i["user"], i["ircc"]): i["citations"] for i in items
        } == {
            (*key.split("|"), *cell.split("|")): n
            for key, month in recount.items()
            for cell, n in month["cells"].items()
        }

        provider = next(iter(recount)).split("|")[0]
        nfp = token("nfp", provider)
        mine = (await client.get("/v1/utilization", headers=nfp)).json()["items"]
        assert mine
        assert {i["provider"] for i in mine} == {provider}
        other = next(p for p in ("mx", "br") if p != provider)
        r = await client.get("/v1/utilization", params={"provider": other}, headers=nfp)
        assert r.status_code == 403
        r = await client.get("/v1/utilization", headers=token("checkpoint", "de"))
        assert r.status_code == 403

        row = mine[-1]
        params = {
            "from": row["month"],
            "to": row["month"],
            "user": row["user"],
            "ircc": row["ircc"],
        }
        one = (await client.get("/v1/utilization", params=params, headers=nfp)).json()
        assert (one["total"], one["items"]) == (row["citations"], [row])
        assert one["view"]["state"] == "following"
        text = generate_latest(app.state.metrics.plumbing.registry).decode()
        assert "monitor_utilization_view_following 1.0" in text
        assert one["view"]["messages"] > 0
        before = (await client.get("/v1/utilization", params={"to": "2025-12"}, headers=nfp)).json()
        assert (before["total"], before["items"]) == (0, [])


async def test_without_an_analytics_worker_the_answer_says_it_is_waiting(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any
) -> None:
    async with running_monitor(
        kafka=kafka_bootstrap,
        prefix=topic_prefix,
        db=await db_url("monitor"),
        analytics_app_id=f"{topic_prefix}never-started",
    ) as (client, app):
        app.state.verifier = TokenVerifier(resolve_key)

        async def waiting() -> dict[str, Any] | None:
            r = await client.get("/v1/utilization", headers=token("operator"))
            body: dict[str, Any] = r.json()
            return body if body["view"]["state"] == "waiting" else None

        body = await eventually(waiting, timeout=30, what="the view waits for the changelog")
        assert (body["total"], body["items"]) == (0, [])
        assert body["view"]["messages"] == 0
        # Shown to operators too, not only in the answer.
        text = generate_latest(app.state.metrics.plumbing.registry).decode()
        assert "monitor_utilization_view_following 0.0" in text
