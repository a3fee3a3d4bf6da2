"""Monitor settings (env prefix ``MONITOR_``; shared names as in DESIGN.md §7)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class MonitorSettings(ServiceSettings):
    """Everything the monitor reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="MONITOR_", extra="ignore", populate_by_name=True)

    service: str = "monitor"
    http_port: int = 8104
    metrics_port: int = 9104
    unknown_grace_seconds: float = Field(
        default=600.0,
        ge=0,
        description="how long a cited IRCC or checkpoint may be missing before it is flagged",
    )
    recheck_interval_seconds: float = Field(default=5.0, gt=0)
    analytics_app_id: str = Field(
        default="absch-analytics",
        validation_alias="ANALYTICS_APP_ID",
        description="app id of the analytics workers, whose tables /v1/utilization reads",
    )
