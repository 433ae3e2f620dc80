"""Idempotent consumer: batches in, one database transaction per batch, offsets committed after it.

For each batch: decode every record (undecodable ones go to the DLQ), run the handlers and record
the batch's event ids in the inbox table in ONE transaction, append whatever the handlers emit to
the outbox in that same transaction, and only then commit the offsets. A crash before the
transaction commits leaves no effect; a crash after it means a redelivery, which the inbox skips.
The inbox rows go in last, with the unit's write and the outbox rows in one statement; a batch
holding a record applied before fails there and is applied again with the inbox asked first (see
`InboxConsumer._transaction`).

Offsets are committed at most every `commit_interval_ms` (and when partitions are revoked, when the
consumer closes, and at once after a batch that dead-lettered something), never before the batch's
transaction: at small batches an OffsetCommit per batch was one broker request per message. A
crash then redelivers up to that interval's records, which the inbox skips.

A consumer may give its handlers a unit of work per transaction (`unit`): made from the batch's
messages (to load and lock what they touch in one query), used by every handler, and written in the
batch's last statement (`Writes`) or flushed before it, so a batch costs a few statements rather
than a few per message.

If a handler raises, the batch is rolled back and its records are applied one by one, each retried
with backoff; a record that still fails goes to the DLQ and the consumer carries on. Database and
network faults are not the message's fault: those are retried without limit and never dead-lettered.

A consumer whose handlers wait on slow I/O (payment's gateway) may keep more than one batch in
flight (`batches_in_flight`): a batch still applying after `overtake_after_ms` is left to finish
while the consumer fetches and applies the next ones. A batch whose records share a key with a batch
still in flight waits for it first, so each key's records are still applied in their order; and a
partition's offsets are committed only as far as every batch before them has been applied. Below
that patience nothing changes: one batch at a time, each as large as what arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from events.envelope import DecodeError, Header, decode, wrap
from events.kit import db, metrics, outbox
from events.kit.db import Conn
from events.kit.dlq import send_to_dlq
from events.kit.logging import get_logger, message_context
from events.messages import Message, Registry

log = get_logger(__name__)
T = TypeVar("T")

INSERT_INBOX = """
INSERT INTO inbox (consumer, event_id, topic, partition, "offset")
SELECT $1, * FROM unnest($2::uuid[], $3::text[], $4::int[], $5::bigint[])
ON CONFLICT DO NOTHING
RETURNING event_id
"""


@functools.lru_cache(maxsize=64)
def last_statement(unit_writes: str = "", unit_params: int = 0) -> str:
    """The statement that ends a batch's transaction: the unit's writes (CTEs numbering their
    parameters from $1, see `Writes`), the batch's event ids in the inbox, its outbox rows and
    the relay's wake-up. An event id recorded before (a redelivery) fails it: the batch is then
    applied again with the inbox consulted first (INSERT_INBOX)."""
    p = [f"${unit_params + i}" for i in range(1, 13)]
    unit = f"{unit_writes.strip()},\n" if unit_writes else ""
    return f"""
