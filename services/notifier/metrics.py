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
        self.oldest_pending = Gauge(
            "notifier_oldest_pending_delivery_age_seconds",
            "Age of the oldest delivery still waiting to be sent (0 when none is)",
            registry=registry,
        )
        self.smtp_up = Gauge(
            "notifier_smtp_up",
            "1 when this instance's last SMTP attempt reached the server (whatever it answered),"
            " 0 when it could not connect or the connection failed; 1 before the first attempt",
            registry=registry,
        )
        self.smtp_up.set(1)
        self.parked = Gauge(
            "notifier_parked_events",
            "Mail events parked until the records they name are known",
            registry=registry,
        )
        self.parked_total = Counter(
            "notifier_events_parked_total",
            "Mail events parked because a record they name was not known yet",
            ["kind"],
            registry=registry,
        )
        self.nobody = Counter(
            "notifier_events_without_recipients_total",
            "Events that should have mailed someone but named nobody known to the directory"
            " (e.g. a country without a focal point or authority), by kind",
            ["kind"],
            registry=registry,
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
