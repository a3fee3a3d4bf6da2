"""Monitor metrics (``monitor_*``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.metrics import LATENCY_BUCKETS, PlumbingMetrics

RECHECK_REASONS = ("checkpoint", "grace")


class MonitorMetrics:
    """Series of one monitor instance."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.plumbing = PlumbingMetrics(registry, "monitor")
        self.utilization_view = Gauge(
            "monitor_utilization_view_following",
            "1 when GET /v1/utilization follows the analytics changelog; 0 while starting,"
            " waiting for it (no analytics worker has run) or failing to read it",
            registry=registry,
        )
        self.events_seen = Counter(
            "monitor_events_seen_total",
            "IRCC and CPC events read by the stream processor",
            ["type"],
            registry=registry,
        )
        self.cpcs_checked = Counter(
            "monitor_cpcs_checked_total", "Communiqués taken in for checking", registry=registry
        )
        self.citations_checked = Counter(
            "monitor_citations_checked_total",
            "CPC-to-IRCC citations taken in for checking",
            registry=registry,
        )
        self.flagged = Counter(
            "monitor_discrepancies_flagged_total",
            "Discrepancies raised, by rule",
            ["rule"],
            registry=registry,
        )
        self.cleared = Counter(
            "monitor_discrepancies_cleared_total",
            "Discrepancies that stopped holding, by rule",
            ["rule"],
            registry=registry,
        )
        self.check_seconds = Histogram(
            "monitor_check_seconds",
            "Time of one checking transaction (an event or a recheck)",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.table_keys = Gauge(
            "monitor_table_keys",
            "Rows in the checking state, by table",
            ["table"],
            registry=registry,
        )
        self.work_errors = Counter(
            "monitor_work_errors_total", "Work items that failed to evaluate", registry=registry
        )
        self.delivery_failures = Counter(
            "monitor_delivery_failures_seen_total",
            "notification.failed events seen",
            registry=registry,
        )
        self.rechecks = Counter(
            "monitor_rechecks_total",
            "Stored items looked at again: CPCs citing a changed checkpoint, items whose grace"
            " period for an unknown reference ran out",
            ["reason"],
            registry=registry,
        )
        for reason in RECHECK_REASONS:
            self.rechecks.labels(reason)  # both series exist from the start
