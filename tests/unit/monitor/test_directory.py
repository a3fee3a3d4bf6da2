"""Folding directory events into the checkpoint view (no database)."""

from __future__ import annotations

from typing import Any

from services.monitor.directory import CheckpointView, KnownCheckpoint, fold
from services.monitor.domain import CheckpointState
from shared.events import new_event
from shared.events.models import DirectoryRecordPublished, DirectoryRecordWithdrawn

CP = "T-CP-1"


def published(revision: int, gov: str = "DE", schema: str = "absCheckpoint") -> Any:
    return DirectoryRecordPublished(
        uid=f"ABSCH-CP-DE-1-{revision}",
        schema_=schema,
        identifier=CP,
        document_id=1,
        revision=revision,
        government=gov,
        record={"header": {"identifier": CP, "schema": schema}},
    )


def withdrawn() -> Any:
    return DirectoryRecordWithdrawn(
        uid="ABSCH-CP-DE-1", schema_="absCheckpoint", identifier=CP, document_id=1
    )


def known(revision: int, gov: str = "de", published: bool = True) -> KnownCheckpoint:
    return KnownCheckpoint(revision, CheckpointState(CP, gov, published))


def test_a_later_revision_wins_and_an_older_one_never_does() -> None:
    assert fold(None, published(1)) == known(1)
    assert fold(known(1), published(2, "fr")) == known(2, "fr")
    assert fold(known(2, "fr"), published(1)) == known(2, "fr")
    assert fold(known(2), published(2)) == known(2)


def test_a_withdrawal_holds_until_a_later_revision() -> None:
    assert fold(None, withdrawn()) is None
    gone = fold(known(2), withdrawn())
    assert gone == known(2, published=False)
    assert fold(gone, published(1)) == gone
    assert fold(gone, published(2)) == gone  # the topic read again from the start
    assert fold(gone, published(3)) == known(3)


def test_reading_the_topic_again_ends_where_it_ended() -> None:
    events = [published(1), published(2, "fr"), withdrawn(), published(3), withdrawn()]
    state: KnownCheckpoint | None = None
    for data in events:
        state = fold(state, data)
    end = state
    for data in events:
        state = fold(state, data)
        assert state == end


async def test_without_a_database_listeners_hear_of_state_changes_only() -> None:
    view = CheckpointView()
    heard: list[str] = []

    async def listener(ident: str) -> None:
        heard.append(ident)

    view.listeners.append(listener)

    async def apply(data: Any) -> None:
        kind = "published" if isinstance(data, DirectoryRecordPublished) else "withdrawn"
        await view.apply(
            new_event(f"directory.record.{kind}", source="registry", subject=data.uid, data=data)
        )

    await view.load()  # nothing to load
    await apply(published(1))
    await apply(published(2))  # same state, later revision
    await apply(published(1, schema="authority"))  # not a checkpoint
    assert heard == [CP]
    assert view.snapshot() == {CP: CheckpointState(CP, "de", True)}
    await apply(withdrawn())
    await apply(published(2))
    assert heard == [CP, CP]
    assert view.snapshot() == {CP: CheckpointState(CP, "de", False)}
