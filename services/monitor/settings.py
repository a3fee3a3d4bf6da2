"""Monitor settings (env prefix ``MONITOR_``; shared names as in DESIGN.md §7)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class MonitorSettings(ServiceSettings):
    """Everything the monitor reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="MONITOR_", extra="ignore", populate_by_name=True)

    service: str = "monitor"
    http_port: int = 8104
