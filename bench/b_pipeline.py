"""pipeline: CPC over HTTP -> cpc.published -> monitor verdict and notifier mails.

All four services run as separate processes (``bench.stack``). Every CPC cites a revoked
IRCC, so each one yields a ``discrepancy.flagged`` (IRCC_REVOKED) on
``absch.discrepancy.v1`` and mails: ``cpc_published`` to the checkpoint contact, the IRCC's
CNA, the provider NFP and the PIC holder, and ``discrepancy_flagged`` to the provider NFP and
the CNA (the expected count per CPC is measured during warm-up, not assumed).

A CPC is *complete* when its verdict was seen and all its mails reached the sink. Times:
submission = just before the POST (benchmark process), verdict = CreateTime of the
``discrepancy.flagged`` record (monitor's producer), mail = arrival at the sink process.

Phases:
1. warm-up (a few CPCs; learns the mails per CPC), then an idle window for idle RSS/CPU;
2. max sustainable rate: an end-to-end closed loop keeping ``window`` CPCs incomplete at
   any time for ``calibrate`` seconds; rate = completions per second over the last 2/3;
3. open-loop levels at 25%, 50%, 100% of that rate for a fixed duration each, then a drain;
4. Kafka messages and bytes per CPC, per topic, over the levels;
5. optional: py-spy on every service process during another run at 100%.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from bench import profiling
from bench.common import Outcome, ProcSampler, Table, Window, median, mib, ms, pct, progress
from bench.kafka_traffic import topic_traffic
from bench.scenario import MailLog, VerdictReader, World, auth
from bench.service_metrics import MetricsWatcher
from bench.stack import SERVICES, Stack


@dataclass
class Sub:
    t0: float
    t1: float = 0.0
    uid: str | None = None
    status: int = 0


@dataclass
class Plan:
    pool: int
    calibrate_s: float
    window: int
    level_s: float
    drain_s: float
    profile_s: float

    @classmethod
    def for_mode(cls, quick: bool) -> Plan:
        if quick:
            return cls(pool=5, calibrate_s=8, window=30, level_s=3, drain_s=20, profile_s=4)
        return cls(pool=100, calibrate_s=30, window=40, level_s=45, drain_s=60, profile_s=20)


class Tracker:
    """Submissions and their completion, from the mail log and the verdict reader."""

    def __init__(self, mails: MailLog, verdicts: VerdictReader) -> None:
        self.mails = mails
        self.verdicts = verdicts
        self.expected = 0
        self.subs: list[Sub] = []
        self._poller: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._poller = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._poller:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def _poll(self) -> None:
        while True:
            self.mails.poll()
            await asyncio.sleep(0.05)

    def verdict_at(self, uid: str) -> float | None:
        return self.verdicts.verdicts.first.get(uid)

    def mails_at(self, uid: str) -> list[float]:
        return sorted(self.mails.by_subject.get(uid, ()))

    def done_at(self, uid: str | None) -> float | None:
        if uid is None:
            return None
        v = self.verdict_at(uid)
        m = self.mails_at(uid)
        if v is None or len(m) < self.expected:
            return None
        return max(v, m[self.expected - 1])

    async def post(self, client: httpx.AsyncClient, world: World) -> Sub:
        sub = Sub(time.time())
        self.subs.append(sub)
        try:
            resp = await client.post(
                "/v1/communiques", json=world.cpc(), headers=auth(world.operator)
            )
            sub.status = resp.status_code
            if resp.status_code == 201:
                sub.uid = resp.json()["uid"]
        except httpx.HTTPError:
            sub.status = -1
        sub.t1 = time.time()
        return sub

    async def wait_done(self, subs: list[Sub], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.done_at(s.uid) is not None for s in subs if s.uid):
                return True
            await asyncio.sleep(0.1)
        return False


def client_for(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.url("checkpoint"),
        timeout=60,
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
    )


async def warm_up(tracker: Tracker, client: httpx.AsyncClient, world: World) -> int:
    """Submit until the checkpoint is known, then a few CPCs; returns mails per CPC."""
    deadline = time.monotonic() + 60
    while True:
        sub = await tracker.post(client, world)
        if sub.status == 201:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"checkpoint never accepted a CPC (last status {sub.status})")
        await asyncio.sleep(0.3)
    subs = [sub] + [await tracker.post(client, world) for _ in range(4)]
    uids = [s.uid for s in subs if s.uid]
    deadline = time.monotonic() + 60
    stable_since, last = time.monotonic(), -1
    while time.monotonic() < deadline:
        counts = [len(tracker.mails_at(u)) for u in uids]
        verdicts = all(tracker.verdict_at(u) is not None for u in uids)
        if sum(counts) != last:
            stable_since, last = time.monotonic(), sum(counts)
        if verdicts and min(counts) > 0 and time.monotonic() - stable_since > 2:
            break
        await asyncio.sleep(0.1)
    counts = [len(tracker.mails_at(u)) for u in uids]
    if not counts or min(counts) == 0:
        raise RuntimeError(f"warm-up CPCs got no mails: {counts}")
    expected = Counter(counts).most_common(1)[0][0]
    tracker.subs.clear()
    return expected


async def closed_loop(
    tracker: Tracker, client: httpx.AsyncClient, world: World, window: int, seconds: float
) -> tuple[list[Sub], float, float]:
    """Keep ``window`` CPCs incomplete end to end for ``seconds``; returns subs and times."""
    subs: list[Sub] = []
    outstanding: set[str] = set()
    inflight_http = 0
    t_start = time.time()
    t_end = t_start + seconds

    async def worker() -> None:
        nonlocal inflight_http
        while time.time() < t_end:
            if len(outstanding) + inflight_http >= window:
                await asyncio.sleep(0.01)
                continue
            inflight_http += 1
            sub = await tracker.post(client, world)
            inflight_http -= 1
            subs.append(sub)
            if sub.uid:
                outstanding.add(sub.uid)

    async def reaper() -> None:
        while time.time() < t_end:
            for uid in [u for u in outstanding if tracker.done_at(u) is not None]:
                outstanding.discard(uid)
            await asyncio.sleep(0.02)

    await asyncio.gather(*(worker() for _ in range(16)), reaper())
    return subs, t_start, t_end


async def open_loop(
    tracker: Tracker, client: httpx.AsyncClient, world: World, rate: float, seconds: float
) -> list[Sub]:
    """Submit at ``rate`` per second for ``seconds`` regardless of answers (no coordination)."""
    n = max(1, int(rate * seconds))
    t0 = time.monotonic()
    tasks = []
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(tracker.post(client, world)))
    return list(await asyncio.gather(*tasks))


def steady_rate(ends: list[float], t_end: float) -> float:
    """Completions per second over the last 2/3 of the span from the first completion to
    the end of the loop (the first third is the pipeline filling up)."""
    ends = [e for e in ends if e <= t_end]
    if len(ends) < 3:
        return 0.0
    cut = ends[0] + (t_end - ends[0]) / 3
    steady = [e for e in ends if e >= cut]
    return len(steady) / max(t_end - cut, 1e-9)


def analyse(tracker: Tracker, subs: list[Sub]) -> dict[str, Any]:
    ok = [s for s in subs if s.status == 201 and s.uid]
    done = [(s, tracker.done_at(s.uid)) for s in ok]
    complete = [(s, d) for s, d in done if d is not None]
    mail_lat, first_lat, verdict_lat, http_lat = [], [], [], []
    for s in ok:
        assert s.uid is not None
        http_lat.append(s.t1 - s.t0)
        m = tracker.mails_at(s.uid)
        v = tracker.verdict_at(s.uid)
        if len(m) >= tracker.expected:
            mail_lat.append(m[tracker.expected - 1] - s.t0)
        if m:
            first_lat.append(m[0] - s.t0)
        if v is not None:
            verdict_lat.append(v - s.t0)
    out: dict[str, Any] = {
        "submitted": len(subs),
        "accepted": len(ok),
        "errors": len(subs) - len(ok),
        "complete": len(complete),
        "incomplete": len(ok) - len(complete),
        "http_p50_ms": ms(pct(http_lat, 50)),
        "http_p99_ms": ms(pct(http_lat, 99)),
        "mail_p50_ms": ms(pct(mail_lat, 50)),
        "mail_p99_ms": ms(pct(mail_lat, 99)),
        "first_mail_p50_ms": ms(pct(first_lat, 50)),
        "verdict_p50_ms": ms(pct(verdict_lat, 50)),
        "verdict_p99_ms": ms(pct(verdict_lat, 99)),
    }
    if ok:
        t_first, t_last = min(s.t0 for s in ok), max(s.t0 for s in ok)
        out["intake_rate"] = len(ok) / max(max(s.t1 for s in ok) - t_first, 1e-9)
        out["offered_span_s"] = t_last - t_first
    if len(complete) > 1:
        ends = sorted(d for _, d in complete)
        out["sustained_rate"] = (len(ends) - 1) / max(ends[-1] - ends[0], 1e-9)
        out["drain_s"] = ends[-1] - max(s.t0 for s in ok)
    third = max(1, len(ok) // 3)
    early = [
        m[tracker.expected - 1] - s.t0
        for s in ok[:third]
        if s.uid and len(m := tracker.mails_at(s.uid)) >= tracker.expected
    ]
    late = [
        m[tracker.expected - 1] - s.t0
        for s in ok[-third:]
        if s.uid and len(m := tracker.mails_at(s.uid)) >= tracker.expected
    ]
    if early and late:
        out["trend"] = (median(late) or 0) / max(median(early) or 1e-9, 1e-9)
    return out


def _window_cells(w: Window, names: list[str]) -> dict[str, Any]:
    s = w.summary()
    return {n: s.get(n, {}) for n in names}


async def run(session: Any) -> Outcome:
    plan = Plan.for_mode(session.quick)
    if session.raw is None:
        from bench import b_raw

        progress("pipeline: measuring the raw limit first (same run)")
        session.raw = await b_raw.measure(True, runs=1)
    stack = await session.stack_with(list(SERVICES))
    world = await session.world_for(stack, plan.pool)
    mails = MailLog(stack.mail_log)
    verdicts = VerdictReader(stack.bootstrap)
    await verdicts.start()
    tracker = Tracker(mails, verdicts)
    tracker.start()
    sampler = ProcSampler({**stack.pids(), "bench": os.getpid()})
    sampler.start()
    watched = ("checkpoint", "notifier", "monitor")
    watcher = MetricsWatcher({n: stack.metrics_url(n) for n in watched})
    data: dict[str, Any] = {"plan": plan.__dict__}
    names = list(sampler.pids)
    try:
        # Until every setup mail arrived, or none came for 5 s (a mail the notifier never
        # creates must not hold the run up; the count goes into the results).
        deadline, last, quiet_since = time.monotonic() + 120, -1, time.monotonic()
        while mails.total < world.setup_mails_expected and time.monotonic() < deadline:
            if mails.total != last:
                last, quiet_since = mails.total, time.monotonic()
            elif mails.total and time.monotonic() - quiet_since > 5:
                break
            await asyncio.sleep(0.2)
        data["setup_mails"] = [mails.total, world.setup_mails_expected]
        progress(f"pipeline: setup mails delivered: {mails.total}/{world.setup_mails_expected}")
        async with client_for(stack) as client:
            tracker.expected = await warm_up(tracker, client, world)
            progress(f"pipeline: warm-up done, {tracker.expected} mails per CPC")
            pause = 1.0 if session.quick else 2.0
            await asyncio.sleep(pause)
            w = sampler.open()
            await asyncio.sleep(1 if session.quick else 5)
            idle_win = sampler.close(w)
            data["idle"] = _window_cells(idle_win, names)
            data["idle_machine_pct"] = idle_win.machine_pct

            progress(
                f"pipeline: max sustainable rate: end-to-end closed loop, window "
                f"{plan.window} CPCs, {plan.calibrate_s:.0f}s"
            )
            await session.gate("the max-rate loop")
            w = sampler.open()
            await watcher.open()
            subs, _t_start, t_end = await closed_loop(
                tracker, client, world, plan.window, plan.calibrate_s
            )
            calib_win = sampler.close(w)
            calib_metrics = await watcher.close()
            calib_metrics["wall_s"] = calib_win.wall
            await tracker.wait_done(subs, plan.drain_s)
            ends = sorted(d for s in subs if (d := tracker.done_at(s.uid)) is not None)
            rate = steady_rate(ends, t_end)
            calib = analyse(tracker, subs)
            calib["rate"] = rate
            calib["cpu"] = _window_cells(calib_win, names)
            calib["metrics"] = calib_metrics
            calib["machine_cpu_pct"] = calib_win.machine_pct
            data["calibration"] = calib
            if rate <= 0:
                raise RuntimeError("no CPC completed during calibration")
            progress(
                f"pipeline: max sustainable rate ~ {rate:.1f} CPC/s (intake during the "
                f"loop {calib.get('intake_rate', 0):.1f}/s, mail p50 "
                f"{(calib['mail_p50_ms'] or 0) / 1000:.1f}s)"
            )
            await asyncio.sleep(pause)

            levels = []
            t_levels = time.time()
            for share in (0.25, 0.5, 1.0):
                r = rate * share
                await session.gate(f"level {share:.0%}")
                progress(f"pipeline: level {share:.0%} = {r:.1f} CPC/s for {plan.level_s:.0f}s")
                w = sampler.open()
                await watcher.open()
                subs = await open_loop(tracker, client, world, r, plan.level_s)
                win = sampler.close(w)
                level_metrics = await watcher.close()
                level_metrics["wall_s"] = win.wall
                await tracker.wait_done(subs, plan.drain_s)
                level = analyse(tracker, subs)
                level.update(
                    share=share, offered=r, cpu=_window_cells(win, names), metrics=level_metrics
                )
                level["machine_cpu_pct"] = win.machine_pct
                levels.append(level)
                progress(
                    f"pipeline:   sustained {level.get('sustained_rate', 0):.1f}/s, mail p50 "
                    f"{(level['mail_p50_ms'] or 0):.0f} ms p99 {(level['mail_p99_ms'] or 0):.0f}"
                    f" ms, incomplete {level['incomplete']}"
                )
                await asyncio.sleep(pause)
            t_levels_end = time.time()
            data["levels"] = levels
            n_levels = sum(lv["accepted"] for lv in levels)
            progress("pipeline: counting Kafka traffic of the levels")
            traffic = await topic_traffic(
                stack.bootstrap, int(t_levels * 1000), int(t_levels_end * 1000)
            )
            traffic["cpcs"] = n_levels
            data["traffic"] = traffic

            if session.profile and profiling.pyspy():
                pids = {n: p for n, p in stack.pids().items() if n in SERVICES}
                progress(
                    f"pipeline: profiling {', '.join(pids)} with py-spy for "
                    f"{plan.profile_s:.0f}s under the saturating closed loop"
                )
                out = session.state / "profiles"
                load = asyncio.create_task(
                    closed_loop(tracker, client, world, plan.window, plan.profile_s + 3)
                )
                await asyncio.sleep(2)  # let the pipeline fill up first
                files = await profiling.record(pids, plan.profile_s, out)
                subs, _, _ = await load
                await tracker.wait_done(subs, plan.drain_s)
                data["profile"] = {
                    "seconds": plan.profile_s,
                    "rate": 100,
                    "dir": str(out),
                    "summaries": {n: profiling.summarise(f) for n, f in files.items()},
                }
        data["mails_by_template"] = dict(mails.by_template)
        data["verdict_rules"] = dict(verdicts.verdicts.rules)
    finally:
        await watcher.aclose()
        await sampler.stop()
        await tracker.stop()
        await verdicts.stop()
    data["citations_per_ircc"] = len(tracker.subs) / max(plan.pool, 1)
    data["raw_e2e_rate"] = session.raw["e2e_rate"]
    data["mails_per_cpc"] = tracker.expected
    session.pipeline = data
    return Outcome("pipeline", tables(data, tracker.expected), data)


def tables(data: dict[str, Any], per_cpc: int) -> list[Table]:
    raw = data["raw_e2e_rate"]
    calib = data["calibration"]
    t = Table(
        "pipeline: CPC (HTTP) -> cpc.published -> verdict (discrepancy.flagged) + mails "
        "(SMTP sink)",
        [
            "phase",
            "offered/s",
            "intake/s",
            "sustained/s",
            "done/accepted",
            "mail p50 ms",
            "mail p99 ms",
            "verdict p50 ms",
            "verdict p99 ms",
            "HTTP p50 ms",
            "drain s",
            "trend",
            "pipeline/raw",
        ],
    )
    t.add(
        f"max rate: closed loop, window {data['plan']['window']}",
        None,
        calib.get("intake_rate"),
        calib["rate"],
        f"{calib['complete']}/{calib['accepted']}",
        calib["mail_p50_ms"],
        calib["mail_p99_ms"],
        calib["verdict_p50_ms"],
        calib["verdict_p99_ms"],
        calib["http_p50_ms"],
        calib.get("drain_s"),
        calib.get("trend"),
        calib["rate"] / raw if raw else None,
    )
    for lv in data["levels"]:
        t.add(
            f"{lv['share']:.0%} of max, {data['plan']['level_s']:.0f}s open loop",
            lv["offered"],
            lv.get("intake_rate"),
            lv.get("sustained_rate"),
            f"{lv['complete']}/{lv['accepted']}",
            lv["mail_p50_ms"],
            lv["mail_p99_ms"],
            lv["verdict_p50_ms"],
            lv["verdict_p99_ms"],
            lv["http_p50_ms"],
            lv.get("drain_s"),
            lv.get("trend"),
            (lv.get("sustained_rate") or 0) / raw if raw else None,
        )
    t.notes += [
        f"{per_cpc} mails per CPC (measured in warm-up); mail latency = submission -> last of "
        "them at the sink; verdict = submission -> discrepancy.flagged CreateTime",
        "sustained = completed CPCs per second between first and last completion; trend = "
        "median mail latency of the last third / first third of submissions (>1.5: backlog "
        "grows)",
        f"pipeline/raw = sustained CPC/s / raw end-to-end msg/s ({raw:,.0f}) measured in this run",
        f"setup: {data.get('setup_mails', ['?', '?'])[0]} of "
        f"{data.get('setup_mails', ['?', '?'])[1]} expected IRCC mails arrived",
        f"every CPC cites one of {data['plan']['pool']} revoked IRCCs (round robin): about "
        f"{data.get('citations_per_ircc', 0):.0f} CPCs cite each by the end of the run",
    ]
    out = [t]
    names = list(data["idle"])
    c = Table(
        "pipeline: CPU % of one core per process (2 cores = 200%)",
        ["phase", *names, "machine", "other processes"],
    )

    def row(label: str, cells: dict[str, Any], machine: float | None) -> None:
        own = sum(cells[n].get("cpu_pct") or 0 for n in names)
        other = None if machine is None else max(0.0, machine - own)
        c.add(label, *[cells[n].get("cpu_pct") for n in names], machine, other)

    row("idle", data["idle"], data.get("idle_machine_pct"))
    row("max-rate loop", calib["cpu"], calib.get("machine_cpu_pct"))
    for lv in data["levels"]:
        row(f"{lv['share']:.0%} ({lv['offered']:.1f}/s)", lv["cpu"], lv.get("machine_cpu_pct"))
    c.notes.append(
        "bench = this process (load generator, mail-log and verdict readers, samplers); "
        "other processes = machine minus all listed (other sessions' work on this machine)"
    )
    services = [n for n in names if n not in ("bench",)]
    e = Table(
        "pipeline: CPU milliseconds per accepted CPC, per process (load from others barely "
        "changes these)",
        ["phase", *services, "total"],
    )
    phases = [("max-rate loop", calib)] + [
        (f"{lv['share']:.0%} ({lv['offered']:.1f}/s)", lv) for lv in data["levels"]
    ]
    for label, ph in phases:
        wall = (ph.get("metrics") or {}).get("wall_s") or 0
        n = ph.get("accepted") or 0
        cells = [
            10 * (ph["cpu"][p].get("cpu_pct") or 0) * wall / n if n and wall else None
            for p in services
        ]
        e.add(label, *cells, sum(c for c in cells if c is not None))
    e.notes.append("CPU % x window / CPCs accepted in the window (the drain after it excluded)")
    out.append(c)
    out.append(e)
    out.append(stage_table(data))
    traffic = data.get("traffic")
    if traffic and traffic.get("cpcs"):
        n = traffic["cpcs"]
        k = Table(
            f"pipeline: Kafka traffic per CPC during the levels ({n} CPCs)",
            ["topic", "messages/CPC", "bytes/CPC"],
        )
        total_m = total_b = 0
        for topic in sorted(traffic["messages"], key=lambda x: -traffic["bytes"].get(x, 0)):
            m, b = traffic["messages"][topic], traffic["bytes"].get(topic, 0)
            total_m += m
            total_b += b
            k.add(topic, m / n, b / n)
        k.add("total", total_m / n, total_b / n)
        if not traffic.get("complete"):
            k.notes.append("reading stopped at its time limit: figures are lower bounds")
        out.append(k)
    prof = data.get("profile")
    if prof:
        out += profiling.tables(prof["summaries"], prof["seconds"], prof["rate"])
    return out


def stage_table(data: dict[str, Any]) -> Table:
    """Per-stage figures scraped from the services' /metrics during each phase."""
    t = Table(
        "pipeline: per stage, from the services' own /metrics during each phase",
        [
            "phase",
            "mails sent/s",
            "SMTP send ms",
            "pending mails max",
            "notifier cpc.v1 ms",
            "notifier discrepancy.v1 ms",
            "notifier lag max",
            "monitor item ms",
            "monitor lag max",
            "checkpoint outbox max",
            "notifier outbox max",
        ],
    )
    phases = [("max-rate loop", data["calibration"])]
    phases += [(f"{lv['share']:.0%}", lv) for lv in data["levels"]]
    for label, ph in phases:
        m = ph.get("metrics") or {}
        g = m.get("gauges_max", {})
        h = m.get("handle", {})
        wall = m.get("wall_s") or 0
        t.add(
            label,
            (m.get("notifier_mails_sent") or 0) / wall if wall else None,
            m.get("notifier_send_ms"),
            g.get("notifier", {}).get("notifier_deliveries_pending"),
            (h.get("notifier absch.cpc.v1") or {}).get("mean_ms"),
            (h.get("notifier absch.discrepancy.v1") or {}).get("mean_ms"),
            g.get("notifier", {}).get("absch_consumer_lag_messages"),
            m.get("monitor_check_ms"),
            g.get("monitor", {}).get("absch_consumer_lag_messages"),
            g.get("checkpoint", {}).get("absch_outbox_backlog_events"),
            g.get("notifier", {}).get("absch_outbox_backlog_events"),
        )
    t.notes += [
        "SMTP send ms = notifier_send_seconds mean (one mail handed to the sink); notifier "
        "<topic> ms = absch_event_handle_seconds mean (consume -> deliveries committed); "
        "monitor item ms = monitor_check_seconds mean; maxima of gauges sampled every second",
        "a growing 'pending mails' with a flat consumer lag means the delivery worker (one "
        "mail at a time) is the stage that limits",
    ]
    return t


def rss_table(data: dict[str, Any]) -> Table:
    """RSS per process: idle, and peak under each load level (from the pipeline run)."""
    names = list(data["idle"])
    t = Table(
        "rss: VmRSS per process (MiB), idle and peak under load",
        [
            "process",
            "idle",
            "max-rate loop (peak)",
            *[f"{lv['share']:.0%} load (peak)" for lv in data["levels"]],
        ],
    )
    for n in names:
        t.add(
            n,
            mib(data["idle"][n].get("rss_last")),
            mib(data["calibration"]["cpu"][n].get("rss_max")),
            *[mib(lv["cpu"][n].get("rss_max")) for lv in data["levels"]],
        )
    t.notes.append(
        "sampled from /proc/<pid>/status every 0.5 s; the broker keeps every message in "
        "memory (memory storage, no compaction), so its RSS grows with the run's traffic"
    )
    return t
