"""Prometheus metrics the kit keeps for every service process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONSUMED = Counter("shop_messages_consumed_total", "Records consumed.", ["consumer", "topic"])
APPLIED = Counter(
    "shop_messages_applied_total", "Messages whose handler ran and committed.", ["consumer", "type"]
)
DUPLICATES = Counter(
    "shop_messages_duplicate_total", "Deliveries skipped as already applied.", ["consumer"]
)
FAILED = Counter(
    "shop_messages_failed_total", "Handler attempts that raised.", ["consumer", "type"]
)
DEAD_LETTERED = Counter(
    "shop_messages_dead_lettered_total",
    "Records sent to a dead-letter topic.",
    ["consumer", "topic"],
)
HANDLER_SECONDS = Histogram(
    "shop_handler_seconds",
    "Time to apply one consumed batch, per message.",
    ["consumer"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_SIZE = Histogram(
    "shop_consumer_batch_size",
    "Records per consumed batch.",
    ["consumer"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
OVERTAKEN = Counter(
    "shop_consumer_batches_overtaken_total",
    "Batches still applying when the consumer moved on to the next (batches_in_flight > 1).",
    ["consumer"],
)
RECHECKED = Counter(
    "shop_consumer_batches_rechecked_total",
    "Batches applied again with the inbox consulted first, as one of their records had been "
    "applied before (a redelivery).",
    ["consumer"],
)
CONSUMER_LAG = Gauge(
    "shop_consumer_lag", "High watermark minus position.", ["consumer", "topic", "partition"]
)
OUTBOX_BACKLOG = Gauge("shop_outbox_backlog", "Outbox rows not yet published.", ["service"])
OUTBOX_PUBLISHED = Counter(
    "shop_outbox_published_total", "Outbox rows published to Kafka.", ["service"]
)
