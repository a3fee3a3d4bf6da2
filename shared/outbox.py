"""Moved to :mod:`shared.kit.outbox`; kept while callers move."""

from shared.kit.outbox import OutboxMixin, OutboxRelay, stage

__all__ = ["OutboxMixin", "OutboxRelay", "stage"]
