"""A monitor alone under test, fed by events the test produces."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from services.monitor.bootstrap import bootstrap
from services.monitor.settings import MonitorSettings
from shared.events import CloudEvent
from tests.support.servers import service_client, serving


@asynccontextmanager
async def running_monitor(
    *, kafka: str, prefix: str, db: str, **extra: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """Serve one monitor worker; yields an HTTP client and the app."""
    settings = MonitorSettings(
        kafka_bootstrap=kafka,
        kafka_topic_prefix=prefix,
        database_url=db,
        environment="test",
        **extra,
    )
    app = bootstrap(settings)
    async with serving(app) as url, service_client(url) as client:
        yield client, app


def active_findings(events: list[CloudEvent[Any]]) -> set[str]:
    """Finding ids whose latest flag/clear event is a flag."""
    state: dict[str, bool] = {}
    for event in events:
        if event.type == "discrepancy.flagged":
            state[event.data.id] = True
        elif event.type == "discrepancy.cleared":
            state[event.data.id] = False
    return {fid for fid, active in state.items() if active}
