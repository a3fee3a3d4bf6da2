"""The monitor's checkpoints follow the kit's directory view (no database)."""

from __future__ import annotations

from typing import Any

from services.monitor.directory import Checkpoints
from services.monitor.domain import CheckpointState
from shared.kit.consumer import Tx
from shared.kit.directory import Entry

CP = "T-CP-1"


def entry(
    revision: int, gov: str = "de", published: bool = True, schema: str = "absCheckpoint"
) -> Entry:
    return Entry(CP, schema, gov, f"ABSCH-CP-DE-1-{revision}", revision, published, {})


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, _tx: Tx, identifier: str) -> None:
        self.calls.append(identifier)


async def test_a_change_the_rules_read_calls_the_listeners_once() -> None:
    checkpoints, heard = Checkpoints(), _Recorder()
    checkpoints.listeners.append(heard)
    tx: Any = object()  # the listeners get it as it is
    await checkpoints.on_change(tx, None, entry(1))
    await checkpoints.on_change(tx, entry(1), entry(2))  # same government, still published
    assert heard.calls == [CP]
    await checkpoints.on_change(tx, entry(2), entry(3, "fr"))
    await checkpoints.on_change(tx, entry(3, "fr"), entry(3, "fr", published=False))
    assert heard.calls == [CP, CP, CP]
    assert checkpoints.snapshot() == {CP: CheckpointState(CP, "fr", False)}


async def test_other_schemas_are_not_checkpoints() -> None:
    checkpoints, heard = Checkpoints(), _Recorder()
    checkpoints.listeners.append(heard)
    other = entry(1, schema="authority")
    checkpoints.mirror(other)
    await checkpoints.on_change(object(), None, other)  # type: ignore[arg-type]
    assert heard.calls == []
    assert checkpoints.snapshot() == {}


def test_the_snapshot_follows_the_view_and_is_a_copy() -> None:
    checkpoints = Checkpoints()
    checkpoints.mirror(entry(1))
    snap = checkpoints.snapshot()
    checkpoints.mirror(entry(2, published=False))
    assert snap == {CP: CheckpointState(CP, "de", True)}
    assert checkpoints.snapshot() == {CP: CheckpointState(CP, "de", False)}
