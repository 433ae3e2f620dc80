"""The raw transport ceiling: aiokafka producing and consuming on one topic, nothing else."""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer

from events.kit.admin import ensure_topics
from events.kit.producer import make_producer
from events.topics import TopicSpec

PAYLOAD = b'{"payload":"' + b"x" * 380 + b'"}'


async def measure(bootstrap: str, messages: int = 100_000, partitions: int = 6) -> dict[str, float]:
    """Messages per second produced (acks=all, idempotent, linger 5 ms) and consumed in batches."""
    topic = f"bench.transport.{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [TopicSpec(topic, "event", partitions)])
    producer = make_producer(bootstrap, client_id="bench-transport")
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [
            await producer.send(topic, PAYLOAD, key=str(i % 1000).encode()) for i in range(messages)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    produce_s = time.perf_counter() - started

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{topic}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    seen = 0
    started = time.perf_counter()
    try:
        while seen < messages:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            seen += sum(len(v) for v in batch.values())
            if batch:
                await consumer.commit()
    finally:
        await consumer.stop()
    consume_s = time.perf_counter() - started
    return {
        "messages": messages,
        "produce_per_s": messages / produce_s,
        "consume_per_s": messages / consume_s,
    }
