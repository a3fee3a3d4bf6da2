"""The source clearing-house's public read API, asked politely (DOMAIN.md §7).

Every request waits its turn under a requests-per-second limit; 429, 5xx, timeouts and
broken connections are retried with exponential backoff (a ``Retry-After`` is honoured,
up to the backoff's cap), each attempt counted against the limit like any request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shared.uid import UidError, format_uid, parse_solr_id, parse_uid

log = logging.getLogger(__name__)

SELECT_PATH = "/api/v2013/index/select"
DOCUMENTS_PATH = "/api/v2013/documents"
# What a page needs of each index document ([C6], [C8], DOMAIN.md §7 "useful Solr fields").
FIELDS = "id,identifier_s,schema_s,government_s,uniqueIdentifier_s,updatedDate_dt,_revision_i"


class SourceError(Exception):
    """The source answered something the mirror cannot use (after retries, if transient)."""


class Gone(SourceError):
    """The source no longer has a record its index named (404)."""


class Transient(SourceError):
    """A 429 or 5xx answer: worth another attempt."""

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class IndexEntry:
    """One published record as the source's index lists it (its latest revision)."""

    solr_id: str
    identifier: str
    schema: str
    government: str | None
    document_id: int
    revision: int
    updated: str  # updatedDate_dt as the index writes it: the cursor compares this text

    @property
    def uid(self) -> str:
        """The canonical UID of the latest revision."""
        return format_uid(self.schema, self.government, self.document_id, self.revision)


def parse_entry(doc: dict[str, Any]) -> IndexEntry:
    """An index document, or ``SourceError`` naming what is missing or malformed."""
    try:
        solr_id = str(doc["id"])
        uid = parse_uid(str(doc["uniqueIdentifier_s"]))
        schema = str(doc["schema_s"])
        identifier = str(doc["identifier_s"])
        updated = str(doc["updatedDate_dt"])
    except KeyError as exc:
        raise SourceError(f"index document lacks {exc.args[0]}") from None
    except UidError as exc:
        raise SourceError(f"uniqueIdentifier_s: {exc}") from None
    if uid.revision is None:
        raise SourceError("uniqueIdentifier_s has no revision")
    try:
        from_id = parse_solr_id(solr_id)
    except UidError:
        from_id = uid.document_id  # a reference record's id does not encode it [C8]
    if from_id != uid.document_id:
        raise SourceError(f"id {solr_id} names documentID {from_id}, not {uid.document_id}")
    # The UID's government is authoritative where the index disagrees (sample 11's note).
    government = None if uid.government == "SCBD" else uid.government.lower()
    return IndexEntry(
        solr_id, identifier, schema, government, uid.document_id, uid.revision, updated
    )


@dataclass(frozen=True)
class Page:
    """A page of the index after a cursor: how many remain (``found``) and the first ones."""

    found: int
    docs: list[dict[str, Any]]


def cursor_filter(updated: str | None, last_id: str | None) -> str | None:
    """Solr filter for the records after a cursor, in (update time, id) order."""
    if updated is None:
        return None
    after = f'updatedDate_dt:{{"{updated}" TO *]'
    return f'{after} OR (updatedDate_dt:"{updated}" AND id:{{"{last_id or ""}" TO *])'


class RateLimiter:
    """At most ``rps`` request starts per second, spaced evenly."""

    def __init__(self, rps: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / rps if rps > 0 else 0.0
        self._clock = clock
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def turn(self) -> None:
        """Wait until the next request may start."""
        async with self._lock:
            now = self._clock()
            wait = self._next - now
            if wait > 0:
                await asyncio.sleep(wait)
            self._next = max(now, self._next) + self._interval


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, Transient | httpx.TimeoutException | httpx.TransportError)


