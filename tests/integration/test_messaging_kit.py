"""The messaging kit against the real broker and database: outbox, inbox, dead letters, crashes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from events.envelope import Envelope, decode_envelope, encode, headers_for, wrap
from events.kit import db, outbox
from events.kit.admin import ensure_topics
from events.kit.inbox import HandlerContext, InboxConsumer, Writes
from events.kit.outbox import OutboxRelay
from events.kit.partitioner import key_partition
from events.kit.producer import make_producer
from events.kit.settings import ServiceSettings
from events.topics import TopicSpec
from tests.integration.kit_support import (
    CREATE_APPLIED,
    KitTypes,
    eventually,
    recording_handler,
    running,
)

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("kit_support.py")


def inbox_consumer(
    stack: object,
    types: KitTypes,
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    name: str,
    **kwargs: object,
) -> InboxConsumer:
    fail_when_n = kwargs.pop("fail_when_n", None)
    sleep_s = float(kwargs.pop("sleep_s", 0.0))  # type: ignore[arg-type]
    handler: Any = kwargs.pop("handler", None) or recording_handler(
        types,
        name,
        fail_when_n=fail_when_n,  # type: ignore[arg-type]
        sleep_s=sleep_s,
    )
    return InboxConsumer(
        name=name,
        topics=[types.topic],
        handlers={types.ItemAdded: handler},
        registry=types.registry,
        pool=pool,
        producer=producer,
        bootstrap_servers=stack.kafka_bootstrap,  # type: ignore[attr-defined]
        service="kittest",
        backoff_ms=10,
        **kwargs,  # type: ignore[arg-type]
    )


async def applied_count(pool: asyncpg.Pool, consumer: str) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM applied WHERE consumer = $1",
        consumer,
    )
    assert row is not None
    return row["n"], row["d"]


async def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list:  # type: ignore[type-arg]
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list = []  # type: ignore[type-arg]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(records) < expected and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
    finally:
        await consumer.stop()
    return records


async def read_to_end(bootstrap: str, topic: str, partitions: int) -> list:  # type: ignore[type-arg]
    """Every record on the topic (of so many partitions) up to its end offsets as of now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    records: list = []  # type: ignore[type-arg]
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        for tp, end in ends.items():
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=500)
                records.extend(batch.get(tp, []))
    finally:
        await consumer.stop()
    return records


