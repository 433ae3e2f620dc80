"""Settings of analytics_service: environment variables prefixed ANALYTICS_."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from events.kit.settings import ServiceSettings, local_database_url


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ANALYTICS_", extra="ignore", frozen=True)

    service_name: str = "analytics"
    database_url: SecretStr = SecretStr(local_database_url("analytics"))
    http_port: int = 8002
