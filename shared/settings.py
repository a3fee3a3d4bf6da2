"""Settings base: what every service reads from the environment (DESIGN.md §7).

Cross-service values keep the plain names of the design (``KAFKA_BOOTSTRAP``,
``SMTP_HOST``, ...). Values that differ per service on one host (database, port) carry
the service's prefix, e.g. ``REGISTRY_DATABASE_URL``, so four services can share a shell.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev", "admin"}


def default_sqlite_url(service: str) -> str:
    """SQLite file per service under ``var/`` (created on demand)."""
    path = Path("var") / f"{service}.db"
    return f"sqlite+aiosqlite:///{path}"


class ServiceSettings(BaseSettings):
    """Base for every service's settings; subclasses set ``env_prefix`` and ``service``."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, env_file=None)

    service: str = "service"
    environment: str = Field(default="dev", validation_alias="ABSCH_ENV")
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP")
    kafka_topic_prefix: str = Field(default="", validation_alias="KAFKA_TOPIC_PREFIX")
    kafka_partitions: int = Field(default=4, ge=1, validation_alias="KAFKA_PARTITIONS")
    kafka_replication: int = Field(default=1, ge=1, validation_alias="KAFKA_REPLICATION")
    # Measured with `python -m bench --quick --only pipeline --env KAFKA_FETCH_MAX_WAIT_MS=N`
    # on the embedded broker (2 cores): 500 ms gave mail p50 321 ms at 25 % load and 8.9 %
    # idle machine CPU; 100 ms gave 80 ms and 14.8 %; 20 ms gave 60 ms and 34.8 % (the
    # broker alone 17 %). 100 meets the latency targets at a small idle cost.
    kafka_fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=30_000,
        validation_alias="KAFKA_FETCH_MAX_WAIT_MS",
        description="longest a consumer's fetch waits for new records; a broker that holds "
        "every fetch this long (the embedded one) adds it to each hop, lower costs CPU",
    )
    kafka_create_topics: bool = Field(
        default=True,
        validation_alias="KAFKA_CREATE_TOPICS",
        description="create missing topics at start and when the broker lost them; turn off "
        "where topics are managed (a cluster with replication 3)",
    )
    ready_broker_timeout_seconds: float = Field(
        default=3.0,
        gt=0,
        validation_alias="READY_BROKER_TIMEOUT_SECONDS",
        description="/readyz fails when the broker doesn't answer a metadata request this fast",
    )
    ready_consumer_stall_seconds: float = Field(
        default=30.0,
        gt=0,
        validation_alias="READY_CONSUMER_STALL_SECONDS",
        description="/readyz fails when a consumer loop hasn't polled for this long",
    )
    ready_outbox_age_seconds: float = Field(
        default=60.0,
        gt=0,
        validation_alias="READY_OUTBOX_AGE_SECONDS",
        description="/readyz fails when the oldest unpublished outbox row is this old",
    )
    instance_id: str = Field(
        default="1",
        description="tells instances of one service apart (per-instance consumer groups, "
        "delivery claims); unique per instance",
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8101", validation_alias="PUBLIC_BASE_URL"
    )
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    log_format: str = Field(default="json", validation_alias="LOG_FORMAT")
    jwks_url: str = Field(
        default="http://127.0.0.1:8101/.well-known/jwks.json", validation_alias="JWKS_URL"
    )
    http_max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        validation_alias="HTTP_MAX_BODY_BYTES",
        description="largest request body accepted, larger ones get 413; the default "
        "(1 MiB, shared.http.DEFAULT_MAX_BODY_BYTES) is Kafka's default message size",
    )
    database_url: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = 0
    # Prometheus scrapes <SERVICE>_METRICS_HOST:<SERVICE>_METRICS_PORT, never the public port.
    metrics_host: str = Field(
        default="", description="address of the metrics listener; empty: the same as http_host"
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="port of the metrics listener (/metrics), kept off the public port so that "
        "only the monitoring network reaches it; 0 picks a free one (tests, logged at start)",
    )
    consumer_group: str = ""

    @model_validator(mode="after")
    def _defaults(self) -> ServiceSettings:
        if not self.database_url:
            self.database_url = default_sqlite_url(self.service)
        if not self.consumer_group:
            self.consumer_group = f"absch-{self.service}"
        return self

    @property
    def is_dev(self) -> bool:
        """True for local development and tests; placeholder secrets are refused otherwise."""
        return self.environment in {"dev", "test"}

    def require_secret(self, name: str, value: str | None) -> str:
        """Return a secret, refusing an absent value, and placeholders outside dev."""
        if value is None or value == "":
            raise ValueError(f"{name} must be set")
        if not self.is_dev and value.lower() in PLACEHOLDER_SECRETS:
            raise ValueError(f"{name} is a placeholder; set a real secret")
        return value
