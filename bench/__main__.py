"""``python -m bench [--quick] [--only NAME[,NAME]] [--no-profile] [--loadgen wrk|httpx]``.

Runs the benchmarks in order, prints one table (or a few) per benchmark and a summary of
ratios, and writes everything to ``var/bench/results.json``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from bench import (
    b_analytics,
    b_intake,
    b_monitor,
    b_notifier,
    b_pipeline,
    b_raw,
    b_registry,
    b_rss,
    b_rules,
    b_state,
    targets,
)
from bench.common import VAR, LoadMeter, Outcome, Table, load_note, out, progress, write_json
from bench.session import Session

Bench = Callable[[Session], Awaitable[Outcome]]
# Benchmarks that measure as soon as they start; pipeline, intake and registry wait before
# each of their own phases, rss reuses the pipeline's samples and state measures a database.
GATED = {"raw", "rules", "notifier", "analytics"}
# Order matters: pipeline before rss (reuses its samples) and before intake (which stops
# the notifier and the monitor of the shared stack).
BENCHMARKS: dict[str, tuple[Bench, str]] = {
    "raw": (b_raw.run, "aiokafka produce -> consume round trip, 1 KB JSON"),
    "rules": (b_rules.run, "monitor rule evaluation (pure, one core)"),
    "notifier": (b_notifier.run, "SmtpMailer -> SmtpSink over one connection"),
    "monitor": (b_monitor.run, "monitor worker: CPC events/s per batch transaction (SQLite, PG)"),
    "state": (b_state.run, "monitor_irccs table with 1,000,000 IRCCs (SQLite, PostgreSQL)"),
    "pipeline": (b_pipeline.run, "HTTP CPC -> verdict + mails, max rate and 25/50/100% levels"),
    "rss": (b_rss.run, "RSS of each service and the broker, idle and under load"),
    "intake": (b_intake.run, "POST /v1/communiques vs a bare FastAPI endpoint"),
    "registry": (b_registry.run, "10,000 IRCCs saved and published through the registry API"),
    "analytics": (b_analytics.run, "utilization analytics worker vs a bare faust pass-through"),
}


def summary(outcomes: dict[str, Outcome], session: Session) -> Table:
    t = Table("summary: ratios", ["ratio", "value", "from"])
    raw = session.raw or {}
    pipe = session.pipeline or {}
    if raw:
        t.add("raw end-to-end msg/s", raw.get("e2e_rate"), "raw")
        t.add("raw produce msg/s", raw.get("produce_rate"), "raw")
    if pipe:
        calib = pipe["calibration"]
        t.add("pipeline max sustainable CPC/s", calib["rate"], "pipeline")
        if raw.get("e2e_rate"):
            t.add("pipeline CPC/s / raw msg/s", calib["rate"] / raw["e2e_rate"], "pipeline, raw")
        full = [lv for lv in pipe["levels"] if lv["share"] == 1.0]
        if full:
            lv = full[0]
            t.add(
                "pipeline at 100%: sustained / offered",
                (lv.get("sustained_rate") or 0) / lv["offered"],
                "pipeline",
            )
            t.add("pipeline at 100%: mail p50 s", (lv["mail_p50_ms"] or 0) / 1000, "pipeline")
        traffic = pipe.get("traffic") or {}
        if traffic.get("cpcs"):
            n = traffic["cpcs"]
            t.add("Kafka messages per CPC", sum(traffic["messages"].values()) / n, "pipeline")
            t.add("Kafka bytes per CPC", sum(traffic["bytes"].values()) / n, "pipeline")
    notifier = outcomes.get("notifier")
    if notifier and notifier.data and notifier.data.get("pool_vs_raw_4conn"):
        t.add(
            "notifier: mail_bytes + pool / raw send, 4 connections (no database)",
            notifier.data["pool_vs_raw_4conn"],
            "notifier",
        )
    if notifier and notifier.data and notifier.data.get("worker_vs_raw_4conn"):
        t.add(
            "notifier: DeliveryWorker / raw send, 4 connections (target >= 0.8)",
            notifier.data["worker_vs_raw_4conn"],
            "notifier",
        )
    intake = outcomes.get("intake")
    if intake and intake.data:
        for row in intake.data.get("ratios", []):
            t.add(row[0], row[1], "intake")
    rules = outcomes.get("rules")
    if rules and rules.data:
        ev = rules.data.get("evaluate_per_s")
        if ev:
            t.add("evaluate() CPCs/s on one core", ev, "rules")
            if pipe:
                t.add(
                    "pipeline CPC/s / evaluate() CPC/s",
                    pipe["calibration"]["rate"] / ev,
                    "pipeline, rules",
                )
    note = outcomes.get("notifier")
    if note and note.data:
        t.add("SmtpMailer mails/s (prebuilt message)", note.data.get("send_per_s"), "notifier")
        if pipe and note.data.get("send_per_s"):
            per = pipe.get("mails_per_cpc") or 0
            if per:
                t.add(
                    "pipeline mails/s / SmtpMailer mails/s",
                    pipe["calibration"]["rate"] * per / note.data["send_per_s"],
                    "pipeline, notifier",
                )
    for name, outcome in outcomes.items():
        load = outcome.data.get("load") or {}
        t.add(f"CPU of other processes during {name}, % of one core", load.get("other_pct"), name)
    state = outcomes.get("state")
    if state and state.data:
        t.add("IRCC state JSON bytes (mix)", state.data.get("mix_json_bytes"), "state")
        for db, r in (state.data.get("built") or {}).items():
            t.add(f"{r['n']:,} IRCC states on disk, {db}, GiB", r["size"]["total"] / 2**30, "state")
    return t


async def main_async(args: argparse.Namespace) -> int:
    names = list(BENCHMARKS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        out(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        return 2
    names = [n for n in BENCHMARKS if n in names]  # canonical order
    env_overrides = dict(kv.split("=", 1) for kv in args.env)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    session = Session(
        quick=args.quick,
        profile=args.profile or not (args.no_profile or args.quick),
        loadgen=args.loadgen,
        env_overrides=env_overrides,
        state=VAR / f"run-{stamp}",
    )
    progress(
        f"{'quick' if args.quick else 'full'} run of {', '.join(names)}; state in {session.state}"
    )
    outcomes: dict[str, Outcome] = {}
    results: dict[str, Any] = {
        "started": stamp,
        "mode": "quick" if args.quick else "full",
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "env_overrides": env_overrides,
        "benchmarks": {},
    }
    t_all = time.monotonic()
    try:
        for name in names:
            fn, what = BENCHMARKS[name]
            progress(f"== {name}: {what}")
            if name in GATED:
                await session.gate(name)
            t = time.monotonic()
            meter = LoadMeter()
            try:
                outcome = await fn(session)
            except Exception as exc:
                traceback.print_exc()
                outcome = Outcome(name, error=f"{type(exc).__name__}: {exc}")
            outcome.seconds = time.monotonic() - t
            outcome.data["load"] = meter.stop()
            outcomes[name] = outcome
            for table in outcome.tables:
                out("\n" + table.render())
            out(f"\n({name}: {load_note(outcome.data['load'])})")
            if outcome.error:
                out(f"\n### {name}: FAILED: {outcome.error}")
            results["benchmarks"][name] = {
                "seconds": outcome.seconds,
                "error": outcome.error,
                "tables": [tb.to_json() for tb in outcome.tables],
                "data": outcome.data,
            }
            write_json(VAR / "results.json", results)
            progress(f"== {name} done in {outcome.seconds:.1f}s")
    finally:
        session.close()
    s = summary(outcomes, session)
    out("\n" + s.render())
    results["summary"] = s.to_json()
    goals = targets.table(targets.measure(outcomes, session.pipeline))
    out("\n" + goals.render())
    results["targets"] = goals.to_json()
    results["quiet_wait_s"] = session.gate.waited
    results["seconds"] = time.monotonic() - t_all
    write_json(VAR / "results.json", results)
    progress(f"all done in {results['seconds']:.0f}s; results in {VAR / 'results.json'}")
    if not args.keep_state and session.state.exists():
        for db in session.state.glob("*.db*"):
            db.unlink(missing_ok=True)
    return 1 if any(o.error for o in outcomes.values()) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (under ~60 s)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument(
        "--no-profile", action="store_true", help="skip py-spy (default with --quick)"
    )
    parser.add_argument("--profile", action="store_true", help="run py-spy even with --quick")
    parser.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "httpx"],
        default="auto",
        help="intake load generator (auto: wrk when installed, else httpx)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the service processes (repeatable)",
    )
    parser.add_argument(
        "--keep-state", action="store_true", help="keep the services' SQLite files of the run"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, (_, what) in BENCHMARKS.items():
            out(f"{name:10} {what}")
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
