"""The throughput targets (issue 15), each with its measured value and pass or fail.

Every figure comes from the benchmarks of the same run; a target whose benchmark did not
run (``--only``) or failed is listed as "not measured", never as passed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.common import Outcome, Table

MB = 1_000_000
# The notifier's default SMTP pool (NOTIFIER_SMTP_CONNECTIONS), which the pipeline runs with.
SMTP_CONNECTIONS = 4


@dataclass(frozen=True)
class Target:
    number: int
    what: str
    bound: str
    value: float | None
    ok: Callable[[float], bool]
    source: str

    def verdict(self) -> str:
        if self.value is None:
            return "not measured"
        return "pass" if self.ok(self.value) else "FAIL"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}".removesuffix(".0")


def _at_least(limit: float) -> Callable[[float], bool]:
    return lambda v: v >= limit


def _at_most(limit: float) -> Callable[[float], bool]:
    return lambda v: v <= limit


def _level(pipe: dict[str, Any], share: float) -> dict[str, Any] | None:
    return next((lv for lv in pipe.get("levels", []) if lv["share"] == share), None)


def _data(outcomes: dict[str, Outcome], name: str) -> dict[str, Any]:
    o = outcomes.get(name)
    return o.data if o is not None and not o.error else {}


def _cpu_ms_per_cpc(phase: dict[str, Any], services: list[str]) -> float | None:
    wall = (phase.get("metrics") or {}).get("wall_s") or 0
    n = phase.get("accepted") or 0
    if not wall or not n:
        return None
    pct = [(phase["cpu"].get(s) or {}).get("cpu_pct") for s in services]
    if any(p is None for p in pct):
        return None
    return float(sum(10 * p * wall / n for p in pct if p is not None))


def measure(outcomes: dict[str, Outcome], pipe: dict[str, Any] | None) -> list[Target]:
    pipe = pipe or {}
    notifier = _data(outcomes, "notifier")
    monitor = _data(outcomes, "monitor")
    intake = _data(outcomes, "intake")
    registry = _data(outcomes, "registry")
    services = ["registry", "checkpoint", "notifier", "monitor"]
    out: list[Target] = []

    smtp = notifier.get(f"send_{SMTP_CONNECTIONS}conn_per_s")
    per_cpc = pipe.get("mails_per_cpc")
    rate = (pipe.get("calibration") or {}).get("rate")
    bound = smtp / per_cpc if smtp and per_cpc else None
    out.append(
        Target(
            1,
            f"pipeline max CPC/s ({_num(rate)}) / SMTP-bound limit ({_num(bound)}: prebuilt "
            f"mails/s over {SMTP_CONNECTIONS} connections / {_num(per_cpc)} mails per CPC)",
            ">= 0.8",
            rate / bound if rate and bound else None,
            _at_least(0.8),
            "pipeline, notifier",
        )
    )
    calib = pipe.get("calibration")
    out.append(
        Target(
            2,
            "CPU ms per CPC, four services summed, max-rate loop",
            "<= 20",
            _cpu_ms_per_cpc(calib, services) if calib else None,
            _at_most(20),
            "pipeline",
        )
    )
    half, quarter = _level(pipe, 0.5), _level(pipe, 0.25)
    for what, level, key, limit in (
        ("CPC -> last mail p99 ms at 50% load", half, "mail_p99_ms", 1000.0),
        ("CPC -> verdict p99 ms at 50% load", half, "verdict_p99_ms", 300.0),
        ("CPC -> last mail p50 ms at 25% load", quarter, "mail_p50_ms", 250.0),
    ):
        out.append(
            Target(
                3,
                what,
                f"<= {limit:.0f}",
                level.get(key) if level else None,
                _at_most(limit),
                "pipeline",
            )
        )
    for db in ("SQLite", "PostgreSQL"):
        r = monitor.get(db) or {}
        out.append(
            Target(
                4,
                f"monitor CPC events/s per worker, {db}",
                ">= 1000",
                r.get("per_s"),
                _at_least(1000),
                "monitor",
            )
        )
    out.append(
        Target(
            5,
            f"notifier DeliveryWorker send rate / raw aiosmtplib, {SMTP_CONNECTIONS} connections",
            ">= 0.8",
            notifier.get(f"worker_vs_raw_{SMTP_CONNECTIONS}conn"),
            _at_least(0.8),
            "notifier",
        )
    )
    ratios = {label: value for label, value in intake.get("ratios", [])}
    for conns in (1, 16):
        out.append(
            Target(
                6,
                f"intake checkpoint / bare FastAPI req/s, {conns} connection(s)",
                ">= 0.5",
                ratios.get(f"intake checkpoint / bare req/s, {conns} conns"),
                _at_least(0.5),
                "intake",
            )
        )
    out.append(
        Target(
            7,
            f"registry: seconds to publish 10,000 IRCCs ({_num(registry.get('per_s'))} "
            f"records/s over {_num(registry.get('n'))} records)",
            "< 120",
            registry.get("seconds_for_10k"),
            lambda v: v < 120,
            "registry",
        )
    )
    peaks: dict[str, float] = {}
    for phase in [pipe.get("calibration") or {}, *pipe.get("levels", [])]:
        for name, cell in (phase.get("cpu") or {}).items():
            if name in services and cell.get("rss_max"):
                peaks[name] = max(peaks.get(name, 0.0), cell["rss_max"] / MB)
    if registry.get("rss_max"):
        peaks["registry"] = max(peaks.get("registry", 0.0), registry["rss_max"] / MB)
    for name in services:
        out.append(
            Target(
                8,
                f"peak RSS MB (10^6 bytes), {name}",
                "< 150",
                peaks.get(name),
                _at_most(150),
                "pipeline, registry",
            )
        )
    analytics = _data(outcomes, "analytics")
    out.append(
        Target(
            17,
            "analytics CPC events/s per worker / bare faust pass-through (issue 17)",
            ">= 0.5",
            analytics.get("ratio"),
            _at_least(0.5),
            "analytics",
        )
    )
    return out


def table(targets: list[Target]) -> Table:
    t = Table(
        "summary: targets (issue 15, and issue 17's analytics)",
        ["#", "target", "bound", "measured", "verdict", "from"],
    )
    for tg in targets:
        t.add(tg.number, tg.what, tg.bound, tg.value, tg.verdict(), tg.source)
    passed = sum(tg.verdict() == "pass" for tg in targets)
    failed = sum(tg.verdict() == "FAIL" for tg in targets)
    t.notes.append(
        f"{passed} pass, {failed} fail, {len(targets) - passed - failed} not measured in this run"
    )
    return t
