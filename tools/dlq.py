"""Inspect and re-inject dead letters (``<topic>.dlq``).

Usage: ``python -m tools.dlq list|show|replay TOPIC [--id P:O ...]``. TOPIC is the base
name (``absch.cpc.v1``) or the prefixed one, of the original topic or of its ``.dlq``.
A dead letter's id is ``<partition>:<offset>`` in the DLQ. ``replay`` sends dead letters
back to their original topic and records each in ``<topic>.dlq.replayed`` (keyed by id)
once the broker acknowledged it, so running it again re-injects nothing.

Exit codes: 0 done, 1 broker unreachable, 2 unknown topic or id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from shared.events.topics import DLQ_SUFFIX, dlq_name
from shared.kafka.admin import ensure_topics

# Headers the consumer appends when it dead-letters (shared/kit/consumer.py _dead_letter).
DLQ_HEADERS = (
    "error",
    "error_type",
    "original_topic",
    "original_partition",
    "original_offset",
    "attempts",
    "service",
    "consumer_group",
)
REPLAYED_FROM_HEADER = "dlq_replayed_from"
REPLAY_LOG_SUFFIX = ".replayed"
CONNECT_TIMEOUT = 8.0  # the whole command fails within ~10 s
READ_TIMEOUT = 30.0
ERROR_WIDTH = 60


class DlqToolError(Exception):
    """A failure reported to the user with an exit code."""

    exit_code = 1


class NotFound(DlqToolError):
    """A topic or dead-letter id that does not exist."""

    exit_code = 2


class BrokerUnavailable(DlqToolError):
    """The broker did not answer in time."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One DLQ record, with the consumer's error headers split from the original ones."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    original_headers: tuple[tuple[str, bytes], ...]
    meta: dict[str, str]
    event_id: str
    event_type: str

    @property
    def id(self) -> str:
        """Stable id: ``<partition>:<offset>`` of the DLQ record."""
        return f"{self.partition}:{self.offset}"

    def original_topic(self, fallback: str) -> str:
        """Where the message came from (``fallback`` if the header is missing)."""
        return self.meta.get("original_topic") or fallback

    def origin(self, fallback: str) -> str:
        """``topic:partition:offset`` of the original message."""
        part = self.meta.get("original_partition", "?")
        offset = self.meta.get("original_offset", "?")
        return f"{self.original_topic(fallback)}:{part}:{offset}"


@dataclass(frozen=True, slots=True)
class Topics:
    """The three topic names one invocation works on."""

    original: str
    dlq: str
    replay_log: str


def resolve_topics(name: str, prefix: str) -> Topics:
    """Topic names for a base or prefixed name, given as the original or the ``.dlq``."""
    original = name.removesuffix(DLQ_SUFFIX)
    if prefix and not original.startswith(prefix):
        original = prefix + original
    dlq = dlq_name(original)
    return Topics(original, dlq, dlq + REPLAY_LOG_SUFFIX)


def parse_id(text: str) -> tuple[int, int]:
    """``P:O`` to ``(partition, offset)``; argparse turns the error into a usage message."""
    part, sep, offset = text.partition(":")
    if not sep or not part.isdigit() or not offset.isdigit():
        raise argparse.ArgumentTypeError(f"invalid id {text!r}: expected PARTITION:OFFSET")
    return int(part), int(offset)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _event_fields(value: bytes) -> tuple[str, str]:
    """CloudEvent id and type if the value is a JSON object carrying them, else ``-``."""
    try:
        doc = json.loads(value)
    except ValueError:  # undecodable messages are a normal reason to be dead-lettered
        return "-", "-"
    if not isinstance(doc, dict):
        return "-", "-"
    return str(doc.get("id") or "-"), str(doc.get("type") or "-")