class Source:
    """An HTTP client of one clearing-house (``base_url``, e.g. ``https://api.cbd.int``)."""

    def __init__(
        self,
        base_url: str,
        *,
        rps: float = 4.0,
        attempts: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float = 30.0,
        realm: str = "ABS",
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._limiter = RateLimiter(rps)
        self._attempts = attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._realm = realm
        self._on_retry = on_retry
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            headers={"Realm": realm, "Accept": "application/json"},
            follow_redirects=True,
        )
        self.requests = 0

    async def close(self) -> None:
        """Close the connections."""
        await self._client.aclose()

    async def select(
        self, schema: str, *, updated: str | None, last_id: str | None, rows: int
    ) -> Page:
        """The first ``rows`` published records of ``schema`` after the cursor, oldest first.

        Keyset paging: each page starts after the last record taken, so a record updated
        while the mirror pages moves to the end instead of shifting the pages under it."""
        params: dict[str, Any] = {
            "q": f"realm_ss:{self._realm.lower()} AND schema_s:{schema} AND NOT version_s:*",
            "sort": "updatedDate_dt asc, id asc",
            "fl": FIELDS,
            "start": 0,
            "rows": rows,
            "wt": "json",
        }
        fq = cursor_filter(updated, last_id)
        if fq is not None:
            params["fq"] = fq
        answer = await self._get_json(SELECT_PATH, params)
        try:
            response = answer["response"]
            return Page(int(response["numFound"]), list(response["docs"]))
        except (KeyError, TypeError, ValueError):
            raise SourceError("index answer lacks response.numFound/docs") from None

    async def document(self, identifier: str, revision: int) -> dict[str, Any]:
        """The body of one revision (``identifier@revision``)."""
        body = await self._get_json(f"{DOCUMENTS_PATH}/{identifier}@{revision}", {})
        if not isinstance(body, dict):
            raise SourceError(f"{identifier}@{revision}: the body is not a JSON object")
        return body

    async def versions(self, identifier: str) -> list[dict[str, Any]]:
        """Every published revision with its body: ``Items`` of ``…/versions?body=true``."""
        answer = await self._get_json(f"{DOCUMENTS_PATH}/{identifier}/versions", {"body": "true"})
        items = answer.get("Items") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise SourceError(f"{identifier}: the versions answer has no Items list")
        return [i for i in items if isinstance(i, dict)]

    async def _get_json(self, path: str, params: dict[str, Any]) -> Any:
        retrying = AsyncRetrying(
            retry=retry_if_exception(_transient),
            wait=self._wait,
            stop=stop_after_attempt(self._attempts),
            before_sleep=self._note_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._get_once(path, params)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _get_once(self, path: str, params: dict[str, Any]) -> Any:
        await self._limiter.turn()
        self.requests += 1
        resp = await self._client.get(path, params=params)
        if resp.status_code == 429 or resp.status_code >= 500:
            raise Transient(
                f"{path}: {resp.status_code}",
                status=resp.status_code,
                retry_after=_retry_after(resp.headers),
            )
        if resp.status_code == 404:
            raise Gone(f"{path}: 404")
        if resp.status_code != 200:
            raise SourceError(f"{path}: {resp.status_code} {resp.text[:200]}")
        try:
            return resp.json()
        except ValueError:
            raise SourceError(f"{path}: the answer is not JSON") from None

    def _wait(self, state: RetryCallState) -> float:
        exponential = wait_exponential_jitter(initial=self._backoff, max=self._max_backoff)
        delay = float(exponential(state))
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, Transient) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, self._max_backoff))
        return delay

    def _note_retry(self, state: RetryCallState) -> None:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        log.warning("source request retried (attempt %d): %r", state.attempt_number, exc)
        if self._on_retry is not None:
            self._on_retry(retry_kind(exc))


def retry_kind(exc: BaseException | None) -> str:
    """A bounded label for why a request was retried."""
    if isinstance(exc, Transient):
        return "429" if exc.status == 429 else "5xx"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    return "connection"


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the exponential backoff decides
