"""The whole system in one test: registry, notifier, monitor (and later checkpoint)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from services.checkpoint.bootstrap import bootstrap as checkpoint_app
from services.checkpoint.settings import CheckpointSettings
from services.monitor.bootstrap import bootstrap as monitor_app
from services.monitor.settings import MonitorSettings
from services.notifier.bootstrap import bootstrap as notifier_app
from services.notifier.settings import NotifierSettings
from tests.support.poll import eventually
from tests.support.registry import auth, registry_settings, running_registry
from tests.support.servers import service_client, serving
from tools.smtp_sink import SmtpSink


@dataclass
class Stack:
    """Clients of the running services."""

    registry: httpx.AsyncClient
    checkpoint: httpx.AsyncClient
    notifier: httpx.AsyncClient
    monitor: httpx.AsyncClient
    notifier_app: FastAPI
    monitor_app: FastAPI


@asynccontextmanager
async def running_stack(
    *,
    kafka: str,
    prefix: str,
    db_url: Any,
    tmp: Path,
    smtp: SmtpSink,
    monitor_extra: dict[str, Any] | None = None,
    monitor_clock: Callable[[], datetime] | None = None,
    **notifier_extra: Any,
) -> AsyncIterator[Stack]:
    """Start every service against one broker, one topic prefix and one SMTP sink."""
    async with AsyncExitStack() as stack:
        reg_settings = registry_settings(
            kafka=kafka, prefix=prefix, db=await db_url("registry"), tmp=tmp
        )
        registry = await stack.enter_async_context(running_registry(reg_settings))
        base = str(registry.base_url).rstrip("/")
        notifier_settings = NotifierSettings(
            kafka_bootstrap=kafka,
            kafka_topic_prefix=prefix,
            database_url=await db_url("notifier"),
            smtp_host=smtp.host,
            smtp_port=smtp.port,
            jwks_url=f"{base}/.well-known/jwks.json",
            public_base_url=base,
            environment="test",
            **notifier_extra,
        )
        notifier_service = notifier_app(notifier_settings)
        notifier_url = await stack.enter_async_context(serving(notifier_service))
        checkpoint_settings = CheckpointSettings(
            kafka_bootstrap=kafka,
            kafka_topic_prefix=prefix,
            database_url=await db_url("checkpoint"),
            jwks_url=f"{base}/.well-known/jwks.json",
            environment="test",
        )
        checkpoint_url = await stack.enter_async_context(
            serving(checkpoint_app(checkpoint_settings))
        )
        monitor_settings = MonitorSettings(
            kafka_bootstrap=kafka,
            kafka_topic_prefix=prefix,
            database_url=await db_url("monitor"),
            jwks_url=f"{base}/.well-known/jwks.json",
            environment="test",
            **(monitor_extra or {}),
        )
        monitor_service = (
            monitor_app(monitor_settings, clock=monitor_clock)
            if monitor_clock
            else monitor_app(monitor_settings)
        )
        monitor_url = await stack.enter_async_context(serving(monitor_service))
        checkpoint, notifier, monitor = [
            await stack.enter_async_context(service_client(url))
            for url in (checkpoint_url, notifier_url, monitor_url)
        ]
        yield Stack(
            registry=registry,
            checkpoint=checkpoint,
            notifier=notifier,
            monitor=monitor,
            notifier_app=notifier_service,
            monitor_app=monitor_service,
        )


async def submit(stack: Stack, token: str, body: dict[str, Any]) -> str:
    """Submit a CPC through the checkpoint API, retrying while the service has not yet read
    the cited checkpoint from the directory topic; returns the CPC's UID."""

    async def accepted() -> httpx.Response | None:
        resp = await stack.checkpoint.post("/v1/communiques", json=body, headers=auth(token))
        return None if resp.status_code == 422 and "absCheckpoints" in resp.text else resp

    resp = await eventually(accepted, what="checkpoint known to the checkpoint service")
    assert resp.status_code == 201, resp.text
    return str(resp.json()["uid"])
