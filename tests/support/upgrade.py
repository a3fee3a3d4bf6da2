"""A v0.1.0 deployment for a test: its schema, its rows and its topics.

``tests/fixtures/v0_1_0/`` holds what v0.1.0 made: ``<service>.<dialect>.sql`` is the DDL its
``create_all`` ran, ``data.json`` the rows of its four databases and the events on its
topics after a day's work (written by v0.1.0 itself, see ``generate.py`` there).
"""

from __future__ import annotations

import base64
import functools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from sqlalchemy import DateTime, Integer, MetaData, Table, func, insert, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from shared.db import create_engine
from shared.events import all_topics
from shared.kafka.admin import ensure_topics

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "v0_1_0"
SERVICES = ("registry", "checkpoint", "notifier", "monitor")
# The consumer groups v0.1.0 committed offsets for (without the topic prefix), and their
# topics: an upgraded service's consumers go on from there, as in a real deployment.
V010_GROUPS = {
    "absch-notifier": ("absch.ircc.v1", "absch.cpc.v1", "absch.discrepancy.v1"),
    "absch-notifier-view-1": ("absch.directory.v1", "absch.ircc.v1"),
    "absch-monitor": ("absch.ircc.v1", "absch.cpc.v1"),
    "absch-monitor-cases": ("absch.discrepancy.v1", "absch.notification.v1"),
}


@functools.cache
def v010_data() -> dict[str, Any]:
    """``data.json``: ``tables`` (service → table → rows) and ``topics`` (events)."""
    found: dict[str, Any] = json.loads((FIXTURES / "data.json").read_text())
    return found


def v010_statements(service: str, dialect: str) -> list[str]:
    """The DDL statements v0.1.0 ran for ``service`` on ``dialect``."""
    lines = (FIXTURES / f"{service}.{dialect}.sql").read_text().splitlines()
    sql = "\n".join(line for line in lines if not line.startswith("--"))
    return [s.strip() for s in sql.split(";") if s.strip()]


async def create_v010_schema(url: str, service: str) -> None:
    """Make the empty database at ``url`` what v0.1.0 made of it at its first start."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            for statement in v010_statements(service, conn.dialect.name):
                await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


async def load_v010_rows(url: str, service: str) -> None:
    """Insert v0.1.0's rows through v0.1.0's tables (reflected from the database), and move
    PostgreSQL's id sequences past them as a restore would."""
    rows = v010_data()["tables"][service]
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            metadata = MetaData()
            await conn.run_sync(metadata.reflect)
            for table in metadata.sorted_tables:
                if rows.get(table.name):
                    values = [_typed(table, row) for row in rows[table.name]]
                    await conn.execute(insert(table), values)
                if conn.dialect.name == "postgresql":
                    await conn.run_sync(_advance_sequence, table)
    finally:
        await engine.dispose()


def _typed(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for column in table.columns:
        value = out.get(column.name)
        if isinstance(value, str) and isinstance(column.type, DateTime):
            parsed = datetime.fromisoformat(value)
            # SQLite gave them back naive; the services wrote UTC.
            out[column.name] = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return out


def _advance_sequence(conn: Connection, table: Table) -> None:
    pk = list(table.primary_key.columns)
    if len(pk) != 1 or not isinstance(pk[0].type, Integer):
        return
    sequence = conn.scalar(
        text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": pk[0].name}
    )
    highest = conn.scalar(select(func.max(pk[0])))
    if sequence is not None and highest is not None:
        conn.execute(text("SELECT setval(:s, :n)"), {"s": sequence, "n": highest})


async def row_counts(url: str) -> dict[str, int]:
    """Rows per table (the migrations' version table left out)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_counts)
    finally:
        await engine.dispose()


def _counts(conn: Connection) -> dict[str, int]:
    metadata = MetaData()
    metadata.reflect(conn)
    return {
        name: int(conn.scalar(select(func.count()).select_from(table)) or 0)
        for name, table in sorted(metadata.tables.items())
        if not name.startswith("alembic_version")
    }


async def table_rows(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table (the version table left out), in primary key order."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_rows)
    finally:
        await engine.dispose()


def _rows(conn: Connection) -> dict[str, list[dict[str, Any]]]:
    metadata = MetaData()
    metadata.reflect(conn)
    return {
        name: [dict(r._mapping) for r in conn.execute(select(t).order_by(*t.primary_key))]
        for name, t in sorted(metadata.tables.items())
        if not name.startswith("alembic_version")
    }


async def schema_of(url: str) -> dict[str, Any]:
    """Every table's columns (name, type, nullable, default), keys, unique constraints,
    indexes and foreign keys, as the database reports them: two databases built two ways
    compare equal when their schemas are the same."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_schema)
    finally:
        await engine.dispose()


def _schema(conn: Connection) -> dict[str, Any]:
    found = inspect(conn)
    out: dict[str, Any] = {}
    for name in sorted(found.get_table_names()):
        if name.startswith("alembic_version"):
            continue
        out[name] = {
            "columns": [
                (c["name"], c["type"].compile(conn.dialect), c["nullable"], c.get("default"))
                for c in found.get_columns(name)
            ],
            "pk": (found.get_pk_constraint(name)["constrained_columns"]),
            "unique": sorted(
                (u["name"] or "", tuple(u["column_names"]))
                for u in found.get_unique_constraints(name)
            ),
            "indexes": sorted(
                (i["name"] or "", tuple(str(c) for c in i["column_names"]), bool(i["unique"]))
                for i in found.get_indexes(name)
            ),
            "foreign_keys": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in found.get_foreign_keys(name)
            ),
        }
    return out


async def replay_v010_topics(bootstrap: str, prefix: str) -> dict[TopicPartition, int]:
    """Write v0.1.0's events to the prefixed topics (created here with v0.1.0's four
    partitions), each to its partition at its offset, and commit the end offsets for the
    consumer groups v0.1.0 ran, as they stood when it stopped. Returns the end offsets."""
    events = v010_data()["topics"]
    await ensure_topics(bootstrap, all_topics(prefix), partitions=4)
    ends: dict[TopicPartition, int] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            tp = TopicPartition(prefix + event["topic"], event["partition"])
            sent = await producer.send_and_wait(
                tp.topic,
                json.dumps(event["value"]).encode(),
                key=event["key"].encode() if event["key"] is not None else None,
                partition=tp.partition,
                headers=[(k, base64.b64decode(v)) for k, v in event["headers"]],
            )
            assert sent.offset == event["offset"], f"{tp} is not fresh"
            ends[tp] = sent.offset + 1
    finally:
        await producer.stop()
    for group, topics in V010_GROUPS.items():
        offsets = {tp: n for tp, n in ends.items() if tp.topic.removeprefix(prefix) in topics}
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=prefix + group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(list(offsets))
            await consumer.commit(offsets)
        finally:
            await consumer.stop()
    return ends
