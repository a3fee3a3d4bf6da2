"""What counts as a transient failure (wait and retry) and what as a permanent one.

Transient: the database, the broker or the SMTP server can't be reached or timed out.
Such a failure says nothing about the message, so it never reaches a dead-letter queue:
the partition pauses and the same message is tried again for as long as it lasts.
Everything else is permanent after a few attempts on the same message.
"""

from __future__ import annotations

import asyncio
import sqlite3

from aiokafka import errors as kafka_errors
from sqlalchemy import exc as sa_exc


class TransientError(Exception):
    """Raise (or subclass) from an adapter to say "not the message's fault, try later"."""


# A message that can never be published as it is, whatever the broker's state.
UNPUBLISHABLE = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.InvalidTopicError,
)


def _sqlite_transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "locked" in text or "unable to open" in text or "disk i/o" in text


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is about reachability, not about the message."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient_here(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _transient_here(exc: BaseException) -> bool:
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, UNPUBLISHABLE):
        return False
    if isinstance(exc, kafka_errors.KafkaError):
        return bool(getattr(exc, "retriable", False)) or isinstance(
            exc, kafka_errors.KafkaTimeoutError | kafka_errors.KafkaConnectionError
        )
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            orig = exc.orig
            return not isinstance(orig, sqlite3.OperationalError) or _sqlite_transient(orig)
        return False
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True  # pool exhausted or connection lost
    if isinstance(exc, sqlite3.OperationalError):
        return _sqlite_transient(exc)
    if type(exc).__module__.startswith("asyncpg"):
        name = type(exc).__name__
        return (
            "Connection" in name
            or "CannotConnectNow" in name
            or "AdminShutdown" in name
            or "TooManyConnections" in name
            # two transactions crossed: either may succeed when tried again
            or "Deadlock" in name
            or "Serialization" in name
        )
    return isinstance(exc, ConnectionError | TimeoutError | asyncio.TimeoutError | OSError)


def is_conflict(exc: BaseException) -> bool:
    """True for a deadlock or serialization failure: two transactions crossed."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        text = str(current).lower()
        if "Deadlock" in name or "Serialization" in name or "deadlock detected" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


def is_unpublishable(exc: BaseException) -> bool:
    """True when the broker refuses this message itself (too large, bad topic)."""
    return isinstance(exc, UNPUBLISHABLE)
