"""Settings every service shares; each service subclasses with its own env prefix."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_KAFKA = "127.0.0.1:9092"
LOCAL_PG_PORT = 54320


def local_database_url(database: str, port: int = LOCAL_PG_PORT) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{database}"


class ServiceSettings(BaseSettings):
    """Kafka, PostgreSQL, HTTP and logging settings of one service process."""

    model_config = SettingsConfigDict(env_prefix="SHOP_", extra="ignore", frozen=True)

    service_name: str = "service"
    kafka_bootstrap_servers: str = LOCAL_KAFKA
    database_url: SecretStr = SecretStr(local_database_url("shop"))
    db_pool_min: int = Field(default=1, ge=1)
    db_pool_max: int = Field(default=4, ge=1)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "INFO"
    log_json: bool = True
    consumer_group_prefix: str = ""

    consumer_batch_max: int = Field(default=500, ge=1)
    consumer_poll_ms: int = Field(default=200, ge=1)
    handler_max_attempts: int = Field(default=3, ge=1)
    consumer_parallel_keys: int = Field(default=1, ge=1, le=256)
    retry_backoff_ms: int = Field(default=100, ge=0)
    outbox_batch_max: int = Field(default=500, ge=1)
    outbox_poll_ms: int = Field(default=500, ge=1)
    producer_linger_ms: int = Field(default=5, ge=0)
