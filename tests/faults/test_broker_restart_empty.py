"""The broker is killed and comes back empty (the embedded broker keeps nothing).

Every service must say so (``/readyz`` 503, ``absch_ready`` 0), create its topics again,
recover without a log storm, and carry new events end to end.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.metrics import scrape
from tests.support.poll import eventually
from tests.support.records import authority, focal_point, permit
from tests.support.registry import ADMIN_TOKEN, government_users, publish
from tests.support.stack import running_stack
from tools.broker import EmbeddedBroker
from tools.smtp_sink import SmtpSink

# Warnings and errors a minute, all four services together, while the broker is away and
# while they recover (the first round logged about 580 commit failures a minute).
LOG_BUDGET_PER_MINUTE = 120

log = logging.getLogger(__name__)


async def test_an_empty_broker_is_reported_and_recovered_from(
    topic_prefix: str, db_url: Any, tmp_path: Path, smtp: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    broker = EmbeddedBroker(log_file=tmp_path / "broker.log")
    broker.start()
    try:
        async with running_stack(
            kafka=broker.bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path, smtp=smtp
        ) as stack:
            clients = {
                "registry": stack.registry,
                "checkpoint": stack.checkpoint,
                "notifier": stack.notifier,
                "monitor": stack.monitor,
            }
            reg = stack.registry
            users = await government_users(reg, "mx")
            await publish(reg, ADMIN_TOKEN, focal_point("mx", ["nfp@mx.example"]))
            cna = authority("mx", ["cna@mx.example"])
            await publish(reg, users["pa"], cna)
            await publish(reg, users["pa"], permit("mx", cna["header"]["identifier"]))
            await eventually(lambda: len(smtp.mails) == 2, what="the system works before")

            caplog.clear()
            caplog.set_level(logging.INFO)
            lost_at = time.monotonic()
            broker.stop()
            broker.start()  # same port, no topics, no groups, no offsets

            reported: set[str] = set()
            seen: dict[str, str] = {}

            async def reports_it() -> bool:
                for name, client in clients.items():
                    resp = await client.get("/readyz")
                    if resp.status_code == 503 and resp.json()["checks"]["broker"] is False:
                        reported.add(name)
                        if name not in seen:
                            seen[name] = await scrape(client)
                # The services share the topics: the first to create them again can do so
                # before another's next check (every second) finds them missing, so that
                # one never sees the loss. Every service that looked in between says so.
                return bool(reported) and time.monotonic() - lost_at > 3

            await eventually(reports_it, timeout=15, what="/readyz says 503 naming the broker")
            for name in reported:
                ready_series = f'absch_ready{{check="broker",service="{name}"}} 0.0'
                assert ready_series in seen[name], name

            async def all_ready() -> bool:
                codes = [(await c.get("/readyz")).status_code for c in clients.values()]
                return all(code == 200 for code in codes)

            await eventually(all_ready, timeout=90, what="every service ready again")
            recovered = time.monotonic() - lost_at

            second = await publish(reg, users["pa"], permit("mx", cna["header"]["identifier"]))

            def new_mails() -> set[str]:
                return {
                    m.recipient for m in smtp.mails if m.header("X-ABSCH-Subject") == second["uid"]
                }

            await eventually(
                lambda: new_mails() == {"cna@mx.example", "nfp@mx.example"},
                timeout=60,
                what="a new IRCC's mails after the broker came back empty",
            )
            minutes = max(time.monotonic() - lost_at, 60.0) / 60
            noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
            log.info(
                f"broker restarted empty: 503 naming the broker in {sorted(reported)}, ready "
                f"again after "
                f"{recovered:.1f}s, {len(noisy)} warnings/errors in {minutes * 60:.0f}s"
            )
            assert len(noisy) / minutes <= LOG_BUDGET_PER_MINUTE, [
                f"{r.name}: {r.getMessage()[:120]}" for r in noisy[-20:]
            ]
    finally:
        broker.stop()
