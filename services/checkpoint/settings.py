"""Checkpoint settings (env prefix ``CHECKPOINT_``; shared names as in DESIGN.md §7)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class CheckpointSettings(ServiceSettings):
    """Everything the checkpoint service reads from the environment."""

    model_config = SettingsConfigDict(
        env_prefix="CHECKPOINT_", extra="ignore", populate_by_name=True
    )

    service: str = "checkpoint"
    http_port: int = 8102
    metrics_port: int = 9102
