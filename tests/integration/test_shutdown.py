"""SIGTERM: a service finishes what it accepted, flushes its outbox and exits cleanly."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import httpx

from shared.events import topic_name
from tests.support.kafka import TopicReader
from tests.support.processes import ServiceProcess
from tests.support.records import authority, permit
from tests.support.registry import ADMIN_TOKEN, auth


async def test_registry_flushes_its_outbox_on_sigterm_and_logs_json(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    registry = ServiceProcess(
        "registry",
        {
            "KAFKA_BOOTSTRAP": kafka_bootstrap,
            "KAFKA_TOPIC_PREFIX": topic_prefix,
            "REGISTRY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}",
            "ABSCH_ADMIN_TOKEN": ADMIN_TOKEN,
            "ABSCH_ENV": "test",
            "JWT_PRIVATE_KEY_PATH": str(tmp_path / "key.pem"),
        },
        tmp_path / "registry.log",
    )
    try:
        await registry.start()
        async with httpx.AsyncClient(base_url=registry.url, timeout=30) as client:

            async def user(creator: str, role: str) -> str:
                resp = await client.post(
                    "/v1/users",
                    headers=auth(creator),
                    json={
                        "name": role,
                        "email": f"{role}@mx.example",
                        "role": role,
                        "government": "mx",
                    },
                )
                return str(resp.json()["token"])

            pa = await user(await user(ADMIN_TOKEN, "nfp"), "pa")
            records = [authority("mx", ["cna@mx.example"])]
            records += [permit("mx", records[0]["header"]["identifier"]) for _ in range(20)]
            for record in records:
                schema, ident = record["header"]["schema"], record["header"]["identifier"]
                await client.put(f"/v1/records/{schema}/{ident}", json=record, headers=auth(pa))
                resp = await client.post(
                    f"/v1/records/{schema}/{ident}/publish", headers=auth(pa), timeout=30
                )
                assert resp.status_code == 200, resp.text
        registry.signal(signal.SIGTERM)
        # uvicorn re-raises the signal after a clean shutdown, so the exit status says SIGTERM.
        assert registry.wait() in (0, -signal.SIGTERM)
    finally:
        registry.stop()

    async with TopicReader(kafka_bootstrap, topic_name("absch.ircc.v1", topic_prefix)) as r:
        events = await r.read_until(lambda evs: len(evs) >= 20)
    assert len({e.id for e in events}) == 20
    lines = [
        json.loads(line) for line in registry.log.read_text().splitlines() if line.startswith("{")
    ]
    assert lines, "the service logs JSON lines"
    assert all(line["service"] == "registry" for line in lines)
    assert {"time", "level", "logger", "message", "correlation_id"} <= set(lines[0])
    assert any(line["message"] == "Application shutdown complete." for line in lines)


async def test_a_service_process_whose_metrics_port_was_taken_starts_on_another(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """The test helper's answer to a port taken between picking and binding: the service
    exits naming the metrics listener, and the helper starts it again on a new port."""
    registry = ServiceProcess(
        "registry",
        {
            "KAFKA_BOOTSTRAP": kafka_bootstrap,
            "KAFKA_TOPIC_PREFIX": topic_prefix,
            "REGISTRY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}",
            "ABSCH_ADMIN_TOKEN": ADMIN_TOKEN,
            "ABSCH_ENV": "test",
            "JWT_PRIVATE_KEY_PATH": str(tmp_path / "key.pem"),
        },
        tmp_path / "registry.log",
    )
    taken = registry.metrics_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            await registry.start()
            assert registry.metrics_port != taken
            async with httpx.AsyncClient(timeout=10) as client:
                resp = await client.get(registry.metrics_url)
            assert resp.status_code == 200
            assert "absch_ready" in resp.text
        finally:
            registry.stop()
