"""The monitor's view of published checkpoints, rebuilt from the directory topic."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.monitor.domain import CheckpointState
from shared.events import CloudEvent
from shared.events.models import DirectoryRecordPublished, DirectoryRecordWithdrawn

Listener = Callable[[str], Awaitable[None]]


class CheckpointView:
    """Checkpoints by identifier; listeners hear of every change."""

    def __init__(self) -> None:
        self._checkpoints: dict[str, CheckpointState] = {}
        self._revisions: dict[str, int] = {}
        self.listeners: list[Listener] = []

    def snapshot(self) -> dict[str, CheckpointState]:
        """A copy that an evaluation can hold on to."""
        return dict(self._checkpoints)

    async def apply(self, event: CloudEvent[Any]) -> None:
        """Fold a directory event in (older revisions never win)."""
        data = event.data
        if isinstance(data, DirectoryRecordPublished) and data.schema_ == "absCheckpoint":
            if data.revision < self._revisions.get(data.identifier, 0):
                return
            self._revisions[data.identifier] = data.revision
            state = CheckpointState(data.identifier, (data.government or "").lower(), True)
        elif isinstance(data, DirectoryRecordWithdrawn) and data.identifier in self._checkpoints:
            old = self._checkpoints[data.identifier]
            state = CheckpointState(old.identifier, old.government, False)
        else:
            return
        if self._checkpoints.get(data.identifier) == state:
            return
        self._checkpoints[data.identifier] = state
        for listener in self.listeners:
            await listener(data.identifier)
