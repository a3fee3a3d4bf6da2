"""Registry settings (env prefix ``REGISTRY_``; shared names as in DESIGN.md §7)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    """Everything the registry reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="REGISTRY_", extra="ignore", populate_by_name=True)

    service: str = "registry"
    http_port: int = 8101
    metrics_port: int = 9101
    admin_token: str | None = Field(default=None, validation_alias="ABSCH_ADMIN_TOKEN")
    jwt_private_key_path: Path = Field(
        default=Path("var/keys/registry-ed25519.pem"), validation_alias="JWT_PRIVATE_KEY_PATH"
    )
    jwt_generate_key: bool = Field(
        default=True, description="create the signing key when missing (dev only)"
    )
    token_ttl_hours: int = Field(
        default=8,
        ge=1,
        le=24,  # hours, not days: a leaked token is worth little for long
        description="lifetime of an access token; a fresh one comes from POST /v1/tokens",
    )
    request_timeout_days: int = Field(default=90, ge=1)
    reminder_interval_days: int = Field(default=7, ge=1)
