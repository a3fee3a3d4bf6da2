"""Notifier settings (env prefix ``NOTIFIER_``; shared names as in DESIGN.md §7)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    """Everything the notifier reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore", populate_by_name=True)

    service: str = "notifier"
    http_port: int = 8103
    smtp_host: str = Field(default="127.0.0.1", validation_alias="SMTP_HOST")
    smtp_port: int = Field(default=1025, validation_alias="SMTP_PORT")
    smtp_username: str | None = Field(default=None, validation_alias="SMTP_USERNAME")
    smtp_password: str | None = Field(default=None, validation_alias="SMTP_PASSWORD")
    smtp_starttls: bool = Field(default=False, validation_alias="SMTP_STARTTLS")
    smtp_timeout: float = Field(default=10.0, gt=0)
    mail_from: str = Field(
        default="ABS Clearing-House <no-reply@absch.example>", validation_alias="MAIL_FROM"
    )
    max_attempts: int = Field(default=8, ge=1, description="SMTP attempts before failing")
    retry_base_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=60.0, gt=0)
    reference_wait_seconds: float = Field(
        default=10.0, ge=0, description="how long to wait for referenced records to arrive"
    )
    instance_id: str = Field(default="1", description="distinguishes projection consumers")
    expiry_check_interval_seconds: float = Field(
        default=3600.0, gt=0, description="how often to look for IRCC expiry notices due"
    )
