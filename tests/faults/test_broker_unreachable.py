"""The broker stops answering for 20 s (SIGSTOP): APIs keep accepting, every service's
``/readyz`` turns 503 naming the broker within 15 s and 200 again after, nothing is lost.

The embedded broker keeps topics in memory only, so a restart would lose them; freezing
the process is the outage it can take: connections stay open and nothing answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from tests.support.metrics import scrape
from tests.support.poll import eventually
from tests.support.records import authority, focal_point, permit
from tests.support.registry import ADMIN_TOKEN, government_users, publish
from tests.support.stack import running_stack
from tools.broker import EmbeddedBroker
from tools.smtp_sink import SmtpSink

OUTAGE_SECONDS = float(os.environ.get("ABSCH_FAULT_SECONDS", "20"))
READINESS_LIMIT = 15.0
IRCCS = 5

log = logging.getLogger(__name__)


async def test_broker_frozen_for_20s_shows_in_readiness_and_loses_nothing(
    topic_prefix: str, db_url: Any, tmp_path: Path, smtp: SmtpSink
) -> None:
    broker = EmbeddedBroker(log_file=tmp_path / "broker.log")
    broker.start()
    try:
        async with running_stack(
            kafka=broker.bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path, smtp=smtp
        ) as stack:
            reg = stack.registry
            users = await government_users(reg, "mx")
            await publish(reg, ADMIN_TOKEN, focal_point("mx", ["nfp@mx.example"]))
            cna = authority("mx", ["cna@mx.example"])
            await publish(reg, users["pa"], cna)
            first = await publish(reg, users["pa"], permit("mx", cna["header"]["identifier"]))
            await eventually(lambda: len(smtp.mails) == 2, what="the system works before")

            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)
            frozen_at = time.monotonic()
            try:
                uids = []
                for _ in range(IRCCS):
                    start = time.monotonic()
                    result = await publish(
                        reg, users["pa"], permit("mx", cna["header"]["identifier"])
                    )
                    assert time.monotonic() - start < 5, "the API answers without the broker"
                    uids.append(result["uid"])
                clients = {
                    "registry": reg,
                    "checkpoint": stack.checkpoint,
                    "notifier": stack.notifier,
                    "monitor": stack.monitor,
                }
                noticed: dict[str, float] = {}

                async def all_report_the_broker() -> bool:
                    for name, client in clients.items():
                        if name in noticed:
                            continue
                        resp = await client.get("/readyz")
                        if resp.status_code == 503 and resp.json()["checks"]["broker"] is False:
                            noticed[name] = time.monotonic() - frozen_at
                    return len(noticed) == len(clients)

                await eventually(
                    all_report_the_broker, timeout=READINESS_LIMIT, what="every /readyz says 503"
                )
                log.info(f"broker frozen: /readyz 503 after {noticed} s")
                # Hold the outage for its full length: this is the fault, not a wait for it.
                await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - frozen_at)))
            finally:
                os.kill(broker.pid, signal.SIGCONT)

            async def all_ready() -> bool:
                codes = [(await c.get("/readyz")).status_code for c in clients.values()]
                return all(code == 200 for code in codes)

            await eventually(all_ready, timeout=60, what="every /readyz back to 200")

            expected = {
                (uid, who)
                for uid in [first["uid"], *uids]
                for who in ("cna@mx.example", "nfp@mx.example")
            }

            def received() -> set[tuple[str, str]]:
                return {(m.header("X-ABSCH-Subject"), m.recipient) for m in smtp.mails}

            await eventually(
                lambda: received() == expected, timeout=120, what="every mail after the outage"
            )
            assert len(smtp.mails) == len(expected), "no mail was sent twice"

            async def known() -> bool:
                # Distinct IRCCs in the monitor's state: a redelivered event counts once.
                text = await scrape(stack.monitor)
                match = re.search(r'monitor_table_keys\{table="irccs"\} (\S+)', text)
                return match is not None and float(match.group(1)) == IRCCS + 1

            await eventually(known, timeout=120, what="the monitor holds every IRCC")
    finally:
        broker.stop()
