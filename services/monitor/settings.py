"""Monitor settings (env prefix ``MONITOR_``; shared names as in DESIGN.md §7)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class MonitorSettings(ServiceSettings):
    """Everything the monitor reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="MONITOR_", extra="ignore", populate_by_name=True)

    service: str = "monitor"
    http_port: int = 8104
    instance_id: str = Field(default="1", description="distinguishes workers of one group")
    unknown_grace_seconds: float = Field(
        default=600.0,
        ge=0,
        description="how long a cited IRCC or checkpoint may be missing before it is flagged",
    )
    recheck_interval_seconds: float = Field(default=5.0, gt=0)
    commit_interval_seconds: float = Field(
        default=2.8,
        gt=0,
        description="how often the stream processor commits its input offsets; after a "
        "crash, at most this much input is processed again",
    )
    data_dir: Path = Field(default=Path("var/monitor"), description="faust's local data")
    single_record_batches: bool = Field(
        default=True,
        description="send every record in its own batch; the embedded broker needs it for "
        "correct changelog recovery (its ListOffsets answer is short otherwise); "
        "turn off on Apache Kafka for throughput",
    )
