"""Transactional outbox: events commit with the state change; a relay publishes them in batches.

The outbox holds only what is still to be published: the relay deletes the rows Kafka has
acknowledged (with acks=all), and Kafka keeps the events from then on. It deletes a batch's rows
with the statement that reads the next batch (the next wake-up or poll, at most `poll_interval_s`
later), and when it stops. A crash between publishing and deleting may publish a row twice
(consumers dedupe by event id); a row is never lost.

A transaction that writes outbox rows wakes the relay (`RelayWakeup`): in the process, once it
has committed, when this process's relay leads; by NOTIFY otherwise. NOTIFY serialises commits:
PostgreSQL takes one lock for the whole server when a transaction that notified commits, and
holds it through the commit's WAL flush, so every service's commits queued behind each other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from events.envelope import Envelope, encode, headers_of, wrap
from events.kit import db, metrics
from events.kit.db import Conn
from events.kit.logging import get_logger
from events.kit.partitioner import CachedPartitioner
from events.messages import Message

log = get_logger(__name__)


def insert_rows(first: int) -> str:
    """The outbox insert of `outbox_columns`' six arrays, numbered from ${first}: a statement of
    its own, or a CTE of a service's or the inbox's statement."""
    a, b, c, d, e, f = (f"${first + i}" for i in range(6))
    return f"""INSERT INTO outbox (event_id, topic, key, value, event_type, correlation_id)
    SELECT * FROM unnest({a}::uuid[], {b}::text[], {c}::bytea[], {d}::bytea[], {e}::text[],
        {f}::text[])"""


INSERT_OUTBOX = insert_rows(1)
# The same insert and the relay's wake-up in one statement: one round trip per transaction less.
INSERT_OUTBOX_NOTIFY = f"""
WITH inserted AS (
    {insert_rows(1)}
)
SELECT pg_notify($7, '') WHERE $7 <> ''
"""
# Deleted once acknowledged, not marked: an UPDATE wrote every row (its whole event) a second
# time, with new entries in each of its indexes, and left it for a purge an hour later. The rows
# of the last batch are deleted by the statement that reads the next: a round trip per batch less.
# (The statement's snapshot still has them, hence the id filter.)
SELECT_PENDING = """
WITH published AS (DELETE FROM outbox WHERE id = ANY($1::bigint[]))
SELECT id, topic, key, value, event_id, event_type, correlation_id
FROM outbox WHERE id <> ALL($1::bigint[]) ORDER BY id LIMIT $2
"""
DELETE_PUBLISHED = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"
COUNT_PENDING = "SELECT count(*) FROM outbox"
TRY_LEADER_LOCK = "SELECT pg_try_advisory_lock($1)"

RELAY_LOCK = 7_340_002
# What ends the relay's lead (it waits and takes the lock again); anything else is Kafka's.
DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, db.BROKEN_CONNECTION)


def notify_channel(service: str) -> str:
    return f"outbox_{service}"


class RelayWakeup:
    """How a transaction that writes outbox rows gets its relay to publish them at once.

    `channel` is what the transaction passes to pg_notify: '' (no NOTIFY) while this process's
    own relay leads, which `committed()` then wakes in the process; the relay channel otherwise
    (another process's relay leads, or none does yet). A NOTIFY costs every commit that sends
    one a turn at a lock for the whole server, held through that commit's WAL flush (in a
    two-minute step at 500 orders/s, 1,269 commits waited 3 ms or more for it, up to 80 ms).
    A lead lost between the two leaves the rows to the next leader's poll (`poll_interval_s`);
    none is lost."""

    def __init__(self, service: str, relay: OutboxRelay | None = None) -> None:
        self._channel = notify_channel(service)
        self.relay = relay

    @property
    def channel(self) -> str:
        """The NOTIFY channel for a transaction starting now; '' when no NOTIFY is needed."""
        return "" if self.relay is not None and self.relay.is_leader else self._channel

    def committed(self) -> None:
        """A transaction that wrote outbox rows has committed: wake this process's relay."""
        if self.relay is not None:
            self.relay.wake()


def outbox_columns(outgoing: Sequence[tuple[Message, Envelope]]) -> tuple[list[Any], ...]:
    """The outbox rows of these envelopes as six column arrays (event_id, topic, key, value,
    event_type, correlation_id), for `insert_rows`; a statement of a service's own may insert
    them with its state change. The last two are the record's headers beside its event id."""
    return (
        [env.event_id for _, env in outgoing],
        [msg.topic for msg, _ in outgoing],
        [msg.partition_key().encode() for msg, _ in outgoing],
        [encode(env) for _, env in outgoing],
        [env.type for _, env in outgoing],
        [env.correlation_id for _, env in outgoing],
    )


async def append(
    conn: Conn,
    outgoing: Sequence[tuple[Message, Envelope]],
    *,
    channel: str | None = None,
) -> None:
    """Add envelopes to the outbox inside the caller's transaction (one multi-row insert), with
    a NOTIFY on `channel` unless it is empty or None."""
    if not outgoing:
        return
    columns = outbox_columns(outgoing)
    if channel:
        await conn.execute(INSERT_OUTBOX_NOTIFY, *columns, channel)
    else:
        await conn.execute(INSERT_OUTBOX, *columns)


async def emit(conn: Conn, messages: Sequence[Message], *, service: str) -> None:
    """Wrap new messages (no cause: each starts its own correlation) and append them to the outbox
    in the caller's transaction; for state changes made outside a consumer (HTTP, timers)."""
    await append(
        conn,
        [(m, wrap(m, producer=service)) for m in messages],
        channel=notify_channel(service),
    )


