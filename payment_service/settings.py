"""Settings of payment_service: environment variables prefixed PAYMENT_."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from events.kit.settings import ServiceSettings, local_database_url


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENT_", extra="ignore", frozen=True)

    service_name: str = "payment"
    database_url: SecretStr = SecretStr(local_database_url("payment"))
    http_port: int = 8004
