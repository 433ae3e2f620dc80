"""Settings of order_service: environment variables prefixed ORDER_."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from events.kit.settings import ServiceSettings, local_database_url


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDER_", extra="ignore", frozen=True)

    service_name: str = "order"
    database_url: SecretStr = SecretStr(local_database_url("order"))
    http_port: int = 8000
    db_pool_max: int = 8

    stock_deadline_s: float = Field(default=30.0, gt=0)
    payment_deadline_s: float = Field(default=30.0, gt=0)
    confirm_deadline_s: float = Field(default=30.0, gt=0)
    deadline_scan_ms: int = Field(default=500, ge=10)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    idempotency_ttl_h: float = Field(
        default=24.0, gt=0, description="How long a retried POST gets the first answer back."
    )
    max_open_orders: int = Field(
        default=10,
        ge=0,
        description="Orders one customer may have holding stock at once (0: no cap).",
    )
    intake_batch_max: int = Field(
        default=100, ge=1, description="Order placements one transaction takes, at most."
    )
    intake_concurrency: int = Field(
        default=2,
        ge=1,
        description="Placement transactions at once; requests arriving meanwhile wait and share "
        "the next one.",
    )
    place_fast_path: bool = Field(
        default=True,
        description="Answer POST /orders past FastAPI's routing and dependency solving, with the "
        "same answers (api.PlaceOrders); false sends it through FastAPI, a baseline to compare.",
    )
