"""The faust-streaming side: one agent folds the *.events topics into faust tables.

Tables (each with a changelog topic, restored on start): `orders` (order id -> facts),
`low_stock` (SKU -> alert) and `watermarks` ("topic/partition" -> newest event time seen there, the
reference for lateness). The in-memory Aggregates are a function of the `orders` table: rebuilt
after every recovery, then kept up to date by the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import faust
from prometheus_client import Counter, Gauge

from analytics_service.domain import (
    MINUTE_MS,
    Aggregates,
    Facts,
    epoch_ms,
    low_stock_after_level,
    low_stock_detected,
)
from analytics_service.handlers import ORDER_HANDLERS
from analytics_service.settings import Settings
from events.contracts import REGISTRY, LowStockDetected, ProductUpserted, StockLevelChanged
from events.envelope import DecodeError, decode
from events.kit.admin import ensure_topics
from events.kit.kafkaconf import client_options, faust_credentials
from events.kit.logging import get_logger
from events.topics import (
    CATALOG_PRODUCTS,
    INVENTORY_EVENTS,
    ORDER_EVENTS,
    PAYMENT_EVENTS,
    SAGA_PARTITIONS,
    TopicSpec,
)

log = get_logger(__name__)

SOURCE_TOPICS = (ORDER_EVENTS, INVENTORY_EVENTS, PAYMENT_EVENTS, CATALOG_PRODUCTS)
TABLES = ("orders", "low_stock", "watermarks", "categories")

EVENTS = Counter("analytics_events_total", "Events folded into the analytics.", ["type"])
LATE = Counter("analytics_late_events_total", "Events past the grace period (totals only).")
UNDECODABLE = Counter("analytics_undecodable_total", "Records that are not valid envelopes.")
RECOVERED = Gauge("analytics_orders_in_table", "Orders known to the analytics tables.")


class AnalyticsStream:
    """The faust app, its tables and the aggregates the HTTP side reads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.aggregates = Aggregates()
        self.recovered = asyncio.Event()
        self.stopping = asyncio.Event()
        self.grace_ms = settings.grace_s * 1000
        self.app: Any = None
        self._orders: Any = None
        self._low_stock: Any = None
        self._watermarks: Any = None
        self._categories: Any = None

    def build(self) -> Any:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        app = faust.App(
            s.app_id,
            broker=[f"kafka://{h.strip()}" for h in s.kafka_bootstrap_servers.split(",")],
            store="memory://",
            datadir=str(s.data_dir),
            web_enabled=False,
            autodiscover=False,
            topic_partitions=SAGA_PARTITIONS,
            topic_replication_factor=1,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=s.commit_interval_s,
            broker_session_timeout=s.session_timeout_s,
            broker_heartbeat_interval=s.session_timeout_s / 4,
            broker_credentials=faust_credentials(s),
        )
        # use_partitioner: changelog records are placed by key rather than by the source record's
        # partition (faust's co-partitioning check misreads the changelog as having 0 partitions
        # on this broker). One worker holds every partition, so recovery reads them all.
        table_options: dict[str, Any] = {
            "default": None,
            "partitions": SAGA_PARTITIONS,
            "use_partitioner": True,
        }
        self._orders, self._low_stock, self._watermarks, self._categories = (
            app.Table(name, **table_options) for name in TABLES
        )
        self._orders.on_recover(self._on_recovered)
        source = app.topic(*SOURCE_TOPICS, key_serializer="raw", value_serializer="raw")

        async def fold(stream: Any) -> None:
            async for event in stream.events():
                self.apply(event.message.topic, event.message.partition, event.value)

        app.agent(source, name="analytics-fold")(fold)
        self.app = app
        return app

    async def _on_recovered(self) -> None:
        self.aggregates.categories = {k: v for k, v in self._categories.items() if v}
        self.aggregates.rebuild(v for v in self._orders.values() if v)
        RECOVERED.set(len(self._orders))
        self.recovered.set()
        log.info("analytics tables recovered", orders=len(self._orders))

    def apply(self, topic: str, partition: int, raw: bytes | None) -> None:
        """Fold one record into the tables and the aggregates (inside the agent)."""
        try:
            envelope, msg = decode(raw, REGISTRY)
        except DecodeError as exc:
            UNDECODABLE.inc()
            log.warning("undecodable record", topic=topic, partition=partition, error=str(exc))
            return
        EVENTS.labels(envelope.type).inc()
        ts = epoch_ms(envelope.occurred_at)
        where = f"{topic}/{partition}"
        watermark: int = self._watermarks.get(where) or 0
        late = ts < watermark - self.grace_ms
        if ts > watermark:
            self._watermarks[where] = ts
        handler = ORDER_HANDLERS.get(type(msg))
        if handler is not None:
            key = str(msg.order_id)  # type: ignore[attr-defined]
            old: Facts | None = self._orders.get(key)
            new = handler(old, msg, ts, late)
            if new is not None:
                if late:
                    LATE.inc()
                self._orders[key] = new
                self.aggregates.replace(old, new)
        elif isinstance(msg, ProductUpserted):
            self._categories[msg.sku] = msg.category
            self.aggregates.categorise(msg.sku, msg.category)
        elif isinstance(msg, LowStockDetected):
            self._low_stock[msg.sku] = low_stock_detected(msg.available, msg.threshold, ts)
            self.aggregates.touch()
        elif isinstance(msg, StockLevelChanged):
            alert = self._low_stock.get(msg.sku)
            if alert is not None:
                after = low_stock_after_level(alert, msg.available)
                if after is None:
                    del self._low_stock[msg.sku]
                else:
                    self._low_stock[msg.sku] = after
                self.aggregates.touch()

    def low_stock(self) -> list[dict[str, Any]]:
        if self._low_stock is None:
            return []
        return sorted(
            ({"sku": sku, **alert} for sku, alert in self._low_stock.items() if alert),
            key=lambda a: (a["available"], a["sku"]),
        )

    def watermark(self) -> int | None:
        if self._watermarks is None:
            return None
        values = [v for v in self._watermarks.values() if v]
        return max(values) if values else None

    async def create_changelogs(self) -> None:
        """Create the tables' changelog topics before faust starts.

        Faust can create them itself, but its producer then keeps metadata from before they
        existed and cannot place the first changelog record ("topic not found in metadata").
        """
        specs = [
            TopicSpec(
                f"{self.settings.app_id}-{name}-changelog", "compacted", SAGA_PARTITIONS, False
            )
            for name in TABLES
        ]
        await ensure_topics(
            self.settings.kafka_bootstrap_servers, specs, client=client_options(self.settings)
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """Run the faust app until `stopping` is set; prune old minutes as time goes by."""
        self.stopping = stopping
        app = self.build()
        await self.create_changelogs()
        await app.start()
        log.info("analytics stream started", app_id=self.settings.app_id)
        try:
            while not stopping.is_set():
                horizon = int(time.time() * 1000) - self.settings.retention_h * 60 * MINUTE_MS
                self.aggregates.prune(horizon)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), 60)
        finally:
            await app.stop()
            log.info("analytics stream stopped")
