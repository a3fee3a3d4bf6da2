"""A monitor killed while it checks still checks every communiqué once restarted.

Its state and the events it raises are committed together and its input offsets after
them, so the restarted worker neither skips what was published while it was down nor
raises a finding under a second event id.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

from shared.events import topic_name
from tests.support.kafka import TopicReader
from tests.support.monitor import active_findings
from tests.support.processes import ServiceProcess
from tests.support.workload import Workload, build


def _monitor(kafka: str, prefix: str, tmp: Path) -> ServiceProcess:
    proc = ServiceProcess("monitor", {}, tmp / "monitor.log")
    proc.env.update(
        {
            "KAFKA_BOOTSTRAP": kafka,
            "KAFKA_TOPIC_PREFIX": prefix,
            "ABSCH_ENV": "test",
            "JWKS_URL": "http://127.0.0.1:9/.well-known/jwks.json",
            "LOG_LEVEL": "WARNING",
            "MONITOR_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'monitor.db'}",
            "MONITOR_UNKNOWN_GRACE_SECONDS": "3600",
            "MONITOR_RECHECK_INTERVAL_SECONDS": "0.5",
        }
    )
    return proc


def _split(workload: Workload, first_cpcs: int) -> tuple[Workload, Workload]:
    """Everything but the last communiqués, then those."""
    cpc_events = [e for e in workload.events if e[0] == "absch.cpc.v1"]
    later = cpc_events[first_cpcs:]
    before = Workload(events=[e for e in workload.events if e not in later])
    return before, Workload(events=later)


async def test_a_killed_monitor_checks_everything_after_restart(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    workload = build(seed=5, irccs=10, cpcs=40)
    expected = workload.expected()
    before, later = _split(workload, first_cpcs=10)
    discrepancies = topic_name("absch.discrepancy.v1", topic_prefix)
    monitor = _monitor(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        await monitor.start()
        await before.produce(kafka_bootstrap, topic_prefix)
        async with TopicReader(kafka_bootstrap, discrepancies) as reader:
            await reader.read_until(lambda evs: len(evs) >= 1, timeout=60)
        monitor.signal(signal.SIGKILL)
        monitor.wait()

        await later.produce(kafka_bootstrap, topic_prefix)
        await monitor.start()
        async with TopicReader(kafka_bootstrap, discrepancies) as reader:
            try:
                await reader.read_until(lambda evs: active_findings(evs) >= expected, timeout=90)
            except AssertionError:
                missing = expected - active_findings(reader.events)
                raise AssertionError(f"{len(missing)} of {len(expected)} never flagged") from None
    finally:
        monitor.stop()
    assert active_findings(reader.events) == expected
    flags = Counter((e.data.id, e.id) for e in reader.events if e.type == "discrepancy.flagged")
    # A replay may re-send an event, but always under the same event id.
    assert len({fid for fid, _ in flags}) == len(flags), "one event id per finding"
