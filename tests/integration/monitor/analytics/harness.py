"""What the analytics tests share: workers of an app id of their own, their counts, the
alerts as the notifier would see them, and tokens the monitor's API accepts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.monitor.analytics.__main__ import INPUTS
from shared.auth import AUDIENCE, ISSUER
from shared.events import CloudEvent, topic_name
from shared.kafka.admin import ensure_topics
from tests.integration.monitor.analytics.support import (
    AnalyticsWorker,
    Workload,
    expected_reports,
    merged,
)
from tests.support.poll import eventually


@asynccontextmanager
async def workers(
    kafka: str, prefix: str, tmp_path: Path, n: int = 1, store: str = "memory://"
) -> AsyncIterator[list[AnalyticsWorker]]:
    """``n`` workers of one app id of their own; stopped cleanly at the end."""
    await ensure_topics(kafka, [topic_name(t, prefix) for t in INPUTS])
    app_id = f"{prefix}analytics"
    started = [
        AnalyticsWorker(
            kafka=kafka, prefix=prefix, app_id=app_id, log=tmp_path / f"w{i}.log", store=store
        )
        for i in range(n)
    ]
    try:
        for w in started:
            await w.start()
        yield started
    finally:
        for w in started:
            w.stop()


async def counts(ws: list[AnalyticsWorker]) -> dict[str, dict[str, Any]] | None:
    """Merged month counts of every worker, None while one cannot answer."""
    locals_ = [await w.local() for w in ws]
    if any(x is None for x in locals_):
        return None
    return merged([x for x in locals_ if x is not None])


def counted(months: dict[str, dict[str, Any]] | None) -> int:
    """Citations counted so far."""
    return sum(sum(m["cells"].values()) for m in (months or {}).values())


async def until_exact(ws: list[AnalyticsWorker], w: Workload, timeout: float = 90) -> None:
    """Poll until the windowed counts equal the pure recount."""
    expected = w.months()
    last: dict[str, dict[str, Any]] | None = None

    async def exact() -> bool:
        nonlocal last
        last = await counts(ws)
        return last == expected

    try:
        await eventually(exact, timeout=timeout, what="counts equal to the recount")
    except AssertionError as exc:
        # Short (still counting, or lost) and over (counted twice) are different failures.
        got = last or {}
        differ = sorted(k for k in expected.keys() | got.keys() if got.get(k) != expected.get(k))
        raise AssertionError(
            f"{exc}: counted {counted(got)} of {counted(expected)} citations; months that "
            f"differ: {[(k, got.get(k), expected.get(k)) for k in differ[:3]]}"
        ) from None


def distinct(events: list[CloudEvent[Any]], kind: str) -> dict[str, CloudEvent[Any]]:
    """Alerts of one type by event id (the notifier's deduplication)."""
    return {e.id: e for e in events if e.type == kind}


def alerts_complete(w: Workload) -> Callable[[list[CloudEvent[Any]]], bool]:
    pairs, reports = w.pairs(), expected_reports(w)

    def done(events: list[CloudEvent[Any]]) -> bool:
        firsts = distinct(events, "utilization.first_use").values()
        monthly = distinct(events, "utilization.report").values()
        return {(e.data.provider_country, e.data.user_country) for e in firsts} >= pairs and {
            (e.data.provider_country, e.data.month) for e in monthly
        } >= reports

    return done


def check_alerts(events: list[CloudEvent[Any]], w: Workload) -> None:
    """One first-use alert per pair, one report per provider and month, reports exact."""
    firsts = distinct(events, "utilization.first_use").values()
    first_pairs = [(e.data.provider_country, e.data.user_country) for e in firsts]
    assert sorted(first_pairs) == sorted(w.pairs())
    reports = distinct(events, "utilization.report").values()
    keys = [(e.data.provider_country, e.data.month) for e in reports]
    assert sorted(keys) == sorted(expected_reports(w))
    recount = w.months()
    for e in reports:
        month = recount[f"{e.data.provider_country}|{e.data.month}"]
        users: dict[str, int] = {}
        for cell, n in month["cells"].items():
            users[cell.split("|")[0]] = users.get(cell.split("|")[0], 0) + n
        assert e.data.users == users
        assert e.data.citations == sum(users.values())
        assert e.data.discrepancies == month["discrepancies"]
        assert e.data.checkpoints == month["checkpoints"]


KEY = Ed25519PrivateKey.generate()


async def resolve_key(kid: str) -> Any:
    return KEY.public_key() if kid == "test" else None


def token(role: str, gov: str | None = None) -> dict[str, str]:
    """Authorization header of a user with ``role`` (signed by the test's own key)."""
    claims: dict[str, Any] = {"sub": f"u-{role}", "role": role, "aud": AUDIENCE, "iss": ISSUER}
    claims |= {"exp": int(time.time()) + 600, **({"gov": gov} if gov else {})}
    signed = jwt.encode(claims, KEY, algorithm="EdDSA", headers={"kid": "test"})
    return {"Authorization": f"Bearer {signed}"}
