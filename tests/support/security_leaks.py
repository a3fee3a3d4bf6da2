"""Looking for sentinel strings everywhere a system can leak them.

A sentinel is a unique, lower-case ASCII token planted in a value that must stay private
(a confidential field group [P1], editors' ``notes``). The sources here collect what left
the services: every Kafka message of a topic prefix, every mail (raw bytes and decoded
parts), every log record, and response bodies; :func:`find` says which token shows up
where. Matching is case-insensitive (search text is lower-cased by the registry).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from tools.smtp_sink import SmtpSink

_counter = itertools.count(1)
_FORMATTER = logging.Formatter("%(levelname)s %(name)s %(message)s")
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}
_SENTINEL = re.compile(r"zq[0-9]{4}[a-z]{3}[0-9a-f]{10}")


def sentinel(kind: str) -> str:
    """A fresh token: ``zq`` + a sequence number + ``kind[:3]`` + random hex."""
    return f"zq{next(_counter):04d}{kind[:3].lower()}{uuid.uuid4().hex[:10]}"


@dataclass
class Leak:
    """A token found in a source."""

    token: str
    where: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.token} in {self.where}: ...{self.excerpt}..."


@dataclass
class Haystack:
    """Where sentinel-shaped tokens occur in labelled texts, appended to as sources grow.

    Each text is scanned once, when added, for anything shaped like a sentinel (so a search
    costs nothing however many texts and tokens there are); texts are lower-cased first.
    """

    name: str
    hits: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    texts: int = 0

    def add(self, label: str, text: str) -> None:
        """Scan one text."""
        self.texts += 1
        lowered = text.lower()
        for match in _SENTINEL.finditer(lowered):
            start, end = match.span()
            excerpt = lowered[max(0, start - 80) : end + 40].replace("\n", " ")
            self.hits.setdefault(match.group(), []).append((label, excerpt))

    def find(self, tokens: Iterable[str]) -> list[Leak]:
        """Every (token, text) where one of ``tokens`` occurs."""
        return [
            Leak(token, f"{self.name}: {label}", excerpt)
            for token in sorted({t.lower() for t in tokens})
            for label, excerpt in self.hits.get(token, [])
        ]


class KafkaTap:
    """Reads every topic whose name starts with a prefix, from the beginning."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.prefix = prefix
        self.records: list[Any] = []
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
        )
        self._partitions: list[TopicPartition] = []

    async def start(self) -> KafkaTap:
        """Connect and assign every partition of every prefixed topic."""
        await self._consumer.start()
        await self.refresh_topics()
        return self

    async def refresh_topics(self) -> None:
        """Pick up topics created since (DLQs and any other topic a service made)."""
        topics = sorted(t for t in await self._consumer.topics() if t.startswith(self.prefix))
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(self._consumer.partitions_for_topic(topic) or ())
        ]
        new = [tp for tp in partitions if tp not in self._partitions]
        if new:
            kept = {tp: await self._consumer.position(tp) for tp in self._partitions}
            self._partitions = partitions
            self._consumer.assign(partitions)
            for tp, offset in kept.items():
                self._consumer.seek(tp, offset)
            await self._consumer.seek_to_beginning(*new)

    async def _caught_up(self) -> bool:
        for tp in self._partitions:
            if await self._consumer.position(tp) < (self._consumer.highwater(tp) or 0):
                return False
        return True

    @property
    def topics(self) -> set[str]:
        """The topics read."""
        return {tp.topic for tp in self._partitions}

    async def stop(self) -> None:
        """Disconnect."""
        await self._consumer.stop()

    async def drain(self, *, timeout: float = 20.0) -> list[Any]:
        """Read until every partition is at its high watermark; returns the new records."""
        await self.refresh_topics()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        new: list[Any] = []
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                new.extend(records)
            if not batch and await self._caught_up():
                break
            if loop.time() > deadline:
                raise AssertionError(f"topics of {self.prefix} not drained in {timeout}s")
        self.records.extend(new)
        return new


def raw_message(record: Any) -> str:
    """Key, value and headers of a Kafka record as text."""
    parts = [record.key or b"", record.value or b""]
    parts += [name.encode() + b"=" + (value or b"") for name, value in record.headers or ()]
    return b" ".join(parts).decode("utf-8", errors="replace")


@dataclass
class MailTap:
    """Feeds every mail of a sink into a haystack twice: its raw bytes as the sink stored
    them, and its decoded headers and text parts (base64 or quoted-printable bodies hide
    tokens from the raw bytes)."""

    smtp: SmtpSink
    maildir: Path
    haystack: Haystack
    files_seen: int = 0
    mails_seen: int = 0

    def feed(self) -> None:
        """Add the mails that arrived since the last call."""
        files = sorted(self.maildir.glob("*.eml"))
        for path in files[self.files_seen :]:
            self.haystack.add(f"raw {path.name}", path.read_bytes().decode("utf-8", "replace"))
        self.files_seen = len(files)
        mails = self.smtp.mails
        for n, mail in enumerate(mails[self.mails_seen :], self.mails_seen + 1):
            self.haystack.add(f"decoded mail {n} to {mail.recipient}", decoded(mail.message))
        self.mails_seen = len(mails)


def decoded(message: EmailMessage) -> str:
    """Headers and every text part of a message, decoded."""
    texts = [f"{name}: {value}" for name, value in message.items()]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            texts.append(str(part.get_content()))
    return "\n".join(texts)


def log_text(record: logging.LogRecord) -> str:
    """A log record as any handler could write it: message, traceback and extra fields."""
    extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
    return f"{_FORMATTER.format(record)} {extras!r}"


@dataclass
class Cursor:
    """Feeds only the new items of a growing list into a haystack."""

    haystack: Haystack
    label: Callable[[Any], str]
    text: Callable[[Any], str | None]
    seen: int = 0

    def feed(self, items: list[Any]) -> None:
        """Add ``items[seen:]``; an item whose text is None is skipped."""
        for item in items[self.seen :]:
            text = self.text(item)
            if text is not None:
                self.haystack.add(self.label(item), text)
        self.seen = len(items)
