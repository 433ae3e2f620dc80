"""Settings every service shares; each service subclasses with its own env prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_KAFKA = "127.0.0.1:9092"
LOCAL_PG_PORT = 54320
# The signing key a local stack uses out of the box; refused outside development.
DEV_SIGNING_KEY = "dev-only-signing-key-change-me-0123456789"
PLACEHOLDER_KEYS = frozenset({DEV_SIGNING_KEY, "", "changeme", "change-me", "secret"})
MIN_KEY_BYTES = 32


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
    consumer_commit_interval_ms: int = Field(
        default=200, ge=0, description="Commit offsets at most this often (0: after every batch)."
    )
    # A consumer whose handlers wait on slow I/O may keep up to this many batches in flight: one
    # still applying after consumer_overtake_after_ms is left to finish while the next are
    # fetched and applied (per-key order and committed offsets kept; events/kit/inbox.py). 1: one
    # batch at a time.
    consumer_batches_in_flight: int = Field(default=1, ge=1, le=64)
    consumer_overtake_after_ms: int = Field(default=100, ge=0)
    # How long the broker may hold a fetch for more data, and how much it waits for: larger
    # values mean fewer, fuller fetch responses (less broker and client CPU per message) for at
    # most fetch_max_wait_ms more latency per hop. The defaults are Kafka's.
    consumer_fetch_max_wait_ms: int = Field(default=500, ge=0)
    consumer_fetch_min_bytes: int = Field(default=1, ge=1)
    retry_backoff_ms: int = Field(default=100, ge=0)
    outbox_batch_max: int = Field(default=500, ge=1)
    outbox_poll_ms: int = Field(default=500, ge=1)
    # No linger: the outbox relay hands the producer a whole batch without yielding, so the
    # batch is complete when the producer's sender runs and a linger only delayed every hop (5 ms
    # each, seven hops per order). Bench A/B in docs/performance.md.
    producer_linger_ms: int = Field(default=0, ge=0)

    # How clients reach the broker: PLAINTEXT locally; SASL_PLAINTEXT or SASL_SSL with a SCRAM
    # user of this service where the broker requires it (deploy/local/kafka_security.py).
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_username: str = ""
    kafka_password: SecretStr = SecretStr("")
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="CA bundle that signed the broker's certificate (SSL only)."
    )

    environment: Literal["development", "production"] = Field(
        default="development", description="production refuses placeholder secrets."
    )
    auth_signing_key: SecretStr = Field(
        default=SecretStr(DEV_SIGNING_KEY), description="HMAC key of the bearer tokens (HS256)."
    )
    auth_issuer: str = "shop"
    auth_audience: str = "shop-api"
    rate_limit: str = Field(
        default="50/second;1000/minute",
        description="Requests per client (token subject, else address); empty turns it off.",
    )

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> ServiceSettings:
        key = self.auth_signing_key.get_secret_value()
        if self.environment != "development" and (
            key in PLACEHOLDER_KEYS or len(key.encode()) < MIN_KEY_BYTES
        ):
            raise ValueError(
                f"auth_signing_key is a placeholder or shorter than {MIN_KEY_BYTES} bytes: set a "
                "random key (python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return self
