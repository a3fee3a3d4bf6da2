"""A local clearing-house answering like the real read API (DOMAIN.md §7), for the mirror.

- ``GET /api/v2013/index/select``: Solr's ``{response: {numFound, start, docs}}`` for
  ``q=realm_ss:abs AND schema_s:<schema> AND NOT version_s:*``, sorted by update time then
  id, paged with ``start``/``rows``, after a cursor given as the ``fq`` the mirror writes;
  index documents carry the fields of samples 09 and 11 plus those DOMAIN.md §7 lists.
- ``GET /api/v2013/documents/{uid}`` (``identifier``, ``identifier@rev`` or documentID)
  and ``…/versions?body=true`` (``{Count, Items}``).
- Faults on demand: answer a status some number of times, or hold a request until the
  test lets it go; and a hook after each index page (a record changing between pages).

Records come from ``tests/fixtures/absch/`` (their provenance is in each file and the
README there) or from :meth:`ClearingHouse.publish`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from services.registry.context import utc_now
from services.registry.mirror.run import Mirror, MirrorMetrics, Options, Report
from services.registry.mirror.source import Source
from services.registry.mirror.store import MirrorStore
from shared.db import create_engine, session_factory
from shared.uid import format_solr_id, format_uid

FIXTURES = Path(__file__).parents[1] / "fixtures" / "absch"
_SCHEMA = re.compile(r"schema_s:(\w+)")
_CURSOR = re.compile(
    r'updatedDate_dt:\{"(?P<t>[^"]+)" TO \*\] OR '
    r'\(updatedDate_dt:"(?P=t)" AND id:\{"(?P<id>[^"]*)" TO \*\]\)'
)


@dataclass
class SourceRecord:
    """A published record of the source: its revisions, oldest first."""

    schema: str
    document_id: int
    versions: list[dict[str, Any]]
    updated: str

    @property
    def identifier(self) -> str:
        """header.identifier."""
        return str(self.versions[-1]["header"]["identifier"])

    @property
    def government(self) -> str | None:
        """ISO-2 lower case, or None."""
        term = self.versions[-1].get("government")
        return str(term["identifier"]).lower() if isinstance(term, dict) else None

    @property
    def solr_id(self) -> str:
        """The index's id [C8]."""
        return format_solr_id(self.document_id)

    def index_doc(self) -> dict[str, Any]:
        """The index document of the latest revision."""
        uid = format_uid(self.schema, self.government, self.document_id, len(self.versions))
        body = self.versions[-1]
        title = body.get("title") or body.get("name") or {}
        doc: dict[str, Any] = {
            "id": self.solr_id,
            "identifier_s": self.identifier,
            "schema_s": self.schema,
            "schemaType_s": "national",
            "government_s": self.government,
            "realm_ss": ["abs"],
            "uniqueIdentifier_s": uid.lower(),
            "updatedDate_dt": self.updated,
            "_revision_i": len(self.versions),
            "title_s": next(iter(title.values()), "") if isinstance(title, dict) else "",
            "url_ss": [f"https://absch.cbd.int/database/record?documentID={self.document_id}"],
        }
        if "amendmentIntent" in body:
            doc["amendmentIntent_i"] = body["amendmentIntent"]
        return doc


@dataclass
class Fault:
    """Answer ``status`` to the next ``times`` requests whose path contains ``path``; or,
    with ``hold``, keep the first such request waiting until ``release`` is set."""

    path: str
    status: int = 503
    times: int = 1
    retry_after: str | None = None
    hold: bool = False
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