def _split_headers(
    headers: Sequence[tuple[str, bytes]],
) -> tuple[tuple[tuple[str, bytes], ...], dict[str, str]]:
    """Split off the trailing DLQ headers; the message's own headers come before them."""
    cut = len(headers)
    seen: set[str] = set()
    # Walk back only while names are DLQ headers not yet seen, so an original header that
    # happens to share a name (say an earlier dead-lettering's "error") is kept.
    while cut > 0 and headers[cut - 1][0] in DLQ_HEADERS and headers[cut - 1][0] not in seen:
        seen.add(headers[cut - 1][0])
        cut -= 1
    meta = {name: _text(value) for name, value in headers[cut:]}
    return tuple(headers[:cut]), meta


def to_dead_letter(record: Any) -> DeadLetter:
    """Build a :class:`DeadLetter` from an aiokafka ``ConsumerRecord``."""
    value: bytes = record.value or b""
    original, meta = _split_headers(list(record.headers or ()))
    event_id, event_type = _event_fields(value)
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=record.key,
        value=value,
        original_headers=original,
        meta=meta,
        event_id=event_id,
        event_type=event_type,
    )


class Broker:
    """One consumer (for reading) and, when replaying, one producer."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.topics: set[str] = set()

    async def __aenter__(self) -> Broker:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=int(CONNECT_TIMEOUT * 1000),
            # The embedded broker holds each fetch this long even at the end of a partition.
            fetch_max_wait_ms=100,
        )
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await consumer.start()
                self.topics = set(await consumer.topics())
        except (KafkaError, OSError, TimeoutError) as exc:
            await consumer.stop()
            reason = (
                f"no answer within {CONNECT_TIMEOUT:.0f}s" if isinstance(exc, TimeoutError) else exc
            )
            raise BrokerUnavailable(
                f"cannot reach the broker at {self.bootstrap}: {reason}"
            ) from exc
        self._consumer = consumer
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
            await self._producer.stop()
        if self._consumer is not None:
            await self._consumer.stop()

    async def read_to_end(self, topics: Sequence[str]) -> dict[str, list[Any]]:
        """Every record of ``topics`` (existing ones), oldest first per partition."""
        assert self._consumer is not None
        consumer = self._consumer
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            if topic in self.topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        found: dict[str, list[Any]] = {topic: [] for topic in topics}
        if not tps:
            return found
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # ListOffsets "latest" is short on the embedded broker (docs/broker.md), so the end is the
        # highwater a Fetch response reports; real Kafka gives the same number.
        pending = set(tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_TIMEOUT
        while pending:
            if loop.time() > deadline:
                raise BrokerUnavailable(
                    f"reading {', '.join(sorted({tp.topic for tp in pending}))} made no "
                    f"progress for {READ_TIMEOUT:.0f}s"
                )
            batches = await consumer.getmany(*pending, timeout_ms=200)
            if batches:  # a large topic may take long: only a stall is an error
                deadline = loop.time() + READ_TIMEOUT
            for tp, records in batches.items():
                found[tp.topic].extend(records)
            for tp in list(pending):
                high = consumer.highwater(tp)
                if high is not None and await consumer.position(tp) >= high:
                    pending.discard(tp)
        return found

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> Any:
        """Send one record and wait for the broker's ``acks=all``; returns its metadata."""
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=False,  # the embedded broker lacks it (docs/broker.md)
                request_timeout_ms=int(CONNECT_TIMEOUT * 1000),
            )
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return await self._producer.send_and_wait(topic, value, key=key, headers=headers or None)


async def load(broker: Broker, topics: Topics) -> tuple[list[DeadLetter], set[str]]:
    """Dead letters of ``topics.dlq`` in (partition, offset) order, and the replayed ids."""
    if topics.dlq not in broker.topics:
        raise NotFound(f"topic {topics.dlq} does not exist (no dead letters were ever written)")
    found = await broker.read_to_end([topics.dlq, topics.replay_log])
    letters = sorted(
        (to_dead_letter(r) for r in found[topics.dlq]), key=lambda d: (d.partition, d.offset)
    )
    replayed = {r.key.decode() for r in found[topics.replay_log] if r.key}
    return letters, replayed


