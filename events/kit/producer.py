"""The one way the platform builds a Kafka producer: idempotent, acks=all, batching."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from events.kit.partitioner import CachedPartitioner


def make_producer(
    bootstrap_servers: str,
    *,
    client_id: str,
    linger_ms: int = 5,
    **overrides: object,
) -> AIOKafkaProducer:
    """Idempotence keeps per-partition order across retries; linger lets sends share a batch.
    Records go to the partitions Kafka's default partitioner picks, their keys' hashes cached."""
    options: dict[str, object] = {"partitioner": CachedPartitioner(), **overrides}
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
        request_timeout_ms=30_000,
        **options,
    )