class OutboxRelay:
    """Publishes pending outbox rows in id order; one relay per database holds the leader lock."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        *,
        service: str,
        batch_max: int = 500,
        poll_interval_s: float = 0.5,
        delete_with_next_read: bool = True,
    ) -> None:
        self._pool = pool
        # False: each batch deleted by a statement of its own (as before session 22; a baseline)
        self._delete_with_next_read = delete_with_next_read
        self._producer = producer
        self._service = service
        self._batch_max = batch_max
        self._poll = poll_interval_s
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        # published and acknowledged, deleted with the next read (or when the relay stops)
        self._published: list[int] = []
        # each key's partition, as the kit's producers place it
        self._place = CachedPartitioner()
        self.is_leader = False

    def wake(self, *_: Any) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Hold the leader lock on a dedicated connection and publish until stopped."""
        while not self._stopping.is_set():
            try:
                await self._lead()
            except DATABASE_ERRORS as exc:
                self.is_leader = False
                log.warning("outbox relay lost its database connection", error=str(exc))
                await self._sleep(1.0)

    async def _lead(self) -> None:
        # the leader lock and the LISTEN are session state: reset when the lead ends
        async with self._pool.acquire() as pooled, db.session_state(pooled) as lock_conn:
            while not self._stopping.is_set():
                if await lock_conn.fetchval(TRY_LEADER_LOCK, RELAY_LOCK):
                    break
                await self._sleep(self._poll)
            else:
                return
            self.is_leader = True
            channel = notify_channel(self._service)
            await lock_conn.add_listener(channel, self.wake)
            try:
                await self._publish_loop()
                await self._delete_published()
            finally:
                self.is_leader = False

    async def _publish_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                published = await self.publish_batch()
            except DATABASE_ERRORS:
                raise
            except Exception as exc:  # a Kafka error: keep the rows, try again shortly
                log.warning("outbox publish failed; will retry", error=repr(exc))
                await self._sleep(1.0)
                continue
            if published < self._batch_max:
                await self._sleep(self._poll, wakeable=True)

    async def publish_batch(self) -> int:
        """Publish up to one batch of pending rows; return how many were published. The rows of
        the batch before are deleted first, in the same statement; this batch's are deleted by
        the next call (or `_delete_published`). A crash in between publishes them again, which
        consumers skip by event id."""
        async with self._pool.acquire() as pooled, db.discard_if_broken(pooled) as conn:
            rows = await conn.fetch(SELECT_PENDING, self._published, self._batch_max)
            self._published = []
            if not rows:
                metrics.OUTBOX_BACKLOG.labels(self._service).set(0)
                return 0
            await asyncio.gather(*await self._send(rows))
            self._published = [r["id"] for r in rows]
            if not self._delete_with_next_read:
                await self._delete_published(conn)
            backlog = (
                await conn.fetchval(COUNT_PENDING) - len(rows)
                if len(rows) == self._batch_max
                else 0
            )
        metrics.OUTBOX_PUBLISHED.labels(self._service).inc(len(rows))
        metrics.OUTBOX_BACKLOG.labels(self._service).set(backlog)
        return len(rows)

    async def _send(self, rows: Sequence[asyncpg.Record]) -> list[asyncio.Future[Any]]:
        """Hand the rows to the producer as one record batch per partition, in their order; the
        futures of Kafka's acknowledgements. Cheaper than a `send` per row (its future, its
        lookups of the topic's partitions, its append): 10.6-14.9 against 17.3-22.0 µs of CPU a
        record in batches of 200, 51-62 against 99-123 µs in batches of 10
        (`python -m bench.relay_send`). Each key lands where `send` would put it."""
        known: dict[str, list[int]] = {}
        batches: dict[tuple[str, int], BatchBuilder] = {}
        futures = []
        for row in rows:
            topic, key = row["topic"], row["key"]
            partitions = known.get(topic)
            if partitions is None:  # the producer's metadata, as `send` reads it for each row
                partitions = known[topic] = sorted(await self._producer.partitions_for(topic))
            partition = self._place(key, partitions, partitions)
            headers = headers_of(row["event_id"], row["event_type"], row["correlation_id"])
            value = row["value"]
            batch = batches.get((topic, partition))
            if batch is not None:
                if batch.append(key=key, value=value, timestamp=None, headers=headers):
                    continue
                # full: sent now; the partition's next batch waits until this one is drained
                futures.append(await self._send_batch(batch, topic, partition))
            batch = batches[topic, partition] = self._producer.create_batch()
            batch.append(key=key, value=value, timestamp=None, headers=headers)  # takes any one
        for (topic, partition), batch in batches.items():
            futures.append(await self._send_batch(batch, topic, partition))
        return futures

    async def _send_batch(
        self, batch: BatchBuilder, topic: str, partition: int
    ) -> asyncio.Future[Any]:
        batch.close()
        future: asyncio.Future[Any] = await self._producer.send_batch(
            batch, topic, partition=partition
        )
        return future

    async def _delete_published(self, conn: Conn | None = None) -> None:
        """Delete what was published and acknowledged; nothing is left to the next leader to
        publish again."""
        if self._published:
            await (conn or self._pool).execute(DELETE_PUBLISHED, self._published)
            self._published = []

    async def _sleep(self, seconds: float, *, wakeable: bool = False) -> None:
        waiter = self._wake if wakeable else self._stopping
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), seconds)