def _select(
    letters: list[DeadLetter], ids: Sequence[tuple[int, int]], dlq: str
) -> list[DeadLetter]:
    """The dead letters named by ``ids`` (all when empty), each once, in DLQ order."""
    if not ids:
        return letters
    by_id = {(d.partition, d.offset): d for d in letters}
    missing = [f"{p}:{o}" for p, o in ids if (p, o) not in by_id]
    if missing:
        raise NotFound(f"no dead letter {', '.join(missing)} in {dlq}")
    wanted = set(ids)
    return [d for d in letters if (d.partition, d.offset) in wanted]


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _as_json(letter: DeadLetter, topics: Topics, replayed: bool) -> dict[str, Any]:
    def number(name: str) -> int | None:
        raw = letter.meta.get(name, "")
        return int(raw) if raw.isdigit() else None

    return {
        "id": letter.id,
        "dlq_topic": topics.dlq,
        "event_id": letter.event_id,
        "event_type": letter.event_type,
        "error_type": letter.meta.get("error_type"),
        "error": letter.meta.get("error"),
        "original_topic": letter.original_topic(topics.original),
        "original_partition": number("original_partition"),
        "original_offset": number("original_offset"),
        "attempts": number("attempts"),
        "service": letter.meta.get("service"),
        "consumer_group": letter.meta.get("consumer_group"),
        "replayed": replayed,
    }


async def cmd_list(broker: Broker, topics: Topics, as_json: bool, out: TextIO) -> int:
    """One line (or JSON object) per dead letter."""
    letters, replayed = await load(broker, topics)
    if as_json:
        rows = [_as_json(d, topics, d.id in replayed) for d in letters]
        out.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return 0
    if not letters:
        out.write(f"no dead letters in {topics.dlq}\n")
        return 0
    table = [("ID", "EVENT_ID", "TYPE", "ERROR_TYPE", "ERROR", "ORIGINAL", "REPLAYED")]
    table += [
        (
            d.id,
            d.event_id,
            d.event_type,
            d.meta.get("error_type", "-"),
            _one_line(d.meta.get("error", "-"), ERROR_WIDTH),
            d.origin(topics.original),
            "yes" if d.id in replayed else "no",
        )
        for d in letters
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
    return 0


async def cmd_show(broker: Broker, topics: Topics, ident: tuple[int, int], out: TextIO) -> int:
    """Everything about one dead letter: headers and the value, pretty-printed if JSON."""
    letters, replayed = await load(broker, topics)
    (letter,) = _select(letters, [ident], topics.dlq)
    stamp = datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC).isoformat()
    lines = [
        f"id: {letter.id}",
        f"dlq_topic: {topics.dlq}",
        f"timestamp: {stamp}",
        f"key: {_text(letter.key) if letter.key is not None else '-'}",
        f"replayed: {'yes' if letter.id in replayed else 'no'}",
        "dlq headers:",
        *(f"  {name}: {value}" for name, value in letter.meta.items()),
        "original headers:",
        *(f"  {name}: {_text(value)}" for name, value in letter.original_headers),
        "value:",
    ]
    try:
        body = json.dumps(json.loads(letter.value), indent=2, ensure_ascii=False)
    except ValueError:
        body = _text(letter.value)
    out.write("\n".join(lines) + "\n" + body + "\n")
    return 0


