"""One mirroring pass over a source: page each schema's index after its cursor, fetch
what is new, map it, store it with its events (or, in a dry run, say what would change).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.registry.mirror.source import Gone, IndexEntry, Source, SourceError, parse_entry
from services.registry.mirror.store import (
    MIRRORED_SCHEMAS,
    MirrorStore,
    Rejected,
    Revision,
    event_type,
    map_revision,
)

log = logging.getLogger(__name__)


class MirrorMetrics:
    """Series of the mirror process (``registry_mirror_*``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.records = Counter(
            "registry_mirror_records_total",
            "Index records handled, by schema and outcome (mirrored, unchanged, rejected)",
            ["schema", "outcome"],
            registry=registry,
        )
        self.revisions = Counter(
            "registry_mirror_revisions_total",
            "Revisions stored with their events, by schema",
            ["schema"],
            registry=registry,
        )
        self.errors = Counter(
            "registry_mirror_errors_total",
            "Request retries (429, 5xx, timeout, connection) and failed passes (pass)",
            ["kind"],
            registry=registry,
        )
        self.lag = Gauge(
            "registry_mirror_lag_seconds",
            "Age of the oldest source update not mirrored yet (0 when caught up), by schema",
            ["schema"],
            registry=registry,
        )
        self.pending = Gauge(
            "registry_mirror_pending_records",
            "Records the source's index lists after the cursor, by schema",
            ["schema"],
            registry=registry,
        )

    def retried(self, kind: str) -> None:
        """Count a request retry (the source client's ``on_retry``)."""
        self.errors.labels(kind).inc()


class ProgressView(Protocol):
    """Where a pass reports its progress: a bar on a terminal, log lines otherwise."""

    def page(self, schema: str, *, remaining: int, done: int) -> None:
        """A page of ``schema`` was read: ``remaining`` after the cursor, ``done`` taken."""

    def advanced(self, schema: str) -> None:
        """One more record of ``schema`` handled."""


class LogProgress:
    """Progress as structured log lines, one per page."""

    def page(self, schema: str, *, remaining: int, done: int) -> None:
        """Log the page."""
        log.info(
            "mirror page",
            extra={"schema": schema, "remaining": remaining, "done": done},
        )

    def advanced(self, schema: str) -> None:
        """Nothing per record (the page line says it)."""


@dataclass(frozen=True)
class Options:
    """What a pass does, from the command line."""

    rows: int = 100
    notify: bool = False
    dry_run: bool = False
    rejects: Path | None = None
    schemas: tuple[str, ...] = MIRRORED_SCHEMAS


@dataclass
class Report:
    """What a pass did."""

    mirrored: int = 0
    revisions: int = 0
    unchanged: int = 0
    rejected: int = 0
    requests: int = 0
    seconds: float = 0.0
    changes: list[str] = field(default_factory=list)  # "<uid> <event type>", in order


def _age(updated: str, now: datetime) -> float:
    try:
        at = datetime.fromisoformat(updated.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max(0.0, (now - at).total_seconds())


class Mirror:
    """Mirrors one source into one registry database."""

    def __init__(
        self,
        source: Source,
        store: MirrorStore,
        options: Options,
        metrics: MirrorMetrics,
        *,
        progress: ProgressView | None = None,
        out: TextIO | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._source = source
        self._store = store
        self._options = options
        self._metrics = metrics
        self._progress = progress or LogProgress()
        self._out = out
        self._clock = clock

    async def run_once(self) -> Report:
        """One pass over every schema; raises ``SourceError`` when the source fails for
        good (what was stored stays, and the next pass resumes from the cursor)."""
        report = Report()
        started, requests = time.monotonic(), self._source.requests
        try:
            for schema in self._options.schemas:
                await self._schema(schema, report)
        except Exception:
            self._metrics.errors.labels("pass").inc()
            raise
        finally:
            report.requests = self._source.requests - requests
            report.seconds = time.monotonic() - started
        return report

    async def _schema(self, schema: str, report: Report) -> None:
        updated, last_id = await self._store.cursor(schema)
        done = 0
        while True:
            page = await self._source.select(
                schema, updated=updated, last_id=last_id, rows=self._options.rows
            )
            self._metrics.pending.labels(schema).set(page.found)
            first = page.docs[0].get("updatedDate_dt") if page.docs else None
            self._metrics.lag.labels(schema).set(_age(str(first), self._clock()) if first else 0)
            self._progress.page(schema, remaining=page.found, done=done)
            passed = 0  # records handled since the cursor was last written
            for doc in page.docs:
                position = (doc.get("updatedDate_dt"), doc.get("id"))
                if not all(isinstance(p, str) and p for p in position):
                    raise SourceError(f"{schema}: an index document lacks id or updatedDate_dt")
                updated, last_id = str(position[0]), str(position[1])
                if await self._record(schema, doc, report, passed=passed):
                    passed = 0
                else:
                    passed += 1
                done += 1
                self._progress.advanced(schema)
            if passed and not self._options.dry_run:
                assert updated is not None
                assert last_id is not None
                await self._store.skip(schema, updated, last_id, records=passed)
            if len(page.docs) < self._options.rows:
                return

    async def _record(
        self, schema: str, doc: dict[str, Any], report: Report, *, passed: int
    ) -> bool:
        """Handle one index document; True when its write moved the cursor."""
        try:
            entry = parse_entry(doc)
            if entry.schema != schema:
                raise Rejected(f"listed under {schema} but is a {entry.schema}")
            held = await self._store.local_revision(entry)
            if held >= entry.revision:
                report.unchanged += 1
                self._metrics.records.labels(schema, "unchanged").inc()
                return False
            revisions = await self._fetch(entry, held)
        except (Rejected, Gone) as exc:
            self._reject(schema, doc, str(exc))
            report.rejected += 1
            return False
        changes = [
            f"{entry.uid.rsplit('-', 1)[0]}-{r.number} {event_type(schema, r.number, r.body)}"
            for r in revisions
        ]
        report.changes += changes
        if self._options.dry_run:
            if self._out is not None:
                self._out.writelines(f"would publish {c}\n" for c in changes)
            return False
        await self._store.apply(entry, revisions, passed=passed)
        report.mirrored += 1
        report.revisions += len(revisions)
        self._metrics.records.labels(schema, "mirrored").inc()
        self._metrics.revisions.labels(schema).inc(len(revisions))
        return True

    async def _fetch(self, entry: IndexEntry, held: int) -> list[Revision]:
        """The revisions after ``held`` up to the index's: one body, or the versions."""
        wanted = range(held + 1, entry.revision + 1)
        if len(wanted) == 1:
            bodies = {entry.revision: await self._source.document(entry.identifier, entry.revision)}
        else:
            bodies = {}
            for item in await self._source.versions(entry.identifier):
                number, body = item.get("revision"), item.get("body")
                if isinstance(number, int) and isinstance(body, dict):
                    bodies[number] = body
        lacking = [n for n in wanted if n not in bodies]
        if lacking:
            raise Rejected(f"the source's versions lack revision(s) {lacking}")
        return [map_revision(entry, n, bodies[n]) for n in wanted]

    def _reject(self, schema: str, doc: dict[str, Any], reason: str) -> None:
        self._metrics.records.labels(schema, "rejected").inc()
        log.warning("mirror rejected %s %s: %s", schema, doc.get("identifier_s"), reason)
        if self._options.rejects is None or self._options.dry_run:
            return
        line = {
            "time": self._clock().isoformat(),
            "source": self._store.source,
            "schema": schema,
            "identifier": doc.get("identifier_s"),
            "uid": doc.get("uniqueIdentifier_s"),
            "id": doc.get("id"),
            "reason": reason,
        }
        with self._options.rejects.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
