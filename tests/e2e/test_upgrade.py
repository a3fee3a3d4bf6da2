"""Upgrading a v0.1.0 deployment to this release: nothing is lost, everything still reads,
and the services go on working (issue 16), on SQLite and PostgreSQL.

The four databases are built as v0.1.0 built them and filled with the rows v0.1.0 wrote
after a day's work (records with revisions, a revoked IRCC, requests, CPCs, deliveries sent,
failed and waiting, findings, cases, outbox rows: ``tests/fixtures/v0_1_0``); the topics
hold v0.1.0's events and its consumer groups' offsets. Then the upgrade runs (what
``python -m tools.migrate --all`` does), every row is counted again and read through the
APIs, and new events go through the whole system.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from services.registry.handlers.users import issue_token
from shared.auth import Principal, Role
from tests.integration.monitor.test_rules import cpc
from tests.support.databases import databases
from tests.support.poll import eventually
from tests.support.records import permit
from tests.support.registry import auth, publish
from tests.support.stack import Stack, running_stack, submit
from tests.support.upgrade import (
    SERVICES,
    create_v010_schema,
    load_v010_rows,
    replay_v010_topics,
    row_counts,
    table_rows,
    v010_data,
)
from tools.migrate import migrations, upgrade
from tools.smtp_sink import SmtpSink

log = logging.getLogger(__name__)
# Tables 0002 drops: views rebuilt from the directory topic into kit_directory.
DROPPED = {"checkpoint": {"known_checkpoints"}, "notifier": {"directory"}}


def _one(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


class Old:
    """v0.1.0's rows, and tokens for its users signed by the upgraded registry (a token
    v0.1.0 issued verifies the same way until it expires)."""

    def __init__(self, stack: Stack) -> None:
        self.tables: dict[str, dict[str, list[dict[str, Any]]]] = v010_data()["tables"]
        self._ctx = stack.registry.app.state.ctx  # type: ignore[attr-defined]

    def rows(self, service: str, table: str) -> list[dict[str, Any]]:
        return self.tables[service][table]

    def token(self, **match: Any) -> str:
        user = _one(self.rows("registry", "users"), **match)
        principal = Principal(
            id=user["id"],
            role=Role(user["role"]),
            government=user["government"],
            checkpoint=user["checkpoint"],
            name=user["name"],
        )
        return issue_token(self._ctx, principal).token

    def identifier(self, **match: Any) -> str:
        return str(_one(self.rows("registry", "records"), **match)["identifier"])


async def test_a_v0_1_0_deployment_upgrades_keeping_every_row(
    kafka_bootstrap: str, topic_prefix: str, db_backend: str, tmp_path: Path, smtp: SmtpSink
) -> None:
    async with databases(db_backend, tmp_path / "databases") as make:
        urls = {service: await make(service) for service in SERVICES}
        for service, url in urls.items():
            await create_v010_schema(url, service)
            await load_v010_rows(url, service)
        before = {service: await row_counts(url) for service, url in urls.items()}
        contents = {service: await table_rows(url) for service, url in urls.items()}
        await replay_v010_topics(kafka_bootstrap, topic_prefix)

        for service, url in urls.items():  # the upgrade
            done = await upgrade(service, url)
            assert done.stamped, "a v0.1.0 database is stamped at the baseline first"
            assert done.after == migrations(service).head

        after = {service: await row_counts(url) for service, url in urls.items()}
        for service in SERVICES:
            log.info("%s rows before: %s", service, before[service])
            log.info("%s rows after: %s", service, after[service])
            for table, count in before[service].items():
                if table in DROPPED.get(service, ()):
                    assert table not in after[service]
                else:
                    assert after[service][table] == count, (service, table)
            for table in set(after[service]) - set(before[service]):
                assert after[service][table] == 0, f"{service}.{table} starts empty"
            now = await table_rows(urls[service])
            for table, rows in contents[service].items():
                if table not in DROPPED.get(service, ()):  # every value as it was
                    kept = [{k: row[k] for k in rows[0]} for row in now[table]] if rows else []
                    assert kept == rows, (service, table)

        async def upgraded(name: str) -> str:
            return urls[name]

        async with running_stack(
            kafka=kafka_bootstrap, prefix=topic_prefix, db_url=upgraded, tmp=tmp_path, smtp=smtp
        ) as stack:
            old = Old(stack)
            await _health_names_the_schema(stack)
            await _registry_reads_its_rows(stack, old)
            await _checkpoint_reads_its_rows(stack, old)
            await _notifier_reads_and_sends_its_rows(stack, old, smtp)
            await _monitor_reads_its_cases(stack, old)
            await _new_events_go_through(stack, old, smtp)


async def _health_names_the_schema(stack: Stack) -> None:
    clients = (stack.registry, stack.checkpoint, stack.notifier, stack.monitor)
    for name, client in zip(SERVICES, clients, strict=True):
        health = (await client.get("/healthz")).json()
        assert health["schema_revision"] == migrations(name).head, name


async def _registry_reads_its_rows(stack: Stack, old: Old) -> None:
    reg = stack.registry
    records = {r["document_id"]: r for r in old.rows("registry", "records")}
    for rev in old.rows("registry", "revisions"):
        resp = await reg.get(f"/v1/records/{rev['uid']}")
        assert resp.status_code == 200, resp.text
        view = resp.json()
        assert view["identifier"] == records[rev["document_id"]]["identifier"]
        assert view["revision"] == rev["revision"]
        assert view["record"] == rev["body"]
    waiting = [r for r in records.values() if r["latest_revision"] == 0]
    assert waiting, "v0.1.0 left a draft waiting for the PA"
    nau = old.token(role="nau", government="mx")
    for draft in waiting:
        resp = await reg.get(
            f"/v1/records/{draft['identifier']}", params={"draft": "true"}, headers=auth(nau)
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["record"] == draft["draft"]
    admin = old.token(role="admin")
    resp = await reg.get("/v1/requests", headers=auth(admin))
    assert resp.status_code == 200, resp.text
    assert Counter(r["state"] for r in resp.json()) == Counter(
        r["state"] for r in old.rows("registry", "requests")
    )
    notified = Counter(n["user_id"] for n in old.rows("registry", "user_notifications"))
    for user_id, count in notified.items():
        resp = await reg.get("/v1/notifications", headers=auth(old.token(id=user_id)))
        assert resp.status_code == 200, resp.text
        assert len(resp.json()) == count


async def _checkpoint_reads_its_rows(stack: Stack, old: Old) -> None:
    for row in old.rows("checkpoint", "communiques"):
        resp = await stack.checkpoint.get(f"/v1/communiques/{row['uid']}")
        assert resp.status_code == 200, resp.text
        assert resp.json()["uid"] == row["uid"]
    # The operator's retry with v0.1.0's Idempotency-Key still answers the same communiqué.
    key = _one(old.rows("checkpoint", "idempotency_keys"))
    submitted = _one(old.rows("checkpoint", "communiques"), uid=key["uid"])
    resp = await stack.checkpoint.post(
        "/v1/communiques",
        json=submitted["body"],
        headers={**auth(old.token(role="checkpoint")), "Idempotency-Key": key["key"]},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["uid"] == key["uid"]


async def _notifier_reads_and_sends_its_rows(stack: Stack, old: Old, smtp: SmtpSink) -> None:
    admin, nfp = old.token(role="admin"), old.token(role="nfp", government="mx")
    deliveries = old.rows("notifier", "deliveries")

    async def log_of(subject: str, token: str) -> list[dict[str, Any]]:
        resp = await stack.notifier.get(
            "/v1/deliveries", params={"subject": subject}, headers=auth(token)
        )
        assert resp.status_code == 200, resp.text
        found: list[dict[str, Any]] = resp.json()
        return found

    for subject, count in Counter(d["subject"] for d in deliveries).items():
        assert len(await log_of(subject, admin)) == count, subject
        # Nobody knows on whose side v0.1.0 mailed: only the Secretariat sees those rows.
        assert await log_of(subject, nfp) == []
    # v0.1.0 left mails waiting for its SMTP server: the upgraded notifier sends them.
    waiting = [d for d in deliveries if d["status"] == "pending"]
    assert waiting, "v0.1.0 left mails waiting"
    for mail in waiting:

        async def sent(mail: dict[str, Any] = mail) -> bool:
            rows = await log_of(mail["subject"], admin)
            return bool(_one(rows, recipient=mail["recipient"])["status"] == "sent")

        await eventually(sent, timeout=60, what=f"the waiting mail to {mail['recipient']}")
        assert any(mail["subject"] in m.subject for m in smtp.mails_to(mail["recipient"]))
    assert len(smtp.mails) == len(waiting), "nothing v0.1.0 sent is sent again"


async def _monitor_reads_its_cases(stack: Stack, old: Old) -> None:
    admin = old.token(role="admin")
    resp = await stack.monitor.get("/v1/discrepancies", headers=auth(admin))
    assert resp.status_code == 200, resp.text
    page = resp.json()
    cases = old.rows("monitor", "cases")
    assert page["total"] == len(cases)
    assert {c["id"] for c in page["items"]} == {c["id"] for c in cases}
    for case in cases:
        resp = await stack.monitor.get(f"/v1/discrepancies/{case['id']}", headers=auth(admin))
        assert resp.status_code == 200, resp.text
        assert resp.json()["cpc_uid"] == case["cpc_uid"]


async def _new_events_go_through(stack: Stack, old: Old, smtp: SmtpSink) -> None:
    """A new IRCC by v0.1.0's PA citing v0.1.0's CNA is mailed to the CNA and NFP the
    notifier learnt from the topic; a new CPC by v0.1.0's checkpoint operator citing
    v0.1.0's revoked IRCC is accepted (the checkpoint read from the topic) and flagged."""
    pa, admin = old.token(role="pa", government="mx"), old.token(role="admin")
    cna = old.identifier(schema_name="authority")
    result = await publish(stack.registry, pa, permit("mx", cna))
    for address in ("cna@mx.example", "nfp@mx.example"):

        def mailed(address: str = address) -> bool:
            return any(result["uid"] in m.subject for m in smtp.mails_to(address))

        await eventually(mailed, timeout=60, what=f"the new IRCC's mail to {address}")
    resp = await stack.notifier.get(
        "/v1/deliveries",
        params={"subject": result["uid"]},
        headers=auth(old.token(role="nfp", government="mx")),
    )
    assert {d["government"] for d in resp.json()} == {"mx"}, "new rows know their side"

    revoked = old.identifier(schema_name="absPermit", revoked=True)
    checkpoint = old.identifier(schema_name="absCheckpoint")
    operator = old.token(role="checkpoint")
    uid = await submit(stack, operator, cpc("de", checkpoint, irccs=[revoked]))

    async def flagged() -> list[dict[str, Any]]:
        resp = await stack.monitor.get("/v1/discrepancies", headers=auth(admin))
        return [c for c in resp.json()["items"] if c["cpc_uid"] == uid]

    (case,) = await eventually(flagged, timeout=60, what="the new CPC's case")
    assert case["rule"] == "IRCC_REVOKED"
    assert case["provider_country"] == "mx"
