"""Settings of order_service: environment variables prefixed ORDER_."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from events.kit.settings import ServiceSettings, local_database_url


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDER_", extra="ignore", frozen=True)

    service_name: str = "order"
    database_url: SecretStr = SecretStr(local_database_url("order"))
    http_port: int = 8000
