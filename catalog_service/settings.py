"""Settings of catalog_service: environment variables prefixed CATALOG_."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from events.kit.settings import ServiceSettings, local_database_url


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CATALOG_", extra="ignore", frozen=True)

    service_name: str = "catalog"
    database_url: SecretStr = SecretStr(local_database_url("catalog"))
    http_port: int = 8001
