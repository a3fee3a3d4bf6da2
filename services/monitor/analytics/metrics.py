"""Metrics of an analytics worker (``monitor_analytics_*``), served at ``/metrics`` on
its faust web port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class AnalyticsMetrics:
    """Series of one analytics worker; labels are bounded (kinds and event types)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.counted = Counter(
            "monitor_analytics_counted_total",
            "Citations and flagged discrepancies folded into the monthly windows, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "monitor_analytics_duplicates_total",
            "Messages already counted (a copy, or a replay after a restart), by kind",
            ["kind"],
            registry=self.registry,
        )
        self.parked = Counter(
            "monitor_analytics_parked_total",
            "Citations parked until the IRCC they cite arrives",
            registry=self.registry,
        )
        self.alerts = Counter(
            "monitor_analytics_alerts_sent_total",
            "Alerts sent (again after a replay: same event id), by type",
            ["type"],
            registry=self.registry,
        )
        self.gaps = Counter(
            "monitor_analytics_offset_gaps_total",
            "Offsets of an input partition passed without reaching an agent (lost input), by topic",
            ["topic"],
            registry=self.registry,
        )
        self.skipped = Counter(
            "monitor_analytics_skipped_total",
            "Input messages that were no event (undecodable), skipped",
            registry=self.registry,
        )
