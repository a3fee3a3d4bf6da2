"""HTTP in, Kafka through, e-mail out: a published IRCC reaches its CNA and NFP by SMTP."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.metrics import scrape
from tests.support.poll import eventually
from tests.support.records import authority, focal_point, permit
from tests.support.registry import ADMIN_TOKEN, auth, government_users, publish
from tests.support.stack import running_stack
from tools.smtp_sink import SmtpSink


def _counter(metrics_text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{name}\{{{re.escape(want)}\}} ([0-9.e+]+)$", metrics_text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_ircc_published_over_http_is_mailed_and_counted(
    kafka_bootstrap: str, topic_prefix: str, db_url, tmp_path: Path, smtp: SmtpSink
) -> None:
    async with running_stack(
        kafka=kafka_bootstrap, prefix=topic_prefix, db_url=db_url, tmp=tmp_path, smtp=smtp
    ) as stack:
        users = await government_users(stack.registry, "mx")
        await publish(stack.registry, ADMIN_TOKEN, focal_point("mx", ["nfp@mx.example"]))
        cna = authority("mx", ["cna@mx.example"], languages=["es"])
        await publish(stack.registry, users["pa"], cna)
        result = await publish(
            stack.registry, users["pa"], permit("mx", cna["header"]["identifier"])
        )
        uid = result["uid"]

        await eventually(lambda: smtp.mails_to("cna@mx.example"), what="mail to the CNA")
        await eventually(lambda: smtp.mails_to("nfp@mx.example"), what="mail to the NFP")
        mail = smtp.mails_to("cna@mx.example")[0]
        assert uid in mail.subject or uid in mail.body()
        assert mail.header("Content-Language") == "es"
        permanent = uid.rsplit("-", 1)[0]
        assert permanent in mail.body("html")

        async def delivered() -> list[dict[str, object]]:
            resp = await stack.notifier.get(
                "/v1/deliveries", params={"subject": uid}, headers=auth(users["cna"])
            )
            assert resp.status_code == 200, resp.text
            return [d for d in resp.json() if d["status"] == "sent"]

        sent = await eventually(delivered, what="delivery log shows sent")
        assert {d["recipient"] for d in sent} == {"cna@mx.example", "nfp@mx.example"}

        async def counted() -> float:
            text = await scrape(stack.monitor)
            return _counter(text, "monitor_events_seen_total", type="ircc.published")

        assert await eventually(counted, what="monitor counted the IRCC") == 1.0
        for service in (stack.registry, stack.notifier, stack.monitor):
            assert (await service.get("/healthz")).status_code == 200
            assert (await service.get("/readyz")).status_code == 200
        assert len(smtp.mails) == 2
