"""The SMTP server refuses for 60 s, then accepts: every mail arrives exactly once."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from tests.support.mail import assert_one_mail_per_event_and_address, wait_all_sent
from tests.support.notifier import country_with_authorities, running_notifier_stack
from tests.support.poll import eventually
from tests.support.records import permit
from tests.support.registry import publish
from tools.smtp_sink import SmtpSink

OUTAGE_SECONDS = float(os.environ.get("ABSCH_SMTP_FAULT_SECONDS", "60"))


async def test_smtp_refusing_for_60s_then_every_mail_arrives_once(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path, smtp: SmtpSink
) -> None:
    async with running_notifier_stack(
        kafka=kafka_bootstrap,
        prefix=topic_prefix,
        db_url=db_url,
        tmp=tmp_path,
        smtp=smtp,
        retry_base_seconds=0.5,
        retry_max_seconds=5.0,
        max_attempts=100,
    ) as stack:
        mx = await country_with_authorities(stack, "mx")
        smtp.refusing = True
        started = time.monotonic()
        uids = [
            (await publish(stack.registry, mx.users["pa"], permit("mx", mx.cna)))["uid"]
            for _ in range(3)
        ]
        # Hold the outage for its full length: this is the fault, not a wait for it.
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - started)))
        assert smtp.mails == []
        smtp.refusing = False
        for uid in uids:
            sent = await wait_all_sent(stack.notifier, mx.users["cna"], uid, "ircc_published")
            assert sent == {mx.cna_address, mx.nfp_address}
        await eventually(lambda: len(smtp.mails) == 2 * len(uids), what="all mails")
        assert_one_mail_per_event_and_address(smtp.mails)
