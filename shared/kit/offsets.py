"""Consumed offsets kept in the service's own database, beside the effects they caused.

A handler's writes and the next offset of its partition commit in one transaction, so a
redelivery after a crash or a rebalance is skipped by construction. The update is
conditional on the offset the consumer last read from the table: when two members of a
group briefly hold the same partition, the second commit matches nothing and rolls back.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import (
    BigInteger,
    Column,
    Insert,
    Integer,
    MetaData,
    String,
    Table,
    Update,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

TABLE_NAME = "kit_consumer_offsets"


class StaleOffset(Exception):
    """Another member moved this partition's offset first: our batch must roll back."""


def offsets_table(metadata: MetaData) -> Table:
    """The offsets table in a service's metadata (one row per group, topic, partition)."""
    if TABLE_NAME in metadata.tables:
        return metadata.tables[TABLE_NAME]
    return Table(
        TABLE_NAME,
        metadata,
        Column("group_id", String(255), primary_key=True),
        Column("topic", String(255), primary_key=True),
        Column("partition", Integer, primary_key=True),
        Column("next_offset", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    )


async def read_offsets(
    session: AsyncSession, table: Table, group: str, partitions: list[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """Stored next offsets of the given (topic, partition) pairs (absent when never set)."""
    if not partitions:
        return {}
    topics = {t for t, _ in partitions}
    rows = await session.execute(
        select(table.c.topic, table.c.partition, table.c.next_offset).where(
            table.c.group_id == group, table.c.topic.in_(topics)
        )
    )
    wanted = set(partitions)
    return {(t, p): int(n) for t, p, n in rows if (t, p) in wanted}


@cache
def _store_statements(table: Table) -> tuple[Insert, Update]:
    """The two statements of :func:`store_offset`, built once per table: building one costs
    more than running it."""
    first = insert(table)
    move = (
        update(table)
        .where(
            table.c.group_id == bindparam("b_group"),
            table.c.topic == bindparam("b_topic"),
            table.c.partition == bindparam("b_partition"),
            table.c.next_offset == bindparam("b_expected"),
        )
        .values(next_offset=bindparam("b_next"))
    )
    return first, move


async def store_offset(
    session: AsyncSession,
    table: Table,
    group: str,
    topic: str,
    partition: int,
    *,
    expected: int | None,
    next_offset: int,
) -> None:
    """Move the offset from ``expected`` (None: no row yet) to ``next_offset``, or raise
    :class:`StaleOffset` when someone else moved it meanwhile."""
    first, move = _store_statements(table)
    if expected is None:
        try:
            await session.execute(
                first,
                {
                    "group_id": group,
                    "topic": topic,
                    "partition": partition,
                    "next_offset": next_offset,
                },
            )
        except IntegrityError as exc:
            raise StaleOffset(f"{topic}[{partition}] was stored meanwhile") from exc
        return
    result = await session.execute(
        move,
        {
            "b_group": group,
            "b_topic": topic,
            "b_partition": partition,
            "b_expected": expected,
            "b_next": next_offset,
        },
    )
    if getattr(result, "rowcount", 1) != 1:
        raise StaleOffset(f"{topic}[{partition}] moved from {expected}")


async def reset_offset(
    session: AsyncSession, table: Table, group: str, topic: str, partition: int, next_offset: int
) -> None:
    """Set an offset unconditionally (the topic was recreated and starts again)."""
    await session.execute(
        update(table)
        .where(table.c.group_id == group, table.c.topic == topic, table.c.partition == partition)
        .values(next_offset=next_offset)
    )
