"""Settings of inventory_service: environment variables prefixed INVENTORY_."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from events.kit.settings import ServiceSettings, local_database_url


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INVENTORY_", extra="ignore", frozen=True)

    service_name: str = "inventory"
    database_url: SecretStr = SecretStr(local_database_url("inventory"))
    http_port: int = 8003

    reservation_ttl_s: float = Field(default=120, gt=0)
    expiry_scan_ms: int = Field(default=500, ge=10)
    low_stock_threshold: int = Field(default=10, ge=0)
