"""Print a topic's messages, oldest first, then exit (like ``kcat -C -e``).

Usage: ``python -m tools.topic_cat --bootstrap HOST:PORT absch.ircc.v1``. Debian's kcat
cannot talk to the embedded broker (its ApiVersions handshake fails), so this is the
equivalent for local runs; against Apache Kafka both work.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiokafka import AIOKafkaConsumer


async def dump(bootstrap: str, topic: str, idle_ms: int) -> int:
    """Write every message value of ``topic`` to stdout, one per line; returns the count."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    count = 0
    try:
        while batches := await consumer.getmany(timeout_ms=idle_ms):
            for records in batches.values():
                for record in records:
                    sys.stdout.write((record.value or b"").decode("utf-8", "replace") + "\n")
                    count += 1
    finally:
        await consumer.stop()
    return count


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topic")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--idle-ms", type=int, default=1500, help="stop after this much quiet")
    args = parser.parse_args(argv)
    asyncio.run(dump(args.bootstrap, args.topic, args.idle_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