async def test_outbox_rows_reach_the_topic_in_key_order_and_the_inbox_applies_each_once(
    stack: object, types: KitTypes, kit_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    items = [uuid.uuid4() for _ in range(5)]
    messages = [types.ItemAdded(item_id=i, n=n) for n in range(8) for i in items]
    async with kit_pool.acquire() as conn, conn.transaction():
        await outbox.append(
            conn,
            [(m, wrap(m, producer="kittest")) for m in messages],
            channel=outbox.notify_channel("kittest"),
        )
    relay = OutboxRelay(kit_pool, producer, service="kittest", poll_interval_s=0.2)
    relay_task = asyncio.create_task(relay.run())
    name = f"roundtrip-{types.topic}"
    try:
        async with running(inbox_consumer(stack, types, kit_pool, producer, name)):

            async def all_applied() -> bool:
                return (await applied_count(kit_pool, name))[0] >= len(messages)

            await eventually(all_applied)
            rows = await kit_pool.fetch(
                "SELECT item_id, n FROM applied WHERE consumer = $1 ORDER BY id", name
            )
            for item in items:
                assert [r["n"] for r in rows if r["item_id"] == item] == list(range(8))
            counted = await read_topic(stack.kafka_bootstrap, types.topic + ".counted", 40)  # type: ignore[attr-defined]
    finally:
        relay.stop()
        await asyncio.wait_for(relay_task, 10)
    assert await applied_count(kit_pool, name) == (40, 40)
    assert len(counted) == 40
    causes = {decode_envelope(r.value).causation_id for r in counted}
    assert len(causes) == 40
    assert None not in causes
    left = await kit_pool.fetchval("SELECT count(*) FROM outbox")
    assert left == 0  # published rows are deleted once Kafka has acknowledged them


async def test_without_linger_a_relay_batch_still_goes_out_in_one_produce_request(
    stack: object, types: KitTypes, kit_pool: asyncpg.Pool
) -> None:
    """The services' producers have no linger (SHOP_PRODUCER_LINGER_MS=0): it only delayed every
    hop, because the relay hands the producer its whole batch without yielding in between, so
    the batch is complete before the producer's sender runs. An aiokafka whose send() gave way to
    the event loop would send a request per message: this counts them."""
    producer = make_producer(
        stack.kafka_bootstrap,  # type: ignore[attr-defined]
        client_id="kit-no-linger",
        linger_ms=ServiceSettings().producer_linger_ms,
    )
    await producer.start()
    try:
        # every partition once first: a topic this new may still answer NotLeaderForPartition,
        # and the retry would be a second produce request
        for partition in sorted(await producer.partitions_for(types.topic)):
            await (await producer.send(types.topic, b"warm-up", partition=partition))
        requests: list[str] = []
        send = producer.client.send

        async def counting_send(node_id: int, request: Any, **kwargs: Any) -> Any:
            requests.append(type(request).__name__)
            return await send(node_id, request, **kwargs)

        producer.client.send = counting_send
        messages = [types.ItemAdded(item_id=uuid.uuid4(), n=n) for n in range(40)]
        async with kit_pool.acquire() as conn, conn.transaction():
            await outbox.append(conn, [(m, wrap(m, producer="kitlinger")) for m in messages])
        relay = OutboxRelay(kit_pool, producer, service="kitlinger")
        published = await relay.publish_batch()  # with any rows the module's other tests left
    finally:
        await producer.stop()
    produces = [r for r in requests if r.startswith("ProduceRequest")]
    assert published >= len(messages)
    assert ServiceSettings().producer_linger_ms == 0
    assert len(produces) == 1, requests


async def insert_as_before(pool: asyncpg.Pool, topic: str, envelopes: list[Envelope]) -> None:
    """Outbox rows as the kit wrote them before migration 0003: headers in a JSON array."""
    await pool.executemany(
        "INSERT INTO outbox (event_id, topic, key, value, headers) VALUES ($1, $2, $3, $4, $5)",
        [
            (
                env.event_id,
                topic,
                env.correlation_id.encode(),
                encode(env),
                orjson.dumps([[k, v.decode()] for k, v in headers_for(env)]).decode(),
            )
            for env in envelopes
        ],
    )


async def test_an_outbox_from_before_delete_on_publish_keeps_its_pending_rows_only(
    stack: Any, types: KitTypes, producer: AIOKafkaProducer
) -> None:
    """Upgrading a database whose relay marked rows published (kit migration 0001 alone): the
    published rows go, the pending one stays and is the next to be published."""
    url = stack.database_url(f"kit_outbox_upgrade_{uuid.uuid4().hex[:8]}")
    await db.ensure_database(url)
    pool = await db.create_pool(url, min_size=1, max_size=2)
    try:
        await pool.execute((db.KIT_MIGRATIONS / "0001_kit.sql").read_text())
        sent, waiting = (
            types.ItemAdded(item_id=uuid.uuid4(), n=0),
            types.ItemAdded(item_id=uuid.uuid4(), n=1),
        )
        await insert_as_before(
            pool, types.topic, [wrap(m, producer="kitup") for m in (sent, waiting)]
        )
        await pool.execute(
            "UPDATE outbox SET published_at = now() WHERE id = (SELECT min(id) FROM outbox)"
        )

        assert "kit/0002_outbox_pending_only.sql" in await db.apply_migrations(pool)

        rows = await pool.fetch("SELECT value FROM outbox")
        assert [decode_envelope(r["value"]).payload["n"] for r in rows] == [1]
        relay = OutboxRelay(pool, producer, service="kitup")
        assert await relay.publish_batch() == 1
        # the published row is deleted by the next read, which finds nothing more
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 1
        assert await relay.publish_batch() == 0
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    finally:
        await pool.close()


async def test_rows_pending_when_the_headers_became_columns_go_out_with_the_same_headers(
    stack: Any, types: KitTypes, producer: AIOKafkaProducer
) -> None:
    """Upgrading a database whose outbox kept each row's headers as JSON (kit migration 0001, and
    0002 applied with 0003): migration 0003 takes the type and the correlation id from each pending row's envelope,
    and the relay publishes the rows with the headers they would have had."""
    url = stack.database_url(f"kit_outbox_headers_{uuid.uuid4().hex[:8]}")
    await db.ensure_database(url)
    pool = await db.create_pool(url, min_size=1, max_size=2)
    try:
        await pool.execute((db.KIT_MIGRATIONS / "0001_kit.sql").read_text())
        first = types.ItemAdded(item_id=uuid.uuid4(), n=0)
        envelopes = [
            wrap(first, producer="kitcols"),
            # caused by the first: its correlation id is the first's, not its own key
            wrap(
                types.ItemAdded(item_id=uuid.uuid4(), n=1),
                producer="kitcols",
                causation=wrap(first, producer="kitcols"),
            ),
        ]
        await insert_as_before(pool, types.topic, envelopes)

        assert "kit/0003_outbox_header_columns.sql" in await db.apply_migrations(pool)

        rows = await pool.fetch("SELECT event_type, correlation_id FROM outbox ORDER BY id")
        assert [(r["event_type"], r["correlation_id"]) for r in rows] == [
            (e.type, e.correlation_id) for e in envelopes
        ]
        relay = OutboxRelay(pool, producer, service="kitcols")
        assert await relay.publish_batch() == 2
    finally:
        await pool.close()
    ids = {str(e.event_id) for e in envelopes}
    records = [
        r
        for r in await read_to_end(stack.kafka_bootstrap, types.topic, 3)
        if dict(r.headers).get("event_id", b"").decode() in ids
    ]
    assert sorted(list(r.headers) for r in records) == sorted(headers_for(e) for e in envelopes)


async def test_a_relay_that_stops_leading_hands_the_lead_to_the_next_over_the_same_pool(
    kit_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    # The leader lock is session state on a pooled connection that goes back to the pool: it
    # must be released there, or no relay of this database would ever lead again.
    first = OutboxRelay(kit_pool, producer, service="kitlead", poll_interval_s=0.1)
    second = OutboxRelay(kit_pool, producer, service="kitlead", poll_interval_s=0.1)
    first_task = asyncio.create_task(first.run())

    async def first_leads() -> bool:
        return first.is_leader

    await eventually(first_leads)
    second_task = asyncio.create_task(second.run())
    try:
        first.stop()
        await asyncio.wait_for(first_task, 10)

        async def second_leads() -> bool:
            return second.is_leader

        await eventually(second_leads)
        held = await kit_pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        )
        assert held == 1  # the second relay's; the first one's connection kept none
    finally:
        second.stop()
        await asyncio.wait_for(second_task, 10)


async def test_the_same_events_delivered_twice_are_applied_once(
    stack: object, types: KitTypes, kit_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    envelopes = [
        wrap(types.ItemAdded(item_id=uuid.uuid4(), n=n), producer="kittest") for n in range(10)
    ]
    for _ in range(2):
        for env in envelopes:
            await producer.send(types.topic, encode(env), key=env.correlation_id.encode())
    await producer.flush()
    name = f"dup-{types.topic}"
    consumer = inbox_consumer(stack, types, kit_pool, producer, name)
    async with running(consumer):

        async def all_seen() -> bool:
            return consumer.stats.applied + consumer.stats.duplicates >= 20

        await eventually(all_seen)
    assert consumer.stats.duplicates == 10
    # A second pass over the whole log under a fresh group id, same inbox name: nothing applies.
    again = inbox_consumer(
        stack, types, kit_pool, producer, name, consumer_options={"group_id": name + "-again"}
    )
    async with running(again):

        async def replayed() -> bool:
            return again.stats.duplicates >= 20

        await eventually(replayed)
    assert again.stats.applied == 0
    assert await applied_count(kit_pool, name) == (10, 10)


async def test_a_batch_mixing_records_applied_before_with_new_ones_applies_the_new_ones_once(
    stack: object, types: KitTypes, kit_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    """A batch records its event ids in the inbox at its end, with its outbox rows; a record
    applied before fails that insert, and the batch is applied again with the inbox first."""
    envelopes = [
        wrap(types.ItemAdded(item_id=uuid.uuid4(), n=n), producer="kittest") for n in range(15)
    ]
    name = f"mixed-{types.topic}"
    for env in envelopes[:10]:
        await producer.send(types.topic, encode(env), key=b"one-key")
    await producer.flush()
    first = inbox_consumer(stack, types, kit_pool, producer, name)
    async with running(first):

        async def ten_applied() -> bool:
            return first.stats.applied >= 10

        await eventually(ten_applied)
    for env in envelopes[10:]:
        await producer.send(types.topic, encode(env), key=b"one-key")
    await producer.flush()
    # the same inbox under a group of its own: the whole partition again, ten of it applied
    again = inbox_consumer(
        stack, types, kit_pool, producer, name, consumer_options={"group_id": name + "-again"}
    )
    async with running(again):

        async def all_seen() -> bool:
            return again.stats.applied + again.stats.duplicates >= 15

        await eventually(all_seen)
    assert (again.stats.applied, again.stats.duplicates) == (5, 10)
    assert again.stats.rechecked >= 1
    rows = await kit_pool.fetch("SELECT n FROM applied WHERE consumer = $1 ORDER BY id", name)
    assert [r["n"] for r in rows] == list(range(15))
    # each event's ItemCounted is in the outbox once: the rolled-back attempt left none
    keys = [str(env.payload["item_id"]).encode() for env in envelopes]
    counted = await kit_pool.fetchval("SELECT count(*) FROM outbox WHERE key = ANY($1)", keys)
    assert counted == 15


@contextlib.asynccontextmanager
async def own_database(stack: Any, prefix: str, max_size: int) -> AsyncIterator[asyncpg.Pool]:
    """A migrated database of the test's own (its relay leads there alone), closed at the end."""
    url = stack.database_url(f"{prefix}_{uuid.uuid4().hex[:8]}")
    await db.ensure_database(url)
    pool = await db.create_pool(url, min_size=1, max_size=max_size)
    try:
        await db.apply_migrations(pool)
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def relay_running(relay: OutboxRelay) -> AsyncIterator[asyncio.Task[None]]:
    """The relay's loop for the block (a test may stop it before the end), then stopped."""
    task = asyncio.create_task(relay.run())
    try:
        yield task
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)


async def test_the_relay_deletes_a_published_batch_with_its_next_read_and_when_it_stops(
    stack: Any, types: KitTypes, producer: AIOKafkaProducer
) -> None:
    service = "kitdelete"
    messages = [types.ItemAdded(item_id=uuid.uuid4(), n=n) for n in range(6)]
    async with own_database(stack, "kit_relay_delete", max_size=3) as pool:

        async def append(batch: list[Any]) -> None:
            async with pool.acquire() as conn, conn.transaction():
                await outbox.append(
                    conn,
                    [(m, wrap(m, producer=service)) for m in batch],
                    channel=outbox.notify_channel(service),
                )

        async def left() -> int:
            n: int = await pool.fetchval("SELECT count(*) FROM outbox")
            return n

        # no poll within the test: the relay reads when woken (or at its first round)
        relay = OutboxRelay(pool, producer, service=service, poll_interval_s=60)
        await append(messages[:3])
        assert await relay.publish_batch() == 3
        assert await left() == 3  # published and acknowledged; deleted with the next read
        await append(messages[3:5])
        assert await relay.publish_batch() == 2  # that read: not the first three again
        assert await left() == 2
        async with relay_running(relay) as task:

            async def caught_up() -> bool:  # its first round deleted the two
                return relay.is_leader and await left() == 0

            await eventually(caught_up)
            await append(messages[5:])  # wakes it: published, and kept until its next read

            async def all_out() -> bool:
                return len(await mine_on_topic()) == 6

            async def mine_on_topic() -> list[int]:
                mine = {str(m.item_id) for m in messages}
                payloads = [
                    decode_envelope(r.value).payload
                    for r in await read_to_end(stack.kafka_bootstrap, types.topic, 3)
                ]
                return [p["n"] for p in payloads if p["item_id"] in mine]

            await eventually(all_out)
            assert await left() == 1
            relay.stop()
            await asyncio.wait_for(task, 10)
            assert await left() == 0  # deleted when the relay stopped
            assert sorted(await mine_on_topic()) == list(range(6))  # each published once


async def test_a_batch_wakes_its_process_s_leading_relay_without_a_notify(
    stack: Any, types: KitTypes, producer: AIOKafkaProducer
) -> None:
    """A consumer whose process's relay leads sends no NOTIFY (at commit it takes a lock for the
    whole server, held through the WAL flush) and wakes the relay itself once it has committed;
    the relay here polls once a minute, so only that wake-up publishes within the test."""
    service = "kitwake"
    channel = outbox.notify_channel(service)
    heard: list[str] = []  # NOTIFY payloads, in commit order
    async with own_database(stack, "kit_wakeup", max_size=4) as pool:
        await pool.execute(CREATE_APPLIED)
        relay = OutboxRelay(pool, producer, service=service, poll_interval_s=60)
        wakeup = outbox.RelayWakeup(service, relay)
        assert wakeup.channel == channel  # no lead in this process yet: a NOTIFY
        async with relay_running(relay) as task:

            async def leads() -> bool:
                return relay.is_leader

            await eventually(leads)
            assert wakeup.channel == ""
            items = [uuid.uuid4() for _ in range(4)]
            for n, item in enumerate(items):
                envelope = wrap(types.ItemAdded(item_id=item, n=n), producer="test")
                await producer.send_and_wait(types.topic, encode(envelope), key=str(item).encode())
            name = f"wakeup-{types.topic}"
            async with (
                pool.acquire() as pooled,
                db.session_state(pooled) as listener,
                running(inbox_consumer(stack, types, pool, producer, name, wakeup=wakeup)),
            ):
                await listener.add_listener(channel, lambda *args: heard.append(args[3]))

                async def counted() -> bool:
                    mine = {str(i) for i in items}
                    topic = types.topic + ".counted"
                    on_topic = await read_to_end(stack.kafka_bootstrap, topic, 3)
                    return len([r for r in on_topic if r.key.decode() in mine]) == len(items)

                await eventually(counted, timeout=20)
                # a marker notified now arrives after any NOTIFY the batches' commits sent
                await pool.execute("SELECT pg_notify($1, 'marker')", channel)

                async def marker_heard() -> bool:
                    await listener.fetchval("SELECT 1")
                    return "marker" in heard

                await eventually(marker_heard)
            assert heard == ["marker"]
            relay.stop()
            await asyncio.wait_for(task, 10)
            assert wakeup.channel == channel  # the lead ended: NOTIFY again


async def test_a_relay_deleting_each_batch_on_its_own_leaves_nothing_once_it_has_published(
    stack: Any, types: KitTypes, producer: AIOKafkaProducer
) -> None:
    """The relay as it was before session 22 (bench.cycle's baseline): each batch deleted by a
    statement of its own, right after Kafka acknowledged it."""
    async with own_database(stack, "kit_relay_own_delete", max_size=2) as pool:
        messages = [types.ItemAdded(item_id=uuid.uuid4(), n=n) for n in range(2)]
        async with pool.acquire() as conn, conn.transaction():
            await outbox.append(conn, [(m, wrap(m, producer="kitown")) for m in messages])
        relay = OutboxRelay(pool, producer, service="kitown", delete_with_next_read=False)
        assert await relay.publish_batch() == 2
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_poison_messages_go_to_the_dlq_and_the_next_message_is_still_processed(
    stack: object, types: KitTypes, kit_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    key = b"same-partition"
    good_before = wrap(types.ItemAdded(item_id=uuid.uuid4(), n=1), producer="kittest")
    cursed = wrap(types.ItemAdded(item_id=uuid.uuid4(), n=13), producer="kittest")
    good_after = wrap(types.ItemAdded(item_id=uuid.uuid4(), n=2), producer="kittest")
    bad_payload = good_before.model_dump(mode="json") | {
        "event_id": str(uuid.uuid4()),
        "payload": {"item_id": "not-a-uuid", "n": "x"},
    }
    unknown_type = good_before.model_dump(mode="json") | {
        "event_id": str(uuid.uuid4()),
        "type": "SomethingNobodyKnows",
    }
    poison = [b"\xff\xfe not json", b'{"event_id": 1}', orjson.dumps(bad_payload)]
    poison.append(orjson.dumps(unknown_type))
    values = [encode(good_before), *poison, encode(cursed), encode(good_after)]
    for value in values:
        await producer.send(types.topic, value, key=key, headers=[("origin", b"test")])
    await producer.flush()
    name = f"poison-{types.topic}"
    consumer = inbox_consumer(stack, types, kit_pool, producer, name, fail_when_n=13)
    async with running(consumer):

        async def settled() -> bool:
            return consumer.stats.dead_lettered >= 5 and consumer.stats.applied >= 2

        await eventually(settled)
        dead = await read_topic(stack.kafka_bootstrap, types.topic + ".dlq", 5)  # type: ignore[attr-defined]
    assert await applied_count(kit_pool, name) == (2, 2)
    assert len(dead) == 5
    assert [r.value for r in dead] == [*poison, encode(cursed)]
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["dlq.source_topic"] == types.topic
        assert headers["dlq.consumer"] == name
        assert headers["origin"] == "test"
        assert headers["dlq.error"]
        assert int(headers["dlq.source_offset"]) >= 0
        assert record.key == key
    reasons = [dict(r.headers)["dlq.reason"] for r in dead]
    assert reasons == [b"undecodable"] * 4 + [b"handler_failed"]
    assert "cursed" in dict(dead[-1].headers)["dlq.error"].decode()
    assert dict(dead[-1].headers)["dlq.attempts"] == b"3"


async def test_a_consumer_killed_mid_batch_loses_nothing_and_applies_nothing_twice(
    stack: object, types: KitTypes, kit_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    total = 300
    for n in range(total):
        envelope = wrap(types.ItemAdded(item_id=uuid.uuid4(), n=n), producer="kittest")
        await producer.send(types.topic, encode(envelope), key=envelope.correlation_id.encode())
    await producer.flush()
    group = f"killed-{types.topic}"
    url = stack.database_url("kit_messaging_kit")  # type: ignore[attr-defined]
    args = [sys.executable, str(WORKER), stack.kafka_bootstrap, url, types.topic, group]  # type: ignore[attr-defined]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}

    worker = subprocess.Popen([*args, "5"], env=env)
    try:

        async def some_applied() -> bool:
            return (await applied_count(kit_pool, group))[0] >= 60

        await eventually(some_applied, timeout=60)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        partial, _ = await applied_count(kit_pool, group)
        assert partial < total, "the worker finished before it could be killed mid-stream"

        worker = subprocess.Popen([*args, "0"], env=env)

        async def all_applied() -> bool:
            return (await applied_count(kit_pool, group))[1] >= total

        await eventually(all_applied, timeout=90)
    finally:
        worker.kill()
        worker.wait(10)
    assert await applied_count(kit_pool, group) == (total, total)


async def test_members_joining_and_leaving_mid_stream_apply_every_event_exactly_once(
    stack: object, types: KitTypes, kit_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    total = 300
    for n in range(total):
        envelope = wrap(types.ItemAdded(item_id=uuid.uuid4(), n=n), producer="kittest")
        await producer.send(types.topic, encode(envelope), key=envelope.correlation_id.encode())
    await producer.flush()
    name = f"rebalance-{types.topic}"
    options = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}

    def member() -> InboxConsumer:
        return inbox_consumer(
            stack,
            types,
            kit_pool,
            producer,
            name,
            batch_max=20,
            sleep_s=0.003,
            consumer_options=options,
        )

    def applied_at_least(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return (await applied_count(kit_pool, name))[0] >= n

        return check

    first, second = member(), member()
    await first.start()
    first_task = asyncio.create_task(first.run())
    await eventually(applied_at_least(40), timeout=60)
    async with running(second):
        await eventually(applied_at_least(120), timeout=60)
        first.stop()
        await asyncio.wait_for(first_task, 15)
        await first.close()
        partial, _ = await applied_count(kit_pool, name)
        assert partial < total, "the stream ended before the first member left"
        await eventually(applied_at_least(total), timeout=90)
    assert await applied_count(kit_pool, name) == (total, total)
    assert first.stats.applied > 0
    assert second.stats.applied > 0
    assert first.stats.applied + second.stats.applied == total


async def test_with_parallel_keys_a_stalled_handler_holds_up_only_its_own_key(
    stack: object, types: KitTypes, kit_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    name = f"parallel-{types.topic}"
    release = asyncio.Event()
    stalled_item = uuid.uuid4()
    record = recording_handler(types, name)

    async def handler(msg: Any, ctx: HandlerContext) -> Any:
        if msg.item_id == stalled_item and msg.n == 0:
            await release.wait()
        return await record(msg, ctx)

    messages = [types.ItemAdded(item_id=stalled_item, n=n) for n in range(3)]
    messages += [types.ItemAdded(item_id=uuid.uuid4(), n=100 + n) for n in range(40)]
    for m in messages:
        envelope = wrap(m, producer="kittest")
        await producer.send(types.topic, encode(envelope), key=m.partition_key().encode())
    await producer.flush()
    consumer = InboxConsumer(
        name=name,
        topics=[types.topic],
        handlers={types.ItemAdded: handler},
        registry=types.registry,
        pool=kit_pool,
        producer=producer,
        bootstrap_servers=stack.kafka_bootstrap,  # type: ignore[attr-defined]
        service="kittest",
        parallel_keys=8,
    )
    async with running(consumer):

        async def others_applied() -> bool:
            return (await applied_count(kit_pool, name))[0] >= 40

        await eventually(others_applied, timeout=30)
        stalled = await kit_pool.fetchval(
            "SELECT count(*) FROM applied WHERE consumer = $1 AND item_id = $2", name, stalled_item
        )
        assert stalled == 0
        release.set()

        async def all_applied() -> bool:
            return (await applied_count(kit_pool, name))[0] >= 43

        await eventually(all_applied, timeout=30)
    rows = await kit_pool.fetch(
        "SELECT n FROM applied WHERE consumer = $1 AND item_id = $2 ORDER BY id", name, stalled_item
    )
    assert [r["n"] for r in rows] == [0, 1, 2]
    assert await applied_count(kit_pool, name) == (43, 43)


async def test_with_batches_in_flight_a_slow_batch_is_overtaken_its_key_and_offsets_wait_for_it(
    stack: object, types: KitTypes, kit_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    """A batch held up (a payment gateway that does not answer) is left to finish while later
    batches are applied; a later record of its key waits for it, and the partition's committed
    offset does not pass it until it has been applied."""
    name = f"flights-{types.topic}"
    release = asyncio.Event()
    slow_started = asyncio.Event()
    record = recording_handler(types, name)
    tp = TopicPartition(types.topic, 0)

    async def handler(msg: Any, ctx: HandlerContext) -> Any:
        if ctx.record.key == b"slow" and msg.n == 0:
            slow_started.set()
            await release.wait()
        return await record(msg, ctx)

    async def send(key: bytes, n: int) -> int:
        env = wrap(types.ItemAdded(item_id=uuid.uuid4(), n=n), producer="kittest")
        meta = await producer.send_and_wait(types.topic, encode(env), key=key, partition=0)
        return int(meta.offset)

    async def applied_ns() -> list[int]:
        rows = await kit_pool.fetch("SELECT n FROM applied WHERE consumer = $1 ORDER BY id", name)
        return [r["n"] for r in rows]

    slow_offset = await send(b"slow", 0)
    consumer = inbox_consumer(
        stack,
        types,
        kit_pool,
        producer,
        name,
        handler=handler,
        batches_in_flight=4,
        overtake_after_ms=50,
        commit_interval_ms=0,
    )
    async with running(consumer):
        try:
            await asyncio.wait_for(slow_started.wait(), 30)
            for n in range(10):
                await send(f"other-{n}".encode(), 100 + n)

            async def others_applied() -> bool:
                return sorted(await applied_ns()) == [100 + n for n in range(10)]

            await eventually(others_applied)
            # a record of the held-up key, in a batch of its own: fetched, overtaken, not applied
            await send(b"slow", 1)

            async def second_overtaken() -> bool:
                return consumer.stats.overtaken >= 2

            await eventually(second_overtaken)
            assert sorted(await applied_ns()) == [100 + n for n in range(10)]
            committed = await consumer.kafka.committed(tp)
            assert committed is None or committed <= slow_offset
            release.set()

            async def all_applied_and_committed() -> bool:
                return (
                    len(await applied_ns()) == 12
                    and (await consumer.kafka.committed(tp) or 0) > slow_offset + 11
                )

            await eventually(all_applied_and_committed)
        finally:
            release.set()  # a failed assertion must not leave close() waiting on the handler
    assert (await applied_ns())[10:] == [0, 1]  # the held-up key's records, in their order
    assert await applied_count(kit_pool, name) == (12, 12)
    assert consumer.stats.dead_lettered == 0


class _RowsUnit:
    """A unit of work the test's handlers fill; its flush writes them in one multi-row insert,
    and fails when item 13 is among them."""

    def __init__(self, conn: Any, consumer: str) -> None:
        self.conn = conn
        self.consumer = consumer
        self.rows: list[tuple[uuid.UUID, uuid.UUID, int]] = []

    async def flush(self) -> None:
        if any(n == 13 for _, _, n in self.rows):
            raise ValueError("item 13 cannot be flushed")
        await self.conn.execute(
            "INSERT INTO applied (consumer, event_id, item_id, n)"
            " SELECT $1, * FROM unnest($2::uuid[], $3::uuid[], $4::int[])",
            self.consumer,
            [r[0] for r in self.rows],
            [r[1] for r in self.rows],
            [r[2] for r in self.rows],
        )


class _WritesUnit(_RowsUnit):
    """The same rows handed to the kit as CTEs of the batch's last statement; the database
    refuses item 13 (its n goes in as NULL). `flushes` counts the writes made on their own."""

    flushes: ClassVar[list[str]] = []

    def writes(self) -> Writes | None:
        if not self.rows:
            return None
        rows, self.rows = self.rows, []
        return Writes(
            """applied_rows AS (
                INSERT INTO applied (consumer, event_id, item_id, n)
                SELECT $1, e, i, NULLIF(n, 13) FROM unnest($2::uuid[], $3::uuid[], $4::int[])
                    AS r(e, i, n)
            )""",
            [self.consumer, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]],
        )

    async def flush(self) -> None:
        if writes := self.writes():
            self.flushes.append(self.consumer)
            await writes.execute(self.conn)


@pytest.mark.parametrize(
    ("unit_class", "refusal"),
    [(_RowsUnit, "item 13 cannot be flushed"), (_WritesUnit, "violates not-null constraint")],
)
async def test_a_unit_of_work_gets_each_fresh_message_once_and_a_failed_flush_dead_letters_it(
    stack: object,
    types: KitTypes,
    kit_pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    unit_class: type[_RowsUnit],
    refusal: str,
) -> None:
    name = f"unit-{types.topic}"
    units: list[list[int]] = []

    async def make_unit(conn: Any, messages: Any) -> _RowsUnit:
        units.append([m.n for m in messages])
        return unit_class(conn, name)

    async def handle(msg: Any, ctx: HandlerContext) -> None:
        ctx.unit.rows.append((ctx.envelope.event_id, msg.item_id, msg.n))

    envelopes = [
        wrap(types.ItemAdded(item_id=uuid.uuid4(), n=n), producer="kittest") for n in range(20)
    ]
    # one partition; the first ten again behind them, as a redelivery would bring them
    for env in [*envelopes, *envelopes[:10]]:
        await producer.send(types.topic, encode(env), key=b"one-key")
    await producer.flush()
    consumer = inbox_consumer(
        stack, types, kit_pool, producer, name, handler=handle, unit=make_unit
    )
    async with running(consumer):

        async def settled() -> bool:
            seen = consumer.stats.applied + consumer.stats.duplicates
            return consumer.stats.dead_lettered == 1 and seen >= 29

        await eventually(settled)
        dead = await read_topic(stack.kafka_bootstrap, types.topic + ".dlq", 1)  # type: ignore[attr-defined]
    rows = await kit_pool.fetch("SELECT n FROM applied WHERE consumer = $1 ORDER BY id", name)
    assert [r["n"] for r in rows] == [n for n in range(20) if n != 13]
    assert (consumer.stats.applied, consumer.stats.duplicates) == (19, 10)
    # A unit gets each message of its batch once, though ten of them arrived twice. A unit with
    # a message applied before never commits (the inbox insert at its end fails): that batch is
    # applied again with the inbox consulted first, so the rows above hold each message once.
    assert all(unit and len(set(unit)) == len(unit) for unit in units)
    assert consumer.stats.rechecked >= 1
    # The batch rolled back, then item 13 alone, three attempts: a handler's failure with nothing
    # applied before is not taken for a redelivery (no attempt twice).
    assert units.count([13]) == 3
    assert [r.value for r in dead] == [encode(envelopes[13])]
    assert refusal in dict(dead[0].headers)["dlq.error"].decode()
    if unit_class is _WritesUnit:
        # written on their own only in transactions that asked the inbox first (those with a
        # fresh record), else in the last statement: a kit that flushed would count 19 or more
        assert _WritesUnit.flushes.count(name) <= consumer.stats.rechecked <= 10


async def test_with_a_unit_and_parallel_keys_the_keys_handlers_run_concurrently_in_one_transaction(
    stack: object, types: KitTypes, kit_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    name = f"unit-parallel-{types.topic}"
    units: list[_RowsUnit] = []
    other_key_ran = asyncio.Event()
    order_per_key: dict[str, list[int]] = {}

    async def make_unit(conn: Any, messages: Any) -> _RowsUnit:
        units.append(_RowsUnit(conn, name))
        return units[-1]

    async def handle(msg: Any, ctx: HandlerContext) -> None:
        key = ctx.record.key.decode()
        order_per_key.setdefault(key, []).append(msg.n)
        if key == "waits":
            # only returns if another key's handler runs meanwhile: they are not one after another
            await asyncio.wait_for(other_key_ran.wait(), 10)
        else:
            other_key_ran.set()
        ctx.unit.rows.append((ctx.envelope.event_id, msg.item_id, msg.n))

    # (no item 13: _RowsUnit refuses it)
    sends = [("waits", n) for n in range(3)] + [(f"k{n % 4}", 100 + n) for n in range(12)]
    envelopes = [
        wrap(types.ItemAdded(item_id=uuid.uuid4(), n=n), producer="kittest") for _, n in sends
    ]
    for (key, _), env in zip(sends, envelopes, strict=True):
        await producer.send(types.topic, encode(env), key=key.encode(), partition=0)
    await producer.flush()
    consumer = inbox_consumer(
        stack, types, kit_pool, producer, name, handler=handle, unit=make_unit, parallel_keys=8
    )
    async with running(consumer):

        async def all_applied() -> bool:
            return consumer.stats.applied >= len(sends)

        await eventually(all_applied)
    assert consumer.stats.dead_lettered == 0
    assert order_per_key["waits"] == [0, 1, 2]  # each key's messages in their order
    for k in range(4):
        assert order_per_key[f"k{k}"] == [100 + n for n in range(12) if n % 4 == k]
    rows = await kit_pool.fetch("SELECT n FROM applied WHERE consumer = $1", name)
    assert sorted(r["n"] for r in rows) == sorted(n for _, n in sends)
    assert len(units) == consumer.stats.batches  # one transaction (and unit) per batch


CLOSED_TRANSPORT = (
    "unable to perform operation on <TCPTransport closed=True reading=False>; the handler is closed"
)


async def closed_transport(*_: object, **__: object) -> Any:
    """What aiokafka's writes raise under uvloop on a connection the broker closed
    (aio-libs/aiokafka#1038)."""
    raise RuntimeError(CLOSED_TRANSPORT)


async def replaced_after(
    stack: object,
    types: KitTypes,
    kit_pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    name: str,
    breaking: Callable[[AIOKafkaConsumer], Awaitable[None]],
) -> None:
    """Five messages applied, `breaking` done to the consumer's aiokafka consumer, four more sent:
    all nine are applied once, by a new aiokafka consumer that replaced the broken one."""
    consumer = inbox_consumer(stack, types, kit_pool, producer, name)
    envelopes = [
        wrap(types.ItemAdded(item_id=uuid.uuid4(), n=n), producer="kittest") for n in range(9)
    ]

    async def send(batch: list[Any]) -> None:
        for env in batch:
            await producer.send(types.topic, encode(env), key=b"k")
        await producer.flush()

    await send(envelopes[:5])
    async with running(consumer):

        async def applied(n: int) -> bool:
            return consumer.stats.applied >= n

        await eventually(lambda: applied(5))
        broken = consumer.kafka
        await breaking(broken)
        await send(envelopes[5:])
        await eventually(lambda: applied(9))
        assert consumer.kafka is not broken
        assert consumer.restarts == 1
    assert await applied_count(kit_pool, name) == (9, 9)


async def test_a_consumer_killed_by_a_closed_connection_under_uvloop_is_replaced_and_goes_on(
    stack: object, types: KitTypes, kit_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    async def coordinator_dies(broken: AIOKafkaConsumer) -> None:
        # what getmany re-raises once aiokafka's coordinator died of that error
        broken.getmany = closed_transport

    await replaced_after(
        stack, types, kit_pool, producer, f"closed-{types.topic}", coordinator_dies
    )


async def test_a_consumer_whose_fetch_routine_died_of_a_closed_connection_is_replaced(
    stack: object, types: KitTypes, kit_pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    """aiokafka only logs the error that ends its fetch routine: the consumer would stay in its
    group holding its partitions while getmany returns nothing, and their records would never be
    applied (a chaos run found inventory so)."""

    async def fetcher_dies(broken: AIOKafkaConsumer) -> None:
        broken._fetcher._proc_fetch_request = closed_transport
        await eventually(lambda: _done(broken._fetcher.error_future))

    await replaced_after(stack, types, kit_pool, producer, f"fetcher-{types.topic}", fetcher_dies)


async def _done(future: Any) -> bool:
    return bool(future.done())


async def test_the_relay_puts_each_row_where_a_send_would_in_row_order_over_full_batches(
    stack: Any, producer: AIOKafkaProducer
) -> None:
    """The relay hands Kafka a record batch per partition, not a send per row. Each record must
    still land on its key's partition (Kafka's default partitioner, as every producer of the kit
    places keys), in the rows' order, once; and rows of one partition over a batch's 256 KiB go
    out in several batches, still in order."""
    topic = f"kit.relay.{uuid.uuid4().hex[:8]}"
    await ensure_topics(stack.kafka_bootstrap, [TopicSpec(topic, "event", 3)])
    keys = [str(uuid.uuid4()).encode() for _ in range(7)]
    # row i: key i % 7; the first key's rows are 60 KiB each, ten of them: over two batches
    rows = [
        (keys[i % 7], (b"%05d:" % i) + b"x" * (60_000 if i % 7 == 0 else 100)) for i in range(70)
    ]
    async with own_database(stack, "kit_relay_batches", max_size=2) as pool:
        await pool.executemany(
            "INSERT INTO outbox (event_id, topic, key, value, event_type, correlation_id)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            [(uuid.uuid4(), topic, key, value, "Row", value[:5].decode()) for key, value in rows],
        )
        relay = OutboxRelay(pool, producer, service="kitbatches", poll_interval_s=60)
        assert await relay.publish_batch() == len(rows)
    records = await read_to_end(stack.kafka_bootstrap, topic, 3)
    assert sorted(r.value for r in records) == sorted(v for _, v in rows)  # each once
    for r in records:
        assert r.partition == key_partition(r.key, 3), r.key
        headers = dict(r.headers)
        assert (headers["event_type"], headers["correlation_id"]) == (b"Row", r.value[:5])
        assert uuid.UUID(headers["event_id"].decode())
    for key in keys:
        sent = [v for k, v in rows if k == key]
        assert [r.value for r in sorted(records, key=lambda r: r.offset) if r.key == key] == sent