async def cmd_replay(
    broker: Broker,
    topics: Topics,
    ids: Sequence[tuple[int, int]],
    *,
    dry_run: bool,
    replication: int,
    out: TextIO,
) -> int:
    """Send the selected dead letters back to their original topics, each at most once."""
    letters, replayed = await load(broker, topics)
    selected = _select(letters, ids, topics.dlq)
    targets = {d.original_topic(topics.original) for d in selected if d.id not in replayed}
    missing = sorted(targets - broker.topics)
    if missing:  # checked before sending anything, so a bad target never half-replays
        raise NotFound(f"original topic {', '.join(missing)} does not exist")
    if not dry_run and topics.replay_log not in broker.topics:
        # One partition: the log is small and read whole; keys keep it inspectable.
        await ensure_topics(
            broker.bootstrap, [topics.replay_log], partitions=1, replication=replication
        )
    done = skipped = 0
    for letter in selected:
        target = letter.original_topic(topics.original)
        what = (
            f"{letter.event_type} {letter.event_id}"
            if letter.event_type != "-"
            else "not a CloudEvent"
        )
        label = f"{letter.id} ({what})"
        if letter.id in replayed:
            out.write(f"skipped {label}: already replayed\n")
            skipped += 1
            continue
        if dry_run:
            out.write(f"would replay {label} -> {target}\n")
            done += 1
            continue
        source = f"{topics.dlq}:{letter.id}"
        headers = [(n, v) for n, v in letter.original_headers if n != REPLAYED_FROM_HEADER]
        headers.append((REPLAYED_FROM_HEADER, source.encode()))
        sent = await broker.send(target, letter.key, letter.value, headers)
        # Logged only after the ack: a crash in between replays again (at-least-once,
        # consumers are idempotent on the event id) rather than losing the message.
        entry = {
            "id": letter.id,
            "dlq_topic": topics.dlq,
            "event_id": letter.event_id,
            "replayed_to": f"{sent.topic}:{sent.partition}:{sent.offset}",
            "replayed_at": datetime.now(UTC).isoformat(),
        }
        await broker.send(topics.replay_log, letter.id.encode(), json.dumps(entry).encode(), [])
        out.write(f"replayed {label} -> {sent.topic}:{sent.partition}:{sent.offset}\n")
        done += 1
    verb = "would replay" if dry_run else "replayed"
    out.write(f"{verb} {done}, skipped {skipped} (already replayed)\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``list``, ``show`` and ``replay``, each with the broker options."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("topic", help="original or .dlq topic, base or prefixed name")
    common.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP)",
    )
    common.add_argument(
        "--prefix",
        default=os.environ.get("KAFKA_TOPIC_PREFIX", ""),
        help="topic prefix (env KAFKA_TOPIC_PREFIX)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="show Kafka client logs")
    parser = argparse.ArgumentParser(
        prog="python -m tools.dlq", description=(__doc__ or "").splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", parents=[common], help="one line per dead letter")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    show = sub.add_parser("show", parents=[common], help="one dead letter in full")
    show.add_argument("--id", required=True, type=parse_id, help="PARTITION:OFFSET in the DLQ")
    replay = sub.add_parser("replay", parents=[common], help="send back to the original topic")
    replay.add_argument(
        "--id",
        dest="ids",
        action="append",
        type=parse_id,
        default=[],
        help="PARTITION:OFFSET to replay (repeatable; default: all)",
    )
    replay.add_argument("--dry-run", action="store_true", help="print, send nothing")
    return parser


async def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Execute parsed ``args``; errors become a message on ``err`` and an exit code."""
    topics = resolve_topics(args.topic, args.prefix)
    try:
        async with Broker(args.bootstrap) as broker:
            if args.command == "list":
                return await cmd_list(broker, topics, args.json, out)
            if args.command == "show":
                return await cmd_show(broker, topics, args.id, out)
            return await cmd_replay(
                broker,
                topics,
                args.ids,
                dry_run=args.dry_run,
                replication=int(os.environ.get("KAFKA_REPLICATION", "1")),
                out=out,
            )
    except DlqToolError as exc:
        err.write(f"error: {exc}\n")
        return exc.exit_code
    except (KafkaError, OSError, TimeoutError) as exc:
        err.write(f"error: broker at {args.bootstrap} failed: {exc!r}\n")
        return 1


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Command-line entry point; returns the exit code."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (bad id syntax) exit 2, --help 0
        return exc.code if isinstance(exc.code, int) else 2
    if not args.verbose:
        # aiokafka logs every failed connection attempt; our own message says it once.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return asyncio.run(run(args, out, err))


if __name__ == "__main__":
    sys.exit(main())