WITH {unit}recorded AS (
    INSERT INTO inbox (consumer, event_id, topic, partition, "offset")
    SELECT {p[0]}, * FROM unnest({p[1]}::uuid[], {p[2]}::text[], {p[3]}::int[], {p[4]}::bigint[])
), published AS (
    {outbox.insert_rows(unit_params + 6)}
)
SELECT pg_notify({p[11]}, '') WHERE cardinality({p[5]}::uuid[]) > 0 AND {p[11]} <> ''
"""


ANY_RECORDED = """
SELECT EXISTS (SELECT FROM inbox WHERE consumer = $1 AND event_id = ANY($2::uuid[]))
"""


class Unit(Protocol):
    """A transaction's unit of work, shared by the handlers of one batch.

    A unit may also have `writes() -> Writes | None`: what `flush` would write, handed over (and
    forgotten) as CTEs that the kit puts in the batch's last statement, before the inbox and
    outbox rows, so the write costs no round trip of its own. A unit without it is flushed."""

    async def flush(self) -> None:
        """Write what the handlers changed (called once, after the last handler)."""


@dataclass(frozen=True)
class Writes:
    """A unit's writes as CTEs for the batch's last statement: `ctes` is a comma-separated list
    of `name AS (INSERT|UPDATE ...)`, its parameters numbered from $1, and `args` their values.
    The CTEs see the transaction as it was before the statement, as each other's effects are
    not visible to them (PostgreSQL's rule for data-modifying WITH)."""

    ctes: str
    args: Sequence[Any]

    async def execute(self, conn: Conn) -> None:
        """The writes as a statement of their own (a unit's flush)."""
        await conn.execute(f"WITH {self.ctes} SELECT", *self.args)


UnitFactory = Callable[[Conn, Sequence[Message]], Awaitable[Unit]]


@dataclass(frozen=True)
class HandlerContext:
    """What a handler may use: the open transaction's connection, the message's envelope, and the
    batch's unit of work when the consumer has one."""

    conn: Conn
    envelope: Header
    record: ConsumerRecord
    unit: Any = None


Handler = Callable[[Any, HandlerContext], Awaitable[Sequence[Message] | None]]
Handlers = Mapping[type[Message], Handler]


class HandlerFailed(Exception):
    def __init__(self, item: _Item, cause: BaseException) -> None:
        super().__init__(f"{item.envelope.type} failed: {cause!r}")
        self.item = item
        self.cause = cause


@dataclass
class _Item:
    record: ConsumerRecord
    envelope: Header
    message: Message
    handler: Handler


@dataclass
class _Flight:
    """A batch being applied (or applied and not yet landed): the offsets it completes, its keys,
    and its outcome (whether it dead-lettered anything)."""

    offsets: dict[TopicPartition, int]
    keys: frozenset[bytes | None]
    outcome: asyncio.Future[bool]

    def shares_keys_with(self, keys: frozenset[bytes | None]) -> bool:
        # a record without a key may be any key's: it is ordered against everything
        return None in keys or None in self.keys or not self.keys.isdisjoint(keys)

    @property
    def failure(self) -> BaseException | None:
        if not self.outcome.done():
            return None
        if self.outcome.cancelled():
            return EarlierBatchFailed("the batch was cancelled before it was applied")
        return self.outcome.exception()


class EarlierBatchFailed(Exception):
    """A batch was not applied: a batch before it with the same keys failed (or it was
    cancelled)."""


@dataclass
class ConsumerStats:
    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    batches: int = 0
    commits_failed: int = 0
    overtaken: int = 0
    rechecked: int = 0
    last_commit: dict[TopicPartition, int] = field(default_factory=dict)


def closed_transport(exc: BaseException) -> bool:
    """uvloop's error for a write to a closed connection (asyncio's own loop raises OSError)."""
    return isinstance(exc, RuntimeError) and "the handler is closed" in str(exc)


def is_infrastructure_error(exc: BaseException) -> bool:
    """Faults of the database or network, which retrying fixes; never the message's fault."""
    return isinstance(
        exc,
        OSError
        | asyncpg.InterfaceError
        | db.BROKEN_CONNECTION
        | asyncpg.PostgresConnectionError
        | asyncpg.SerializationError
        | asyncpg.DeadlockDetectedError
        | asyncpg.CannotConnectNowError
        | asyncpg.AdminShutdownError
        | asyncpg.TooManyConnectionsError
        | TimeoutError,
    )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: InboxConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Let the batches in flight finish and commit before the partitions move on.
        async with self._owner._batch_lock:
            await self._owner._drain()
            await self._owner.flush_commits()
            log.info("partitions revoked", consumer=self._owner.name, partitions=len(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned", consumer=self._owner.name, partitions=len(assigned))


class InboxConsumer:
    """One consumer group member applying typed messages through handlers, exactly once."""

    def __init__(
        self,
        *,
        name: str,
        topics: Sequence[str],
        handlers: Handlers,
        registry: Registry,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        bootstrap_servers: str,
        service: str,
        batch_max: int = 500,
        poll_ms: int = 200,
        max_attempts: int = 3,
        backoff_ms: int = 100,
        parallel_keys: int = 1,
        commit_interval_ms: int = 0,
        batches_in_flight: int = 1,
        overtake_after_ms: int = 100,
        consumer_options: Mapping[str, Any] | None = None,
        unit: UnitFactory | None = None,
        inbox_first: bool = False,
        wakeup: outbox.RelayWakeup | None = None,
    ) -> None:
        self.name = name
        self.topics = list(topics)
        self._handlers = dict(handlers)
        self._registry = registry
        self._pool = pool
        self._producer = producer
        self._service = service
        self._batch_max = batch_max
        self._poll_ms = poll_ms
        self._max_attempts = max_attempts
        self._backoff_s = backoff_ms / 1000
        self._parallel_keys = parallel_keys
        self._unit_factory = unit
        self._inbox_first = inbox_first
        self._batch_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        # NOTIFY, or wake this process's relay after the commit (see outbox.RelayWakeup)
        self._wakeup = wakeup or outbox.RelayWakeup(service)
        self._last_lag_update = 0.0
        self._commit_interval_s = commit_interval_ms / 1000
        self._uncommitted: dict[TopicPartition, int] = {}
        self._last_commit_at = 0.0
        self._max_in_flight = batches_in_flight
        self._overtake_after_s = overtake_after_ms / 1000
        self._flights: list[_Flight] = []
        self.stats = ConsumerStats()
        options: dict[str, Any] = {
            "group_id": name,
            "client_id": f"{service}-{name}",
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "isolation_level": "read_committed",
            "max_poll_records": batch_max,
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 2_000,
            "max_poll_interval_ms": 300_000,
        }
        options.update(consumer_options or {})
        self._options = {"bootstrap_servers": bootstrap_servers, **options}
        self._consumer = AIOKafkaConsumer(**self._options)
        self.restarts = 0

    @property
    def kafka(self) -> AIOKafkaConsumer:
        return self._consumer

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe(self.topics, listener=_Rebalance(self))

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        self._stopping.set()
        async with self._batch_lock:
            await self._drain()
            with contextlib.suppress(KafkaError):
                await self.flush_commits()
            await self._consumer.stop()

    async def run(self) -> None:
        """Consume until stop(); call start() first."""
        while not self._stopping.is_set():
            try:
                await self._poll_once()
            except RuntimeError as exc:
                if not closed_transport(exc) or self._stopping.is_set():
                    raise
                await self._start_again(exc)
                continue
            died = self._fetcher_died()
            if died is not None and not self._stopping.is_set():
                await self._start_again(died)

    def _fetcher_died(self) -> BaseException | None:
        """What ended aiokafka's background fetch routine, if an error did.

        The same closed-transport error (aio-libs/aiokafka#1038) can end the routine that fetches
        for the consumer rather than its coordinator. aiokafka only logs it ("Unexpected error in
        fetcher routine"): the consumer stays in its group, heartbeating, holding its partitions,
        and getmany returns nothing from then on. A chaos run found inventory so, its partitions'
        commands never applied.
        """
        fetcher = getattr(self._consumer, "_fetcher", None)
        routine = getattr(fetcher, "error_future", None)
        if routine is None or not routine.done() or routine.cancelled():
            return None
        error: BaseException | None = routine.exception()
        return error

    async def _poll_once(self) -> None:
        if self._max_in_flight > 1:
            await self._make_room()
        batch = await self._consumer.getmany(timeout_ms=self._poll_ms, max_records=self._batch_max)
        if self._stopping.is_set():
            return
        if batch and self._max_in_flight > 1:
            await self._apply_in_flight(batch)
            await self._land_and_commit()
        elif batch:
            async with self._batch_lock:
                await self.process(batch)
        elif self._uncommitted or self._flights:
            await self._land_and_commit(idle=True)
        await self._update_lag()

    async def _apply_in_flight(self, batch: Mapping[TopicPartition, list[ConsumerRecord]]) -> None:
        """Apply a batch in this poll loop, as with one batch at a time. If it is still applying
        after the overtake time, a successor loop polls and applies the next batches meanwhile,
        until this one is done (a hand-off only then: the batch's own task cost every batch a
        trip through the event loop each way, which a loaded loop made dear). A batch that shares
        a key with one in flight is applied in a task of its own once that one is done."""
        keys = frozenset(r.key for recs in batch.values() for r in recs)
        offsets = _next_offsets(batch)
        before = [f for f in self._flights if f.shares_keys_with(keys)]
        if before:
            task = asyncio.create_task(self._after(before, batch), name=f"{self.name}-batch")
            self._flights.append(_Flight(offsets, keys, task))
            await asyncio.wait([task], timeout=self._overtake_after_s)
            if not task.done():
                self._overtaken()
            return
        outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._flights.append(_Flight(offsets, keys, outcome))
        successor: asyncio.Task[None] | None = None

        def overtake() -> None:
            nonlocal successor
            self._overtaken()
            successor = asyncio.create_task(self._poll_until(outcome), name=f"{self.name}-poll")

        timer = asyncio.get_running_loop().call_later(self._overtake_after_s, overtake)
        try:
            outcome.set_result(await self._apply_batch(batch))
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                outcome.cancel()
            else:
                outcome.set_exception(exc)
            if successor is not None:
                successor.cancel()
                with contextlib.suppress(BaseException):
                    await successor
            raise
        finally:
            timer.cancel()
        if successor is not None:
            await successor

    async def _poll_until(self, outcome: asyncio.Future[bool]) -> None:
        """Poll and apply batches while an overtaken batch is still applying."""
        while not outcome.done() and not self._stopping.is_set():
            await self._poll_once()

    def _overtaken(self) -> None:
        self.stats.overtaken += 1
        metrics.OVERTAKEN.labels(self.name).inc()

    async def _after(
        self, before: list[_Flight], batch: Mapping[TopicPartition, list[ConsumerRecord]]
    ) -> bool:
        await asyncio.wait([f.outcome for f in before])
        if any(f.failure is not None for f in before):
            raise EarlierBatchFailed("a batch before this one with the same keys failed")
        return await self._apply_batch(batch)

    async def _make_room(self) -> None:
        """Wait while as many batches as allowed are still applying (those applied but waiting
        for an earlier one to land hold only their offsets); raise the first that failed."""
        await self._land_and_commit()
        while len(running := [f.outcome for f in self._flights if not f.outcome.done()]) >= (
            self._max_in_flight
        ):
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            await self._land_and_commit()

    async def _land_and_commit(self, *, idle: bool = False) -> None:
        """Land what finished; commit when due, at once after a dead letter, or when idle."""
        async with self._batch_lock:
            dead_lettered = self._land()
            if dead_lettered or idle or self._commit_due():
                await self.flush_commits()

    def _land(self) -> bool:
        """Take the offsets of the batches that finished into those to commit, each partition's in
        order: a batch lands once every batch before it on its partitions has. Raises the error
        of the first batch that failed (it stays, so nothing after it on its partitions lands).
        Whether a landed batch dead-lettered something."""
        blocked: set[TopicPartition] = set()
        waiting: list[_Flight] = []
        dead_lettered = False
        for flight in self._flights:
            landing = flight.outcome.done() and flight.failure is None
            if landing and blocked.isdisjoint(flight.offsets):
                self._uncommitted.update(flight.offsets)
                dead_lettered |= flight.outcome.result()
            else:
                blocked.update(flight.offsets)
                waiting.append(flight)
        self._flights = waiting
        for flight in waiting:
            if flight.failure is not None:
                raise flight.failure
        return dead_lettered

    async def _drain(self) -> None:
        """Let every batch in flight finish and take what landed; a failed one is left for the
        run loop to raise (its offsets, and those after it, are not committed)."""
        if not self._flights:
            return
        await asyncio.wait([f.outcome for f in self._flights])
        with contextlib.suppress(Exception):
            self._land()

    def _commit_due(self) -> bool:
        return time.monotonic() - self._last_commit_at >= self._commit_interval_s

    async def _start_again(self, exc: BaseException) -> None:
        """Replace a consumer whose background routine died of a closed connection.

        Under uvloop, aiokafka's write to a connection the broker (or a network fault) closed
        raises RuntimeError instead of the OSError it handles (aio-libs/aiokafka#1038); its group
        coordinator then dies and every getmany re-raises, or its fetch routine dies and getmany
        returns nothing (`_fetcher_died`). What was applied but not committed is read again by
        whoever gets the partitions, and the inbox skips it.
        """
        self.restarts += 1
        log.warning(
            "kafka consumer lost to a closed connection; starting a new one", error=repr(exc)
        )
        async with self._batch_lock:
            await self._drain()
        self._flights.clear()
        self._uncommitted.clear()
        with contextlib.suppress(Exception):
            await self._consumer.stop()
        self._consumer = AIOKafkaConsumer(**self._options)
        await asyncio.sleep(self._backoff_s or 0.05)
        await self.start()

    async def process(self, batch: Mapping[TopicPartition, list[ConsumerRecord]]) -> None:
        """Apply a batch, then commit its offsets when due."""
        dead_lettered = await self._apply_batch(batch)
        self._uncommitted.update(_next_offsets(batch))
        if dead_lettered or self._commit_due():
            await self.flush_commits()

    async def _apply_batch(self, batch: Mapping[TopicPartition, list[ConsumerRecord]]) -> bool:
        """Decode and apply a batch; whether it dead-lettered anything."""
        started = time.perf_counter()
        dead_lettered_before = self.stats.dead_lettered
        records = [r for recs in batch.values() for r in recs]
        self.stats.consumed += len(records)
        self.stats.batches += 1
        metrics.BATCH_SIZE.labels(self.name).observe(len(records))
        for tp, recs in batch.items():
            metrics.CONSUMED.labels(self.name, tp.topic).inc(len(recs))
        items = await self._decode(records)
        if items:
            await self._apply(items)
        metrics.HANDLER_SECONDS.labels(self.name).observe(
            (time.perf_counter() - started) / max(1, len(records))
        )
        return self.stats.dead_lettered != dead_lettered_before

    async def flush_commits(self) -> None:
        """Commit the offsets of every batch applied since the last commit."""
        if not self._uncommitted:
            return
        offsets, self._uncommitted = self._uncommitted, {}
        self._last_commit_at = time.monotonic()
        await self._commit(offsets)

    async def _decode(self, records: list[ConsumerRecord]) -> list[_Item]:
        items: list[_Item] = []
        for record in records:
            try:
                envelope, message = decode(record.value, self._registry)
            except DecodeError as exc:
                await self._dead_letter(record, "undecodable", str(exc), attempts=1)
                continue
            handler = self._handlers.get(type(message))
            if handler is None:
                self.stats.ignored += 1
                continue
            items.append(_Item(record, envelope, message, handler))
        return items

    async def _apply(self, items: list[_Item]) -> None:
        """Apply in one transaction. With parallel_keys > 1 the handlers of different record keys
        run concurrently, so that a slow one (a payment gateway call) delays only its own key: in
        the one transaction when the consumer has a unit of work (its handlers do no I/O on the
        connection; the unit does it), otherwise in a transaction per key."""
        if self._parallel_keys > 1 and len(items) > 1 and self._unit_factory is None:
            await self._per_key(items, self._apply_together)
        else:
            await self._apply_together(items)

    async def _per_key(
        self, items: list[_Item], work: Callable[[list[_Item]], Awaitable[None]]
    ) -> None:
        """`work` on each record key's items, the keys concurrently (at most parallel_keys at a
        time); every key has finished before the first failure is raised."""
        groups: dict[bytes | None, list[_Item]] = {}
        for item in items:
            groups.setdefault(item.record.key, []).append(item)
        gate = asyncio.Semaphore(self._parallel_keys)

        async def one_key(group: list[_Item]) -> None:
            async with gate:
                await work(group)

        results = await asyncio.gather(
            *(one_key(g) for g in groups.values()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _apply_together(self, items: list[_Item]) -> None:
        try:
            await self._retrying_infrastructure(lambda: self._transaction(items))
            return
        except HandlerFailed as exc:
            if len(items) > 1:
                log.info(
                    "batch rolled back; applying its records one by one",
                    consumer=self.name,
                    error=str(exc),
                )
        for item in items:
            await self._apply_one(item)

    async def _apply_one(self, item: _Item) -> None:
        error: HandlerFailed | None = None
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self._retrying_infrastructure(lambda: self._transaction([item]))
                return
            except HandlerFailed as exc:
                error = exc
                metrics.FAILED.labels(self.name, item.envelope.type).inc()
                with message_context(functools.partial(_ids, item)):
                    log.warning("handler failed", attempt=attempt, error=repr(exc.cause))
                if attempt < self._max_attempts:
                    await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
        assert error is not None
        await self._dead_letter(
            item.record, "handler_failed", repr(error.cause), attempts=self._max_attempts
        )

    async def _transaction(self, items: list[_Item]) -> None:
        """Apply items in one transaction. Their event ids are recorded in the inbox at its end,
        in one statement with the outbox rows, as if none had been applied before: a redelivery is
        rare, and asking the inbox first cost every batch a round trip. If one had been (that
        insert fails, or a handler failed and the inbox has one of them), the transaction is rolled
        back and the batch applied again with the inbox consulted first. A handler may so run for
        a message applied before, in a transaction that is then rolled back: what it does outside
        the database must be idempotent, as it must be for a crash before the commit."""
        if self._inbox_first:
            await self._in_transaction(items, inbox_first=True)
            return
        try:
            await self._in_transaction(items, inbox_first=False)
            return
        except asyncpg.UniqueViolationError as exc:
            if exc.table_name != "inbox":
                raise
        except HandlerFailed:
            if not await self._any_recorded(items):
                raise
        self.stats.rechecked += 1
        metrics.RECHECKED.labels(self.name).inc()
        await self._in_transaction(items, inbox_first=True)

    async def _any_recorded(self, items: list[_Item]) -> bool:
        ids = [i.envelope.event_id for i in items]
        return bool(await self._pool.fetchval(ANY_RECORDED, self.name, ids))

    async def _in_transaction(self, items: list[_Item], *, inbox_first: bool) -> None:
        async with (
            self._pool.acquire() as pooled,
            # a connection the pool gave back broken is closed; the retry takes another
            db.discard_if_broken(pooled) as conn,
            conn.transaction(),
        ):
            todo = await self._fresh(conn, items) if inbox_first else _first_of_each(items)
            unit = None
            if self._unit_factory is not None and todo:
                # the unit's own failure is the batch's: blamed on its first record
                unit = await _blamed(todo[0], self._unit_factory(conn, [i.message for i in todo]))
            emitted = await self._handle(conn, todo, unit)
            outgoing = [
                (message, wrap(message, producer=self._service, causation=item.envelope))
                for item in todo
                for message in emitted[id(item)]
            ]
            writes = None
            if unit is not None:
                take = getattr(unit, "writes", None)
                if take is None or inbox_first:
                    await _blamed(todo[0], unit.flush())
                else:
                    writes = await _blamed(todo[0], _call(take))
            channel = self._wakeup.channel
            if inbox_first:
                await outbox.append(conn, outgoing, channel=channel)
            else:
                await self._record(conn, todo, outgoing, writes, channel)
        if outgoing:
            self._wakeup.committed()
        duplicates = len(items) - len(todo)
        self.stats.applied += len(todo)
        self.stats.duplicates += duplicates
        if duplicates:
            metrics.DUPLICATES.labels(self.name).inc(duplicates)
        for item in todo:
            metrics.APPLIED.labels(self.name, item.envelope.type).inc()

    async def _record(
        self,
        conn: Conn,
        todo: list[_Item],
        outgoing: list[tuple[Message, Any]],
        writes: Writes | None,
        channel: str,
    ) -> None:
        """The batch's last statement: the unit's writes, its inbox and outbox rows, and a
        NOTIFY on `channel` when it is not empty and there are outbox rows."""
        args = [
            *(writes.args if writes else ()),
            *self._inbox_columns(todo),
            *outbox.outbox_columns(outgoing),
            channel,
        ]
        sql = last_statement(writes.ctes, len(writes.args)) if writes else last_statement()
        try:
            await conn.execute(sql, *args)
        except asyncpg.UniqueViolationError as exc:
            if exc.table_name == "inbox" or writes is None:
                raise
            raise HandlerFailed(todo[0], exc) from exc
        except Exception as exc:
            # the unit's write failing is its batch's, as its flush would have been
            if writes is None or is_infrastructure_error(exc):
                raise
            raise HandlerFailed(todo[0], exc) from exc

    def _inbox_columns(self, items: list[_Item]) -> tuple[Any, ...]:
        return (
            self.name,
            [i.envelope.event_id for i in items],
            [i.record.topic for i in items],
            [i.record.partition for i in items],
            [i.record.offset for i in items],
        )

    async def _fresh(self, conn: Conn, items: list[_Item]) -> list[_Item]:
        """Record the items' event ids in the inbox; the items not recorded before, each once."""
        fresh = {r["event_id"] for r in await conn.fetch(INSERT_INBOX, *self._inbox_columns(items))}
        todo: list[_Item] = []
        for item in items:
            if item.envelope.event_id in fresh:
                fresh.discard(item.envelope.event_id)
                todo.append(item)
        return todo

    async def _handle(
        self, conn: Conn, items: list[_Item], unit: Unit | None
    ) -> dict[int, Sequence[Message]]:
        """Each item's handler, in order; with a unit and parallel_keys > 1, the items of
        different record keys concurrently (each key's in order). What each item emitted."""
        emitted: dict[int, Sequence[Message]] = {}

        async def run(group: list[_Item]) -> None:
            for item in group:
                with message_context(functools.partial(_ids, item)):
                    context = HandlerContext(conn, item.envelope, item.record, unit)
                    answer = await _blamed(item, item.handler(item.message, context))
                emitted[id(item)] = answer or ()

        if unit is not None and self._parallel_keys > 1 and len(items) > 1:
            await self._per_key(items, run)
        else:
            await run(items)
        return emitted

    async def _retrying_infrastructure(self, attempt: Callable[[], Awaitable[None]]) -> None:
        delay = self._backoff_s or 0.05
        while True:
            try:
                await attempt()
                return
            except HandlerFailed:
                raise
            except Exception as exc:
                if not is_infrastructure_error(exc) or self._stopping.is_set():
                    raise
                log.warning("database unavailable; retrying the batch", error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _dead_letter(
        self, record: ConsumerRecord, reason: str, error: str, attempts: int
    ) -> None:
        while True:
            try:
                await send_to_dlq(
                    self._producer,
                    record,
                    consumer=self.name,
                    reason=reason,
                    error=error,
                    attempts=attempts,
                )
                break
            except KafkaError as exc:
                if self._stopping.is_set():
                    raise
                log.warning("dead-letter publish failed; retrying", error=repr(exc))
                await asyncio.sleep(1.0)
        self.stats.dead_lettered += 1
        metrics.DEAD_LETTERED.labels(self.name, record.topic).inc()
        log.error(
            "record dead-lettered",
            consumer=self.name,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
            error=error[:500],
        )

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assigned = self._consumer.assignment()
        mine = {tp: off for tp, off in offsets.items() if tp in assigned}
        if not mine:
            return
        try:
            await self._consumer.commit(mine)
            self.stats.last_commit.update(mine)
        except CommitFailedError as exc:
            # The group rebalanced: the new owner re-reads these records and the inbox skips them.
            self.stats.commits_failed += 1
            log.warning("offset commit refused after a rebalance", error=str(exc))

    async def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag_update < 1.0:
            return
        self._last_lag_update = now
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            with contextlib.suppress(Exception):
                position = await self._consumer.position(tp)
                metrics.CONSUMER_LAG.labels(self.name, tp.topic, str(tp.partition)).set(
                    max(0, highwater - position)
                )


async def _blamed(item: _Item, work: Awaitable[T]) -> T:
    """Await a handler's (or the batch's unit's) work. A failure that is not the infrastructure's
    is the message's: the batch rolls back and its records are tried one by one."""
    try:
        return await work
    except Exception as exc:
        if is_infrastructure_error(exc):
            raise
        raise HandlerFailed(item, exc) from exc


async def _call(take: Callable[[], Writes | None]) -> Writes | None:
    return take()


def _first_of_each(items: list[_Item]) -> list[_Item]:
    """The items with an event id not seen earlier in the list (a record published twice may
    arrive twice in one batch)."""
    seen: set[Any] = set()
    todo: list[_Item] = []
    for item in items:
        if item.envelope.event_id not in seen:
            seen.add(item.envelope.event_id)
            todo.append(item)
    return todo


def _next_offsets(
    batch: Mapping[TopicPartition, list[ConsumerRecord]],
) -> dict[TopicPartition, int]:
    """Where each partition of a batch resumes once the batch is applied."""
    return {tp: recs[-1].offset + 1 for tp, recs in batch.items() if recs}


def _ids(item: _Item) -> dict[str, object]:
    return {
        "event_id": str(item.envelope.event_id),
        "event_type": item.envelope.type,
        "correlation_id": item.envelope.correlation_id,
        "topic": item.record.topic,
        "partition": item.record.partition,
        "offset": item.record.offset,
    }
