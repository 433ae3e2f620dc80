"""Message types, handlers and a worker process used by the messaging-kit integration tests.

Run as a script it is a consumer process that a test can SIGKILL mid-batch:
    python kit_support.py BOOTSTRAP DATABASE_URL TOPIC GROUP SLEEP_MS
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import asyncpg

from events.kit.inbox import Handler, HandlerContext, InboxConsumer
from events.messages import Event, Message, Registry
from events.topics import TopicSpec

CREATE_APPLIED = """
CREATE TABLE IF NOT EXISTS applied (
    id        BIGSERIAL PRIMARY KEY,
    consumer  TEXT NOT NULL,
    event_id  UUID NOT NULL,
    item_id   UUID NOT NULL,
    n         INTEGER NOT NULL
)
"""
INSERT_APPLIED = "INSERT INTO applied (consumer, event_id, item_id, n) VALUES ($1, $2, $3, $4)"


@dataclass(frozen=True)
class KitTypes:
    """A pair of message types on a topic of the test's own, and the registry that knows them."""

    topic: str
    ItemAdded: Any
    ItemCounted: Any
    registry: Registry

    @property
    def specs(self) -> list[TopicSpec]:
        return [
            TopicSpec(self.topic, "event", 3),
            TopicSpec(self.topic + ".counted", "event", 3),
            TopicSpec(self.topic + ".dlq", "dlq", 1, consumed=False),
        ]


def kit_types(topic: str) -> KitTypes:
    counted_topic = topic + ".counted"

    class ItemAdded(Event):
        topic: ClassVar[str] = ""
        item_id: uuid.UUID
        n: int

        def partition_key(self) -> str:
            return str(self.item_id)

    class ItemCounted(Event):
        topic: ClassVar[str] = ""
        item_id: uuid.UUID
        n: int

        def partition_key(self) -> str:
            return str(self.item_id)

    ItemAdded.topic = topic
    ItemCounted.topic = counted_topic
    return KitTypes(topic, ItemAdded, ItemCounted, Registry(ItemAdded, ItemCounted))


def recording_handler(
    types: KitTypes, consumer: str, *, sleep_s: float = 0.0, fail_when_n: int | None = None
) -> Handler:
    """Records each message in `applied` and emits an ItemCounted; raises for n == fail_when_n."""

    async def handle(msg: Event, ctx: HandlerContext) -> Sequence[Message]:
        n: int = msg.n  # type: ignore[attr-defined]
        item_id: uuid.UUID = msg.item_id  # type: ignore[attr-defined]
        if fail_when_n is not None and n == fail_when_n:
            raise ValueError(f"item {n} is cursed")
        if sleep_s:
            await asyncio.sleep(sleep_s)
        await ctx.conn.execute(INSERT_APPLIED, consumer, ctx.envelope.event_id, item_id, n)
        return [types.ItemCounted(item_id=item_id, n=n)]

    return handle


@contextlib.asynccontextmanager
async def running(consumer: InboxConsumer) -> AsyncIterator[InboxConsumer]:
    """Start a consumer's loop for the block, then stop and close it."""
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 15)
        await consumer.close()


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, timeout: float = 30.0, interval: float = 0.1
) -> None:
    """Wait until the condition holds, or fail when the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        if await condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def _worker(bootstrap: str, url: str, topic: str, group: str, sleep_ms: int) -> None:
    from events.kit.inbox import InboxConsumer
    from events.kit.producer import make_producer

    types = kit_types(topic)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    producer = make_producer(bootstrap, client_id="kit-worker")
    await producer.start()
    consumer = InboxConsumer(
        name=group,
        topics=[topic],
        handlers={types.ItemAdded: recording_handler(types, group, sleep_s=sleep_ms / 1000)},
        registry=types.registry,
        pool=pool,
        producer=producer,
        bootstrap_servers=bootstrap,
        service="kitworker",
        batch_max=50,
        consumer_options={"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
    )
    await consumer.start()
    print("worker ready", flush=True)
    await consumer.run()


if __name__ == "__main__":
    b, u, t, g, s = sys.argv[1:6]
    asyncio.run(_worker(b, u, t, g, int(s)))
