"""The handler harness behaves like the kit's transactional consumer, without a broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import Message
from typing import Any

import pytest
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.events import CloudEvent, new_event
from shared.events.models import DirectoryRecordPublished
from shared.kit.consumer import Delivery, Tx
from shared.kit.testing import FakeMailer, HandlerHarness
from shared.logging import correlation_id


class Base(DeclarativeBase):
    """A throwaway service schema."""


class Seen(Base):
    __tablename__ = "seen"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    identifier: Mapped[str] = mapped_column(String(64))
    correlation: Mapped[str] = mapped_column(String(64))
    offset: Mapped[int]


class Boom(Exception):
    """A handler failing on a poisoned record."""


def published(identifier: str) -> CloudEvent[Any]:
    data = DirectoryRecordPublished(
        uid=f"ABSCH-CNA-DE-1-{len(identifier)}",
        schema_="authority",
        identifier=identifier,
        document_id=1,
        revision=1,
        government="de",
        record={"header": {"identifier": identifier, "schema": "authority"}},
    )
    return new_event("directory.record.published", source="registry", subject=data.uid, data=data)


class Recorder:
    """A transactional handler writing one row per event; hooks note their order."""

    def __init__(self) -> None:
        self.log: list[str] = []

    async def __call__(self, tx: Tx, event: CloudEvent[Any], delivery: Delivery) -> None:
        data = event.data
        assert isinstance(data, DirectoryRecordPublished)  # decoded, typed
        if data.identifier == "POISON":
            raise Boom(event.id)
        tx.session.add(
            Seen(
                event_id=event.id,
                identifier=data.identifier,
                correlation=correlation_id.get() or "",
                offset=delivery.offset,
            )
        )
        self.log.append(f"handled {data.identifier}")
        tx.after_commit(lambda: self.log.append(f"committed {data.identifier}"))


@pytest.fixture
async def harness() -> AsyncIterator[tuple[HandlerHarness, Recorder]]:
    recorder = Recorder()
    table = {"directory.record.published": recorder}
    async with HandlerHarness(Base.metadata, table, topic="t.directory") as harness:
        yield harness, recorder


async def test_one_feed_is_one_transaction_with_its_offset(
    harness: tuple[HandlerHarness, Recorder],
) -> None:
    h, recorder = harness
    first, second = published("A"), published("B")
    deliveries = await h.feed(first, second, key="k")
    assert deliveries == [Delivery("t.directory", 0, 0, "k"), Delivery("t.directory", 0, 1, "k")]
    assert await h.stored_offset() == 2
    assert recorder.log == ["handled A", "handled B", "committed A", "committed B"]
    rows = await h.rows(Seen)
    assert {(r.identifier, r.offset, r.correlation) for r in rows} == {
        ("A", 0, first.correlationid),
        ("B", 1, second.correlationid),
    }
    assert correlation_id.get() is None  # reset after each event
    (third,) = await h.feed(published("C"))
    assert third.offset == 2
    assert await h.stored_offset() == 3
    assert await h.stored_offset("elsewhere") is None


async def test_a_failing_handler_rolls_the_whole_batch_back(
    harness: tuple[HandlerHarness, Recorder],
) -> None:
    h, recorder = harness
    with pytest.raises(Boom):
        await h.feed(published("A"), published("POISON"))
    assert await h.rows(Seen) == []
    assert await h.stored_offset() is None  # the batch is read again
    assert recorder.log == ["handled A"]  # no hook ran
    (delivery,) = await h.feed(published("A"))
    assert delivery.offset == 0
    assert [r.identifier for r in await h.rows(Seen)] == ["A"]


async def test_types_outside_the_table_pass_and_hooks_never_undo_a_commit() -> None:
    recorder = Recorder()

    def broken() -> None:
        raise ZeroDivisionError

    async def failing_hook(tx: Tx, event: CloudEvent[Any], delivery: Delivery) -> None:
        await recorder(tx, event, delivery)
        tx.after_commit(broken)

    async with HandlerHarness(Base.metadata) as h:
        await h.feed(published("ignored"))  # an empty table handles nothing
        assert await h.stored_offset() == 1
        h.use({"directory.record.published": failing_hook})
        await h.feed(published("A"))
    # a new harness starts from an empty database
    async with HandlerHarness(Base.metadata) as fresh:
        assert await fresh.rows(Seen) == []
    assert recorder.log == ["handled A", "committed A"]
    assert [type(e) for e in h.hook_errors] == [ZeroDivisionError]


def message(to: str) -> Message:
    msg = Message()
    msg["To"] = to
    msg["Subject"] = "hello"
    return msg


async def test_the_fake_mailer_keeps_messages_and_fails_on_demand() -> None:
    mailer = FakeMailer()
    await mailer.send(message("A@Example.org"))
    mailer.fail("a@example.org", TimeoutError("no answer"))
    with pytest.raises(TimeoutError):
        await mailer.send(message("a@example.org"))
    await mailer.send(message("b@example.org"))
    mailer.fail_all(ConnectionRefusedError())
    with pytest.raises(ConnectionRefusedError):
        await mailer.send(message("b@example.org"))
    mailer.heal()
    await mailer.send(message("a@example.org"))
    await mailer.close()
    assert mailer.recipients == ["a@example.org", "b@example.org", "a@example.org"]
    assert mailer.attempts == 5
    assert mailer.closed
