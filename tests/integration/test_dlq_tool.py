"""``python -m tools.dlq`` against the real embedded broker: list, show, replay, errors."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.events import new_event
from shared.events.models import IrccEvent
from shared.kafka.admin import ensure_topics
from tests.support.poll import eventually
from tools.dlq import main
from tools.ports import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _event_bytes(n: int) -> tuple[str, bytes]:
    uid = f"ABSCH-IRCC-MX-{n}-1"
    data = IrccEvent(
        uid=uid, identifier=f"X-{n}", document_id=n, revision=1, government="mx", record={}
    )
    event = new_event("ircc.published", source="registry", subject=uid, data=data)
    return event.id, event.to_json_bytes()


def _dlq_headers(topic: str, partition: int, offset: int, exc: Exception) -> list[Any]:
    """What ``shared/kit/consumer.py`` ``_dead_letter`` appends to the original headers."""
    return [
        ("error", str(exc).encode()),
        ("error_type", type(exc).__name__.encode()),
        ("original_topic", topic.encode()),
        ("original_partition", str(partition).encode()),
        ("original_offset", str(offset).encode()),
        ("attempts", b"5"),
        ("service", b"monitor-1"),
        ("consumer_group", b"monitor"),
    ]


class DeadLetters:
    """Three dead letters of ``<prefix>absch.ircc.v1`` at DLQ ids 0:0, 0:1 and 1:0."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.topic = f"{prefix}absch.ircc.v1"
        self.dlq = f"{self.topic}.dlq"
        self.event_ids: dict[str, str] = {}
        self.values: dict[str, bytes] = {}

    async def write(self) -> None:
        await ensure_topics(self.bootstrap, [self.topic, self.dlq], partitions=2)
        id_a, value_a = _event_bytes(1)
        id_b, value_b = _event_bytes(2)
        letters = [
            # (DLQ partition, key, value, original headers, error)
            (0, b"k1", value_a, [("traceparent", b"00-aa-01")], RuntimeError("no such IRCC")),
            (0, None, b"not json at all", [], ValueError("Expecting value: line 1")),
            (1, b"k2", value_b, [], RuntimeError("handler\nfailed " + "x" * 200)),
        ]
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            for n, (partition, key, value, headers, exc) in enumerate(letters):
                meta = await producer.send_and_wait(
                    self.dlq,
                    value,
                    key=key,
                    partition=partition,
                    headers=headers + _dlq_headers(self.topic, n % 2, 10 + n, exc),
                )
                ident = f"{meta.partition}:{meta.offset}"
                self.values[ident] = value
        finally:
            await producer.stop()
        assert sorted(self.values) == ["0:0", "0:1", "1:0"]
        self.event_ids = {"0:0": id_a, "0:1": "-", "1:0": id_b}

    async def run(self, *argv: str, prefix: str | None = None) -> tuple[int, str, str]:
        """Run the tool's ``main`` in a thread (it runs its own event loop)."""
        out, err = io.StringIO(), io.StringIO()
        args = [
            *argv,
            "--bootstrap",
            self.bootstrap,
            "--prefix",
            self.prefix if prefix is None else prefix,
        ]
        code = await asyncio.to_thread(main, args, stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()


async def _read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic``, read until each partition's highwater from a Fetch."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []

        async def at_end() -> bool:
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                records.extend(batch)
            for tp in tps:
                high = consumer.highwater(tp)
                if high is None or await consumer.position(tp) < high:
                    return False
            return True

        await eventually(at_end, what=f"{topic} read to its end")
        return records
    finally:
        await consumer.stop()


@pytest.fixture
async def letters(kafka_bootstrap: str, topic_prefix: str) -> DeadLetters:
    dead = DeadLetters(kafka_bootstrap, topic_prefix)
    await dead.write()
    return dead


async def test_list_shows_every_dead_letter_under_any_topic_spelling(letters: DeadLetters) -> None:
    code, out, err = await letters.run("list", "absch.ircc.v1")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "EVENT_ID",
        "TYPE",
        "ERROR_TYPE",
        "ERROR",
        "ORIGINAL",
        "REPLAYED",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["0:0", "0:1", "1:0"]
    assert letters.event_ids["0:0"] in lines[1]
    assert "ircc.published" in lines[1]
    assert "RuntimeError" in lines[1]
    assert "no such IRCC" in lines[1]
    assert f"{letters.topic}:0:10" in lines[1]
    assert lines[1].rstrip().endswith("no")
    assert lines[2].split()[1:3] == ["-", "-"]  # not JSON: no event id or type
    assert "…" in lines[3]
    assert "x" * 100 not in lines[3]  # long errors are truncated to one short line

    # The same through the .dlq name, and the fully prefixed name without --prefix.
    _, by_dlq, _ = await letters.run("list", "absch.ircc.v1.dlq")
    _, by_full, _ = await letters.run("list", letters.dlq, prefix="")
    assert by_dlq == by_full == out

    code, out, _ = await letters.run("list", letters.topic, "--json")
    rows = json.loads(out)
    assert code == 0
    assert [r["id"] for r in rows] == ["0:0", "0:1", "1:0"]
    first = rows[0]
    assert first["event_id"] == letters.event_ids["0:0"]
    assert first["event_type"] == "ircc.published"
    assert (first["error_type"], first["error"]) == ("RuntimeError", "no such IRCC")
    assert (first["original_topic"], first["original_partition"]) == (letters.topic, 0)
    assert (first["original_offset"], first["attempts"], first["replayed"]) == (10, 5, False)
    assert rows[2]["error"].startswith("handler\nfailed xxx")  # JSON keeps the whole error


async def test_show_prints_headers_and_the_pretty_value(letters: DeadLetters) -> None:
    code, out, err = await letters.run("show", "absch.ircc.v1", "--id", "0:0")
    assert (code, err) == (0, "")
    assert "id: 0:0" in out
    assert f"dlq_topic: {letters.dlq}" in out
    assert "key: k1" in out
    assert "  error_type: RuntimeError" in out
    assert f"  original_topic: {letters.topic}" in out
    assert "  consumer_group: monitor" in out
    assert "original headers:\n  traceparent: 00-aa-01\n" in out
    value = out.split("value:\n", 1)[1]
    assert json.loads(value)["id"] == letters.event_ids["0:0"]
    assert '\n  "type": "ircc.published"' in value  # indented, not one line

    code, out, _ = await letters.run("show", "absch.ircc.v1", "--id", "0:1")
    assert code == 0
    assert out.endswith("value:\nnot json at all\n")


async def test_replay_sends_the_selected_back_once(letters: DeadLetters) -> None:
    code, out, _ = await letters.run("replay", "absch.ircc.v1", "--dry-run")
    assert code == 0
    assert "would replay 3, skipped 0" in out
    assert await _read_all(letters.bootstrap, letters.topic) == []

    code, out, err = await letters.run("replay", "absch.ircc.v1", "--id", "0:0")
    assert (code, err) == (0, "")
    assert "replayed 1, skipped 0" in out
    first = await _read_all(letters.bootstrap, letters.topic)
    assert len(first) == 1
    record = first[0]
    assert (record.key, record.value) == (b"k1", letters.values["0:0"])
    assert list(record.headers) == [
        ("traceparent", b"00-aa-01"),  # the message's own headers, without the DLQ ones
        ("dlq_replayed_from", f"{letters.dlq}:0:0".encode()),
    ]

    _, listing, _ = await letters.run("list", "absch.ircc.v1", "--json")
    assert {r["id"]: r["replayed"] for r in json.loads(listing)} == {
        "0:0": True,
        "0:1": False,
        "1:0": False,
    }

    code, out, _ = await letters.run("replay", "absch.ircc.v1")
    assert code == 0
    assert "skipped 0:0" in out
    assert "replayed 2, skipped 1" in out
    code, out, _ = await letters.run("replay", "absch.ircc.v1.dlq")
    assert code == 0
    assert "replayed 0, skipped 3" in out

    records = await _read_all(letters.bootstrap, letters.topic)
    assert len(records) == 3  # one per dead letter, none from the repeated runs
    by_source = {dict(r.headers)["dlq_replayed_from"].decode(): r for r in records}
    assert sorted(by_source) == [f"{letters.dlq}:{i}" for i in ("0:0", "0:1", "1:0")]
    for ident, value in letters.values.items():
        assert by_source[f"{letters.dlq}:{ident}"].value == value

    log = await _read_all(letters.bootstrap, f"{letters.dlq}.replayed")
    assert sorted(r.key for r in log) == [b"0:0", b"0:1", b"1:0"]


async def test_unknown_topic_or_id_exits_2(letters: DeadLetters) -> None:
    code, _, err = await letters.run("show", "absch.ircc.v1", "--id", "7:0")
    assert code == 2
    assert "no dead letter 7:0" in err
    code, _, err = await letters.run("replay", "absch.ircc.v1", "--id", "0:0", "--id", "0:99")
    assert code == 2
    assert "0:99" in err
    code, _, err = await letters.run("list", "absch.nothing.v1")
    assert code == 2
    assert f"{letters.prefix}absch.nothing.v1.dlq does not exist" in err
    assert await _read_all(letters.bootstrap, letters.topic) == []  # nothing half-replayed

    code, _, _ = await letters.run("show", "absch.ircc.v1", "--id", "zero")
    assert code == 2  # argparse's usage error, returned rather than raised


async def test_unreachable_broker_exits_1_quickly() -> None:
    start = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tools.dlq", "list", "absch.ircc.v1"],
        cwd=ROOT,
        env={**os.environ, "KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1, done.stderr
    assert "cannot reach the broker at 127.0.0.1:" in done.stderr
    assert done.stderr.count("\n") == 1  # one clear line, not the client's log noise
    assert time.monotonic() - start < 10
