"""Settings of the utilization analytics worker (env prefix ``ANALYTICS_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class AnalyticsSettings(ServiceSettings):
    """What the faust worker reads from the environment (shared names as in DESIGN.md §7).

    The group timings default to what the embedded broker needs to settle a rebalance in
    seconds (``docs/broker.md``); they are valid on Apache Kafka too.
    """

    model_config = SettingsConfigDict(
        env_prefix="ANALYTICS_", extra="ignore", populate_by_name=True
    )

    service: str = "analytics"
    app_id: str = Field(
        default="absch-analytics",
        description="faust app id: consumer group and prefix of the internal topics",
    )
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535, description="faust's web server")
    store: str = Field(
        default="memory://",
        description="table store: memory:// (dev, tests) or rocksdb:// (deployment, needs "
        "the rocksdb extra)",
    )
    data_dir: Path = Field(default=Path("var/analytics"), description="faust's data directory")
    report_grace_seconds: float = Field(
        default=3 * 86_400.0,
        ge=0,
        description="a month's report goes out once a provider country's citations reach "
        "this far past the month's end (later citations still count in the tables)",
    )
    session_timeout_seconds: float = Field(default=6.0, gt=0)
    heartbeat_interval_seconds: float = Field(default=1.0, gt=0)
    rebalance_timeout_seconds: float = Field(default=6.0, gt=0)
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    # Measured with bench/b_analytics.py (10,000 CPCs): 5 ms took the bare pass-through
    # from 1,898 to 2,610 msg/s and left analytics at 497 -> 536/s (CPU-bound), so faust's
    # default (no wait) stays.
    producer_linger_seconds: float = Field(
        default=0.0,
        ge=0,
        description="how long the producer waits to batch sends (a citation causes five: "
        "two re-keyed sends and three table updates)",
    )
    commit_interval_seconds: float = Field(
        default=1.0, gt=0, description="how often consumed offsets are committed"
    )

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if not value.startswith(("memory://", "rocksdb://")):
            raise ValueError("store must be memory:// or rocksdb://")
        return value
