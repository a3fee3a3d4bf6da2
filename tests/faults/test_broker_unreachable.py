"""The broker stops answering for 30 s (SIGSTOP): APIs keep accepting, nothing is lost.

The embedded broker keeps topics in memory only, so a restart would lose them; freezing
the process is the outage it can take: connections stay open and nothing answers.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from tests.support.poll import eventually
from tests.support.records import authority, focal_point, permit
from tests.support.registry import ADMIN_TOKEN, government_users, publish
from tests.support.stack import running_stack
from tools.broker import EmbeddedBroker
from tools.smtp_sink import SmtpSink

OUTAGE_SECONDS = float(os.environ.get("ABSCH_FAULT_SECONDS", "30"))
IRCCS = 5


async def test_broker_unreachable_for_30s_loses_nothing(
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
                # Hold the outage for its full length: this is the fault, not a wait for it.
                await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - frozen_at)))
                ready = await reg.get("/readyz")
                assert ready.status_code in (200, 503)
            finally:
                os.kill(broker.pid, signal.SIGCONT)

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
                text = (await stack.monitor.get("/metrics")).text
                match = re.search(r'monitor_table_keys\{table="irccs"\} (\S+)', text)
                return match is not None and float(match.group(1)) == IRCCS + 1

            await eventually(known, timeout=120, what="the monitor holds every IRCC")
    finally:
        broker.stop()
