"""``python -m services.registry.mirror --source URL``: mirror a real clearing-house.

Runs one pass, or one every ``--interval`` seconds with ``--follow``. Writes into the
registry's database (``REGISTRY_DATABASE_URL``, brought to head by
``python -m services.registry.migrate`` first); the registry service's relay publishes
the events. Exit codes: 0 done, 1 the source failed (resume by running again), 2 the
database is not at the migrations' head.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from services.registry.migrations import MIGRATIONS
from services.registry.mirror.run import (
    LogProgress,
    Mirror,
    MirrorMetrics,
    Options,
    ProgressView,
    Report,
)
from services.registry.mirror.source import Source, SourceError
from services.registry.mirror.store import MIRRORED_SCHEMAS, MirrorStore
from services.registry.settings import RegistrySettings
from shared.db import create_engine, session_factory
from shared.logging import configure_logging
from shared.metrics import MetricsServer
from shared.migrations import SchemaError

log = logging.getLogger("services.registry.mirror")


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m services.registry.mirror",
        description="Mirror the published ABS records of a clearing-house, read-only.",
    )
    p.add_argument("--source", required=True, help="API base URL, e.g. https://api.cbd.int")
    p.add_argument("--follow", action="store_true", help="keep mirroring every --interval")
    p.add_argument("--interval", type=float, default=300.0, help="seconds between passes")
    p.add_argument("--rps", type=float, default=4.0, help="requests per second at most")
    p.add_argument("--rows", type=int, default=100, help="index records per page")
    p.add_argument("--retries", type=int, default=6, help="attempts per request")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry wait, seconds")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument("--notify", action="store_true", help="mail as for a local publication")
    p.add_argument("--dry-run", action="store_true", help="print what would change")
    p.add_argument("--rejects", type=Path, help="JSON lines of unmappable records")
    p.add_argument(
        "--schema",
        action="append",
        choices=MIRRORED_SCHEMAS,
        help="only these schemas (repeatable; default: all five)",
    )
    p.add_argument("--database-url", help="instead of REGISTRY_DATABASE_URL")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    p.add_argument("--no-progress", action="store_true", help="log lines even on a terminal")
    return p


class RichProgress:
    """A bar per schema on the terminal (rich)."""

    def __init__(self) -> None:
        from rich.progress import Progress  # only on a terminal

        self._bars = Progress(transient=False)
        self._tasks: dict[str, object] = {}

    def __enter__(self) -> RichProgress:
        self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.stop()

    def page(self, schema: str, *, remaining: int, done: int) -> None:
        """Size the schema's bar: what is done plus what the index still lists."""
        task = self._tasks.get(schema)
        if task is None:
            task = self._tasks[schema] = self._bars.add_task(schema, total=remaining)
        self._bars.update(task, total=done + remaining, completed=done)  # type: ignore[arg-type]

    def advanced(self, schema: str) -> None:
        """One more record."""
        self._bars.advance(self._tasks[schema])  # type: ignore[arg-type]


async def _main(args: argparse.Namespace, progress: ProgressView) -> int:
    settings = RegistrySettings()
    url = args.database_url or settings.database_url
    engine = create_engine(url)
    try:
        try:
            await MIGRATIONS.check(engine)
        except SchemaError as exc:
            log.error("mirror refuses to start: %s", exc)
            return 2
        metrics = MirrorMetrics(CollectorRegistry())
        server = None
        if args.metrics_port is not None:
            server = MetricsServer(metrics.registry, host="0.0.0.0", port=args.metrics_port)
            server.start()
        source = Source(
            args.source,
            rps=args.rps,
            attempts=args.retries,
            backoff=args.backoff,
            timeout=args.timeout,
            on_retry=metrics.retried,
        )
        store = MirrorStore(
            session_factory(engine),
            source=source.base_url,
            topic=lambda base: f"{settings.kafka_topic_prefix}{base}",
            notify=args.notify,
            clock=_now,
        )
        options = Options(
            rows=args.rows,
            notify=args.notify,
            dry_run=args.dry_run,
            rejects=args.rejects,
            schemas=tuple(args.schema or MIRRORED_SCHEMAS),
        )
        mirror = Mirror(source, store, options, metrics, progress=progress, out=sys.stdout)
        try:
            return await _passes(mirror, follow=args.follow, interval=args.interval)
        finally:
            await source.close()
            if server is not None:
                await server.stop()
    finally:
        await engine.dispose()


async def _passes(mirror: Mirror, *, follow: bool, interval: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    while True:
        # A signal ends a pass at once: the record being written rolls back, the ones
        # before it are committed, and the next run resumes after them.
        task = asyncio.create_task(mirror.run_once())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.info("mirror stopped during a pass; the next run resumes from the cursor")
            return 0
        ok = _log_pass(task)
        if not follow:
            return 0 if ok else 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return 0


def _log_pass(task: asyncio.Task[Report]) -> bool:
    """Log how a finished pass went; False when it failed."""
    exc = task.exception()
    if isinstance(exc, SourceError):
        log.error("mirror pass failed, the next one resumes from the cursor: %s", exc)
        return False
    if exc is not None:  # the database may be away: a following mirror tries again
        log.error("mirror pass failed, the next one resumes from the cursor", exc_info=exc)
        return False
    report = task.result()
    log.info(
        "mirror pass done: %d records mirrored (%d revisions), %d unchanged, "
        "%d rejected, %d requests in %.1f s",
        report.mirrored,
        report.revisions,
        report.unchanged,
        report.rejected,
        report.requests,
        report.seconds,
        extra={
            "mirrored": report.mirrored,
            "revisions": report.revisions,
            "unchanged": report.unchanged,
            "rejected": report.rejected,
            "requests": report.requests,
            "seconds": round(report.seconds, 3),
        },
    )
    return True


def _now() -> datetime:
    return datetime.now(UTC)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and mirror."""
    args = parser().parse_args(argv)
    terminal = sys.stderr.isatty() and not args.no_progress
    configure_logging("registry-mirror", fmt="text" if terminal else "json")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request is noise
    if not terminal:
        return asyncio.run(_main(args, LogProgress()))
    with RichProgress() as bars:
        return asyncio.run(_main(args, bars))


if __name__ == "__main__":
    sys.exit(main())
