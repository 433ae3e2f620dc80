"""The test infrastructure itself: a real broker with the declared topics and a real database."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from deploy.local.topics import ensure_topics, list_topics
from events.topics import TopicSpec, all_topics
from tests.stack import Stack


async def test_every_declared_topic_exists_with_its_partitions(stack: Stack) -> None:
    on_broker = {t.name: t for t in await list_topics(stack.kafka_bootstrap)}

    for spec in all_topics():
        assert spec.name in on_broker
        assert on_broker[spec.name].partitions == spec.partitions


async def test_a_record_produced_to_a_topic_is_consumed_back(stack: Stack) -> None:
    topic = f"test.stack.{uuid.uuid4().hex[:8]}"
    await ensure_topics(stack.kafka_bootstrap, [TopicSpec(topic, "event", 1)])
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"hello", key=b"order-1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        async with asyncio.timeout(30):
            record = await consumer.getone()
    finally:
        await consumer.stop()

    assert (record.key, record.value, record.offset) == (b"order-1", b"hello", sent.offset)


async def test_a_database_is_created_on_demand_and_keeps_a_table(stack: Stack) -> None:
    url = stack.database_url("stack_selftest")
    table = f"greeting_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, text text NOT NULL)")
        await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", 1, "hello")
        rows = await conn.fetch(f"SELECT id, text FROM {table}")
        await conn.execute(f"DROP TABLE {table}")
    finally:
        await conn.close()

    assert [tuple(r) for r in rows] == [(1, "hello")]
    assert stack.database_url("stack_selftest") == url
