"""Reading what the notifier did: mails in the SMTP sink, its delivery log, its metrics."""

from __future__ import annotations

import re
from collections import Counter

import httpx

from tests.support.metrics import scrape
from tests.support.poll import eventually
from tests.support.registry import auth
from tools.smtp_sink import ReceivedMail, SmtpSink


def mails_about(
    smtp: SmtpSink,
    *,
    subject: str | None = None,
    template: str | None = None,
    event_id: str | None = None,
) -> list[ReceivedMail]:
    """Mails whose X-ABSCH headers match every given value."""
    wanted = {
        "X-ABSCH-Subject": subject,
        "X-ABSCH-Template": template,
        "X-ABSCH-Event-ID": event_id,
    }
    return [
        m
        for m in smtp.mails
        if all(value is None or m.header(name) == value for name, value in wanted.items())
    ]


def envelope_recipients(mails: list[ReceivedMail]) -> set[str]:
    """Lower-cased envelope recipients of some mails."""
    return {m.recipient.lower() for m in mails}


def assert_one_mail_per_event_and_address(mails: list[ReceivedMail]) -> None:
    """No (event, address) pair was mailed twice."""
    pairs = Counter((m.header("X-ABSCH-Event-ID"), m.recipient.lower()) for m in mails)
    twice = {pair: n for pair, n in pairs.items() if n > 1}
    assert not twice, f"mailed more than once: {twice}"


async def deliveries(
    notifier: httpx.AsyncClient, token: str, subject: str, **params: str
) -> list[dict[str, object]]:
    """``GET /v1/deliveries?subject=`` as ``token``."""
    resp = await notifier.get(
        "/v1/deliveries", params={"subject": subject, **params}, headers=auth(token)
    )
    assert resp.status_code == 200, resp.text
    rows: list[dict[str, object]] = resp.json()
    return rows


async def wait_all_sent(
    notifier: httpx.AsyncClient,
    token: str,
    subject: str,
    template: str,
    *,
    event_id: str | None = None,
    timeout: float = 30.0,
) -> set[str]:
    """Poll the delivery log until the subject's ``template`` deliveries (of one event, when
    given) exist and are all sent (rows of one event are created together); returns their
    recipients."""

    def wanted(row: dict[str, object]) -> bool:
        return row["template"] == template and event_id in (None, row["event_id"])

    async def settled() -> set[str] | None:
        rows = [r for r in await deliveries(notifier, token, subject) if wanted(r)]
        if rows and all(r["status"] == "sent" for r in rows):
            return {str(r["recipient"]) for r in rows}
        return None

    found: set[str] = await eventually(
        settled, timeout=timeout, what=f"{template} deliveries of {subject} sent"
    )
    return found


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample (labels must match exactly), or None."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1) or ""))
        if found == labels:
            return float(match.group(2))
    return None


def samples(text: str, name: str) -> list[dict[str, str]]:
    """Label sets of every sample of a metric family member."""
    out = []
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}\{{(.*)\}} \S+", line)
        if match:
            out.append(dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1))))
    return out


async def consumed(client: httpx.AsyncClient, service: str, topic: str) -> float:
    """Events a service handled successfully from one topic (``absch_events_consumed_total``)."""
    text = await scrape(client)
    labels = {"service": service, "topic": topic, "outcome": "ok"}
    return metric(text, "absch_events_consumed_total", **labels) or 0.0
