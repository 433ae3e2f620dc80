"""Settings of analytics_service: environment variables prefixed ANALYTICS_."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from events.kit.settings import ServiceSettings, local_database_url


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ANALYTICS_", extra="ignore", frozen=True)

    service_name: str = "analytics"
    database_url: SecretStr = SecretStr(local_database_url("analytics"))
    http_port: int = 8002
    data_dir: Path = Field(
        default=Path(".var/analytics"),
        description="Local table state (RocksDB), one folder per process: never shared.",
    )
    grace_s: int = Field(default=600, ge=0, description="How late an event may be for its window.")
    retention_h: int = Field(default=25, ge=1, description="How long per-minute windows are kept.")
    push_interval_ms: int = Field(default=500, ge=50, description="Dashboard update cadence.")
    commit_interval_s: float = Field(default=1.0, gt=0)
    fold_batch_max: int = Field(
        default=1000,
        ge=1,
        description="Bundles (what one partition's fetch holds for the fold) folded per batch, "
        "at most.",
    )
    fold_batch_ms: int = Field(
        default=50, ge=1, description="How long a batch waits for more events (freshness cost)."
    )
    table_flush_ms: int = Field(
        default=1000,
        ge=10,
        description="How long the tables' writes wait in memory: an order's updates within it "
        "reach the changelog as one record. Events are acknowledged (their offsets committed) "
        "only after the flush, so a crash re-reads at most this much more.",
    )
    fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=1500,
        description="How long the broker may hold a fetch that found nothing (faust's is 1500): "
        "while it waits, partitions with traffic are not fetched again.",
    )
    fetch_min_bytes: int = Field(
        default=64 * 1024,
        ge=1,
        description="How much a fetch waits for (at most fetch_max_wait_ms): fewer, fuller "
        "fetches. With 1 (Kafka's default) every few events cost a fetch of their own, and "
        "the worker used a third of a core at 50 orders/s.",
    )
    table_cache_keys: int = Field(
        default=10_000,
        ge=0,
        description="Table keys kept in memory, most recently used (an order's facts are read "
        "once per event of its saga; the tables themselves are on disk).",
    )
    rocksdb_cache_mb: int = Field(
        default=16, ge=1, description="Block cache shared by every table partition (RocksDB)."
    )
    rocksdb_memtables_mb: int = Field(
        default=16, ge=1, description="Unflushed writes of all table partitions together, at most."
    )
    rocksdb_write_buffer_mb: int = Field(
        default=4, ge=1, description="One table partition's memtable: flushed to disk when full."
    )
    session_timeout_s: float = Field(
        default=10.0, gt=0, description="How soon a crashed worker's partitions are taken over."
    )

    @property
    def app_id(self) -> str:
        """Faust's application id: its consumer group and the prefix of its changelog topics."""
        return f"{self.consumer_group_prefix}analytics"