class ClearingHouse:
    """The source's state and its HTTP app."""

    def __init__(self) -> None:
        self.records: dict[str, SourceRecord] = {}
        self.faults: list[Fault] = []
        self.requests: list[str] = []
        self.after_page: Callable[[int], None] | None = None  # called with the page number
        self.pages = 0
        self._clock = datetime(2026, 11, 1, tzinfo=UTC)
        self.app = self._build()

    def load(self, *names: str) -> None:
        """Records from fixture files (all of them when no name is given)."""
        paths = [FIXTURES / n for n in names] or sorted(FIXTURES.glob("*.json"))
        for path in paths:
            data = json.loads(path.read_text(encoding="utf-8"))
            rec = SourceRecord(
                data["schema"], data["documentID"], data["versions"], data["updated"]
            )
            self.records[rec.identifier] = rec

    def tick(self) -> str:
        """A new update time, later than every fixture's."""
        self._clock += timedelta(seconds=1)
        return self._clock.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def publish(self, body: dict[str, Any], *, document_id: int | None = None) -> SourceRecord:
        """Publish ``body`` as a new record (``document_id`` given) or the next revision of
        the record with its header.identifier; its update time moves to now."""
        ident = body["header"]["identifier"]
        rec = self.records.get(ident)
        if rec is None:
            assert document_id is not None, f"{ident} is new: give its documentID"
            rec = self.records[ident] = SourceRecord(body["header"]["schema"], document_id, [], "")
        rec.versions.append(body)
        rec.updated = self.tick()
        return rec

    def fail(
        self, path: str, status: int, *, times: int = 1, retry_after: str | None = None
    ) -> Fault:
        """Answer ``status`` to the next ``times`` requests to ``path``."""
        fault = Fault(path, status, times, retry_after)
        self.faults.append(fault)
        return fault

    def hold(self, path: str) -> Fault:
        """Keep the next request to ``path`` waiting until the fault's ``release`` is set."""
        fault = Fault(path, hold=True)
        self.faults.append(fault)
        return fault

    def _find(self, uid: str) -> tuple[SourceRecord | None, int | None]:
        ident, _, rev = uid.partition("@")
        rec = self.records.get(ident)
        if rec is None and ident.isdigit():
            rec = next((r for r in self.records.values() if r.document_id == int(ident)), None)
        return rec, int(rev) if rev else None

    def _select(self, params: dict[str, str]) -> dict[str, Any]:
        q = params.get("q", "")
        schema = _SCHEMA.search(q)
        found = [
            r
            for r in self.records.values()
            if "realm_ss:abs" in q and (schema is None or r.schema == schema.group(1))
        ]
        found.sort(key=lambda r: (r.updated, r.solr_id))
        fq = params.get("fq")
        if fq:
            cursor = _CURSOR.fullmatch(fq)
            assert cursor is not None, f"the fake index does not parse fq={fq!r}"
            after = (cursor["t"], cursor["id"])
            found = [r for r in found if (r.updated, r.solr_id) > after]
        start, rows = int(params.get("start", 0)), int(params.get("rows", 10))
        docs = [r.index_doc() for r in found[start : start + rows]]
        fields = params.get("fl")
        if fields:
            wanted = set(fields.split(","))
            docs = [{k: v for k, v in d.items() if k in wanted} for d in docs]
        return {"response": {"numFound": len(found), "start": start, "docs": docs}}

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def faults(request: Request, call_next: Any) -> Any:
            path = request.url.path
            self.requests.append(path)
            for fault in self.faults:
                if fault.path in path and fault.times > 0:
                    fault.times -= 1
                    if fault.hold:
                        fault.reached.set()
                        await fault.release.wait()
                        break
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    return JSONResponse({"error": "fault"}, fault.status, headers=headers)
            return await call_next(request)

        @app.get("/api/v2013/index/select")
        async def select(request: Request) -> Any:
            answer = self._select(dict(request.query_params))
            self.pages += 1
            if self.after_page is not None:
                self.after_page(self.pages)
            return answer

        @app.get("/api/v2013/documents/{uid}/versions")
        async def versions(uid: str, body: bool = False) -> Any:
            rec, _ = self._find(uid)
            if rec is None:
                return JSONResponse({"statusCode": 404}, 404)
            items = [
                {
                    "identifier": rec.identifier,
                    "documentID": rec.document_id,
                    "revision": n,
                    "type": rec.schema,
                    "realm": "ABS",
                    **({"body": b} if body else {}),
                }
                for n, b in enumerate(rec.versions, start=1)
            ]
            return {"Count": len(items), "Items": items}

        @app.get("/api/v2013/documents/{uid}")
        async def document(uid: str) -> Any:
            rec, rev = self._find(uid)
            if rec is None or (rev is not None and not 1 <= rev <= len(rec.versions)):
                return JSONResponse({"statusCode": 404}, 404)
            return rec.versions[(rev or len(rec.versions)) - 1]

        return app


# The fixtures' records the tests change (see tests/fixtures/absch/README.md).
M1 = "M1DBBE83-4D6B-E788-4C1D-0773325ABYR"  # sample 01, documentID 207443
CB = "CB51626B-CF45-2AA0-3A24-459669DDCC34"  # sample 02, documentID 207608
CNA = "C84C7E6C-134C-F1B1-9A3B-B7443F135239"  # sample 06 as the CNA they cite
CP = "3E387C20-E70C-997B-EABB-BC4C9A1E142F"  # sample 05 as the checkpoint sample 04 cites


async def run_mirror(
    db: str,
    url: str,
    prefix: str = "",
    *,
    metrics: MirrorMetrics | None = None,
    attempts: int = 4,
    timeout: float = 30.0,
    rps: float = 0,
    **options: Any,
) -> Report:
    """One pass in this process; retries wait milliseconds; no rate limit unless ``rps``."""
    engine = create_engine(db)
    metrics = metrics or MirrorMetrics(CollectorRegistry())
    source = Source(
        url,
        rps=rps,
        attempts=attempts,
        backoff=0.01,
        max_backoff=0.05,
        timeout=timeout,
        on_retry=metrics.retried,
    )
    store = MirrorStore(
        session_factory(engine),
        source=source.base_url,
        topic=lambda base: f"{prefix}{base}",
        notify=bool(options.get("notify")),
        clock=utc_now,
    )
    mirror = Mirror(source, store, Options(**options), metrics)
    try:
        return await mirror.run_once()
    finally:
        await source.close()
        await engine.dispose()


def latest_body(identifier: str, source: ClearingHouse) -> dict[str, Any]:
    """A copy of the latest body of a source record, to change and publish again."""
    body: dict[str, Any] = copy.deepcopy(source.records[identifier].versions[-1])
    return body


def incremental_changes(source: ClearingHouse) -> None:
    """At the source: one amended IRCC, one revoked IRCC and a new CPC citing the latter."""
    amended = latest_body(M1, source) | {
        "amendmentIntent": 0,
        "amendmentDescription": {"en": "Expiry extended"},
        "dateOfExpiry": "2030-01-01",
    }
    source.publish(amended)
    revoked = latest_body(CB, source) | {
        "amendmentIntent": 1,
        "amendmentDescription": {"en": "PIC withdrawn"},
    }
    source.publish(revoked)
    cpc = latest_body("63B9CA56-9D43-E877-2A96-2C95986522D5", source)
    cpc["header"]["identifier"] = "63B9CA56-9D43-E877-2A96-2C95986522D6"
    cpc["title"] = {"en": "Second communiqué"}
    source.publish(cpc, document_id=263002)
