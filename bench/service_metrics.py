"""Scraping the services' own Prometheus series during a load window.

Gauges (pending deliveries, consumer lag, outbox backlog) are sampled every second and
their maximum kept; histograms and counters are read at the start and the end of the
window, so their deltas give per-stage means: time to hand one mail to SMTP, time to handle
one consumed event per topic, time per monitor work item.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx

_LINE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
GAUGES = (
    "notifier_deliveries_pending",
    "absch_consumer_lag_messages",
    "absch_outbox_backlog_events",
)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = _LINE.match(line)
        if not m:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
        try:
            out[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            continue
    return out


def _sum(samples: dict[Any, float], name: str, **want: str) -> float:
    total = 0.0
    for (n, labels), v in samples.items():
        if n != name:
            continue
        d = dict(labels)
        if all(d.get(k) == val for k, val in want.items()):
            total += v
    return total


async def scrape_gauge(url: str, name: str) -> float | None:
    """The sum of one series over its labels, or None when the listener does not answer."""
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            resp = await client.get(url)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    return _sum(parse(resp.text), name)


@dataclass
class Scrape:
    start: dict[str, dict[Any, float]] = field(default_factory=dict)
    end: dict[str, dict[Any, float]] = field(default_factory=dict)
    gauge_max: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))


class MetricsWatcher:
    """Polls the metrics listeners (``urls``: name -> its ``/metrics`` URL) of named services
    every ``interval`` seconds within a window."""

    def __init__(self, urls: dict[str, str], interval: float = 1.0) -> None:
        self.urls = urls
        self.interval = interval
        self._client = httpx.AsyncClient(timeout=5)
        self._task: asyncio.Task[None] | None = None
        self._scrape: Scrape | None = None

    async def _get(self) -> dict[str, dict[Any, float]]:
        out = {}
        for name, url in self.urls.items():
            try:
                resp = await self._client.get(url)
                out[name] = parse(resp.text)
            except httpx.HTTPError:
                out[name] = {}
        return out

    def _gauges(self, snap: dict[str, dict[Any, float]]) -> None:
        assert self._scrape is not None
        for svc, samples in snap.items():
            for g in GAUGES:
                v = _sum(samples, g)
                cur = self._scrape.gauge_max[svc].get(g, 0.0)
                self._scrape.gauge_max[svc][g] = max(cur, v)

    async def open(self) -> None:
        self._scrape = Scrape(start=await self._get())
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self._gauges(await self._get())

    async def close(self) -> dict[str, Any]:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        assert self._scrape is not None
        self._scrape.end = await self._get()
        self._gauges(self._scrape.end)
        return summarise(self._scrape)

    async def aclose(self) -> None:
        await self._client.aclose()


def _delta(s: Scrape, svc: str, name: str, **want: str) -> float:
    return _sum(s.end.get(svc, {}), name, **want) - _sum(s.start.get(svc, {}), name, **want)


def summarise(s: Scrape) -> dict[str, Any]:
    out: dict[str, Any] = {"gauges_max": {k: dict(v) for k, v in s.gauge_max.items()}}
    if "notifier" in s.end:
        n = _delta(s, "notifier", "notifier_send_seconds_count")
        out["notifier_send_ms"] = (
            1000 * _delta(s, "notifier", "notifier_send_seconds_sum") / n if n else None
        )
        out["notifier_mails_sent"] = n
    if "monitor" in s.end:
        n = _delta(s, "monitor", "monitor_check_seconds_count")
        out["monitor_check_ms"] = (
            1000 * _delta(s, "monitor", "monitor_check_seconds_sum") / n if n else None
        )
        out["monitor_items"] = n
    handle: dict[str, dict[str, Any]] = {}
    for svc in s.end:
        topics = {
            dict(lbl).get("topic")
            for (name, lbl) in s.end[svc]
            if name == "absch_event_handle_seconds_count"
        }
        for topic in sorted(t for t in topics if t):
            n = _delta(s, svc, "absch_event_handle_seconds_count", topic=topic)
            if n:
                total = _delta(s, svc, "absch_event_handle_seconds_sum", topic=topic)
                handle[f"{svc} {topic}"] = {"events": n, "mean_ms": 1000 * total / n}
    out["handle"] = handle
    return out
