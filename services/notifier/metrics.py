"""Notifier metrics (``notifier_*``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.notifier.rendering import KINDS
from shared.metrics import LATENCY_BUCKETS, PlumbingMetrics


class NotifierMetrics:
    """Series of one notifier instance."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.plumbing = PlumbingMetrics(registry, "notifier")
        self.sent = Counter(
            "notifier_mails_sent_total",
            "Mails accepted by the SMTP server",
            ["template"],
            registry=registry,
        )
        self.failed = Counter(
            "notifier_mails_failed_total", "Mails given up on", ["template"], registry=registry
        )
        self.retried = Counter(
            "notifier_mail_retries_total",
            "Temporary SMTP failures retried",
            ["template"],
            registry=registry,
        )
        self.queued = Counter(
            "notifier_mails_queued_total", "Deliveries created", ["template"], registry=registry
        )
        self.send_seconds = Histogram(
            "notifier_send_seconds",
            "Time to hand one mail to SMTP",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.pending = Gauge(
            "notifier_deliveries_pending", "Deliveries waiting to be sent", registry=registry
        )
        self.unresolved = Counter(
            "notifier_unresolved_references_total",
            "References still unknown after waiting (no recipient from them)",
            ["kind"],
            registry=registry,
        )
        # Every template's series exist from the start, so a rate() sees the first mail.
        for template in KINDS:
            for counter in (self.sent, self.failed, self.retried, self.queued):
                counter.labels(template)
