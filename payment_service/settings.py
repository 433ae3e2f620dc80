"""Settings of payment_service: environment variables prefixed PAYMENT_."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from events.kit.settings import ServiceSettings, local_database_url


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENT_", extra="ignore", frozen=True)

    service_name: str = "payment"
    database_url: SecretStr = SecretStr(local_database_url("payment"))
    http_port: int = 8004
    # Gateway calls are slow I/O: the handlers of different orders run concurrently inside the
    # batch's one transaction (the unit of work does the database I/O), so a slow or timing-out
    # call does not hold up the calls of the orders after it.
    consumer_parallel_keys: int = Field(default=32, ge=1, le=256)
    # ...and a batch held up by one (a gateway timeout, 2 s) is overtaken after 100 ms: the next
    # batches go on being applied around it rather than every payment waiting for that call.
    consumer_batches_in_flight: int = Field(default=8, ge=1, le=64)
    db_pool_max: int = Field(default=16, ge=1)

    # The simulated gateway: its latency, how often it fails transiently, when we stop waiting.
    gateway_latency_ms: int = Field(default=0, ge=0)
    gateway_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    gateway_timeout_ms: int = Field(default=2000, ge=1)
    gateway_seed: int | None = None
    # Where the simulated gateway keeps its books (authorizations, answered keys), so that they
    # outlive this process as a real gateway's do; unset, they are in memory (unit tests).
    gateway_state_path: Path | None = None
    # Transient gateway failures are retried inside the handler this many times in all.
    gateway_max_attempts: int = Field(default=3, ge=1)
    gateway_retry_backoff_ms: int = Field(default=50, ge=0)
    # Capture, void and refund keep asking a gateway that fails or times out for this long
    # (same idempotency key) before the command is failed to the kit's retries and dead letter.
    gateway_settle_for_s: float = Field(default=60.0, ge=0.0, le=240.0)
