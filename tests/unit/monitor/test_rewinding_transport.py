"""The monitor's faust consumer never commits past a record its agent did not get."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from faust.transport.drivers.aiokafka import Consumer as FaustConsumer
from faust.types import TP

from services.monitor.adapters.rewinding_transport import RewindingConsumer

TOPIC = TP("absch.cpc.v1", 0)


def _bookkeeping(cls: type[Any], *, committed: int, acked: list[int]) -> Any:
    """A consumer with only the offset bookkeeping ``_new_offset`` reads."""
    consumer = object.__new__(cls)
    consumer._acked = defaultdict(list, {TOPIC: list(acked)})
    consumer._acked_index = defaultdict(set, {TOPIC: set(acked)})
    consumer._committed_offset = defaultdict(lambda: None, {TOPIC: committed})
    consumer._gap = defaultdict(list)  # no compaction gaps
    consumer._holes = set()
    return consumer


def test_stock_faust_commits_past_a_lone_missing_record() -> None:
    # Offset 21 never reached the agent; faust still moves the commit to 24.
    consumer = _bookkeeping(FaustConsumer, committed=21, acked=[22, 23])
    assert consumer._new_offset(TOPIC) == 24


def test_a_missing_record_at_the_committed_offset_holds_the_commit_and_is_read_again() -> None:
    consumer = _bookkeeping(RewindingConsumer, committed=21, acked=[22, 23])
    assert consumer._new_offset(TOPIC) is None
    assert consumer._holes == {TOPIC}


def test_a_larger_hole_is_read_again_too() -> None:
    consumer = _bookkeeping(RewindingConsumer, committed=21, acked=[25, 26])
    assert consumer._new_offset(TOPIC) is None
    assert consumer._holes == {TOPIC}


def test_records_acknowledged_in_order_are_committed() -> None:
    consumer = _bookkeeping(RewindingConsumer, committed=21, acked=[21, 22, 23])
    assert consumer._new_offset(TOPIC) == 24
    assert consumer._holes == set()
