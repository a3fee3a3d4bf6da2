"""Monitor metrics (``monitor_*``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from shared.metrics import PlumbingMetrics


class MonitorMetrics:
    """Series of one monitor instance."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.plumbing = PlumbingMetrics(registry, "monitor")
        self.events_seen = Counter(
            "monitor_events_seen_total",
            "Events folded into the monitor's state, by type",
            ["type"],
            registry=registry,
        )
