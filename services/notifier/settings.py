"""Notifier settings (env prefix ``NOTIFIER_``; shared names as in DESIGN.md §7)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    """Everything the notifier reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore", populate_by_name=True)

    service: str = "notifier"
    http_port: int = 8103
    metrics_port: int = 9103
    smtp_host: str = Field(default="127.0.0.1", validation_alias="SMTP_HOST")
    smtp_port: int = Field(default=1025, validation_alias="SMTP_PORT")
    smtp_username: str | None = Field(default=None, validation_alias="SMTP_USERNAME")
    smtp_password: str | None = Field(default=None, validation_alias="SMTP_PASSWORD")
    smtp_starttls: bool = Field(default=False, validation_alias="SMTP_STARTTLS")
    smtp_connections: int = Field(
        default=4,
        ge=1,
        le=32,
        description="SMTP connections a delivery worker sends over at once; after a crash at "
        "most this many mails (those in flight) may go out a second time",
    )
    smtp_timeout: float = Field(
        default=10.0, gt=0, description="seconds to wait for the SMTP server at each step"
    )
    mail_from: str = Field(
        default="ABS Clearing-House <no-reply@absch.example>", validation_alias="MAIL_FROM"
    )
    retry_base_seconds: float = Field(
        default=1.0,
        gt=0,
        description="delay before the first retry of a temporary SMTP failure; it doubles "
        "with every further attempt, up to retry_max_seconds",
    )
    retry_max_seconds: float = Field(
        default=60.0,
        gt=0,
        description="longest delay between two attempts of a delivery, and between two "
        "connection attempts while the SMTP server is unreachable",
    )
    soft_bounce_seconds: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="how long a delivery is retried while the SMTP server answers it with a "
        "4xx reply, counted from the first one; then it fails. An unreachable server (refused, "
        "dropped or timed-out connection, 421) never counts: those retry as long as they last. "
        "A 5xx fails the delivery at once",
    )
    claim_seconds: float = Field(
        default=60.0,
        gt=0,
        description="how long a delivery worker's claim on a batch of due deliveries lasts; "
        "an instance takes over the rows of a killed one once the claim has expired. A worker "
        "starts a send only while at least half its claim is left, so it must be at least "
        "twice smtp_timeout",
    )
    reference_wait_seconds: float = Field(
        default=10.0, ge=0, description="how long to wait for referenced records to arrive"
    )
    instance_id: str = Field(
        default="1",
        min_length=1,
        description="names this instance: its directory-view consumer group and its delivery "
        "claims; give every instance a distinct id that stays the same across restarts",
    )
    expiry_check_interval_seconds: float = Field(
        default=3600.0, gt=0, description="how often to look for IRCC expiry notices due"
    )

    @model_validator(mode="after")
    def _claim_outlasts_a_send(self) -> NotifierSettings:
        if self.claim_seconds < 2 * self.smtp_timeout:
            raise ValueError(
                f"claim_seconds ({self.claim_seconds}) must be at least twice smtp_timeout "
                f"({self.smtp_timeout}): a claim must outlast the send started under it"
            )
        return self
