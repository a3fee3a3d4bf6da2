"""Registry metrics (``registry_*``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from shared.metrics import PlumbingMetrics


class RegistryMetrics:
    """Series of one registry instance."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.plumbing = PlumbingMetrics(registry, "registry")
        self.publications = Counter(
            "registry_publications_total",
            "Revisions published, by schema and kind",
            ["schema", "kind"],
            registry=registry,
        )
        self.drafts_saved = Counter(
            "registry_drafts_saved_total", "Drafts saved, by schema", ["schema"], registry=registry
        )
        self.rejected_records = Counter(
            "registry_invalid_records_total",
            "Records refused by validation, by schema",
            ["schema"],
            registry=registry,
        )
        self.pending_requests = Gauge(
            "registry_pending_requests",
            "Publication requests waiting for a decision",
            registry=registry,
        )
