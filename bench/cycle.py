"""The cost of one hop's cycle in the messaging kit, before and after a change, side by side.

    shop infra up        # or any Kafka and PostgreSQL: --bootstrap, --database-url
    python -m bench.cycle --cycles 1000 --rounds 4 --batch 1

A cycle is what every hop of the saga does for each batch it consumes: the batch's transaction
(inbox, handler, unit write, outbox; the handler writes one row and emits one event per record)
and the relay publishing what it emitted. The records are made here, not fetched: the fetch and
the offset commit are the same in every variant, and leaving them out shows the difference. The
variants run in turns (ABAB...) on the same database and broker, and the report gives each one's
wall time, CPU of this process and CPU of the PostgreSQL server (all its processes) per cycle,
and their ratios to the first variant:

- `inbox first`: the kit before session 22 (the inbox insert a statement of its own, before the
  handlers; the relay's delete of what Kafka acknowledged a statement of its own);
- `inbox last`: the inbox rows go in with the outbox rows at the end; the relay deletes a batch
  with the statement that reads the next one;
- `unit in last`: the kit now, and the services' units: as `inbox last`, and the unit's write
  goes in that same last statement (`events.kit.inbox.Writes`).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import psutil  # type: ignore[import-untyped]
import uvloop
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from events.envelope import encode, wrap
from events.kit import db
from events.kit.admin import ensure_topics
from events.kit.inbox import HandlerContext, InboxConsumer, Writes, _Item
from events.kit.outbox import OutboxRelay
from events.kit.producer import make_producer
from events.kit.settings import LOCAL_KAFKA, ServiceSettings, local_database_url
from events.messages import Event, Message, Registry
from events.topics import TopicSpec

TOPIC = "bench.cycle"


class Added(Event):
    topic: ClassVar[str] = TOPIC
    item_id: uuid.UUID
    n: int

    def partition_key(self) -> str:
        return str(self.item_id)


class Counted(Event):
    topic: ClassVar[str] = TOPIC + ".counted"
    item_id: uuid.UUID
    n: int

    def partition_key(self) -> str:
        return str(self.item_id)


CREATE_ROWS = "CREATE TABLE IF NOT EXISTS cycle_rows (item_id UUID PRIMARY KEY, n INTEGER)"
INSERT_ROWS = "INSERT INTO cycle_rows SELECT * FROM unnest($1::uuid[], $2::int[])"


ROWS_WRITES = "added AS (INSERT INTO cycle_rows SELECT * FROM unnest($1::uuid[], $2::int[]))"


class _Rows:
    """A unit of work as the services' were: the handlers collect, one multi-row write."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.rows: list[tuple[uuid.UUID, int]] = []

    async def flush(self) -> None:
        await self.conn.execute(INSERT_ROWS, [r[0] for r in self.rows], [r[1] for r in self.rows])


class _RowsWrites(_Rows):
    """As the services' units are now: the write handed to the batch's last statement."""

    def writes(self) -> Writes | None:
        rows, self.rows = self.rows, []
        return Writes(ROWS_WRITES, [[r[0] for r in rows], [r[1] for r in rows]]) if rows else None

    async def flush(self) -> None:
        if writes := self.writes():
            await writes.execute(self.conn)


async def _unit(conn: Any, messages: Sequence[Message]) -> _Rows:
    return _Rows(conn)


async def _unit_writes(conn: Any, messages: Sequence[Message]) -> _Rows:
    return _RowsWrites(conn)


async def _handle(msg: Added, ctx: HandlerContext) -> list[Message]:
    ctx.unit.rows.append((msg.item_id, msg.n))
    return [Counted(item_id=msg.item_id, n=msg.n)]


@dataclass
class Variant:
    name: str
    consumer: InboxConsumer
    relay: OutboxRelay
    wall_s: float = 0.0
    cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    cycles: int = 0


def _server(url: str) -> list[psutil.Process]:
    """The PostgreSQL server's processes: the postmaster listening on the url's port and its
    children."""
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            postmaster = psutil.Process(conn.pid)
            return [postmaster, *postmaster.children(recursive=True)]
    raise SystemExit(f"no PostgreSQL listens on port {port}")


def _cpu(processes: list[psutil.Process]) -> dict[int, float]:
    times = {}
    for p in processes:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        times[p.pid] = t.user + t.system
    return times


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU the server spent in between: per process, those started since counted whole (a
    process that ended in between, an autovacuum worker, is not counted)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def _items(n: int, batch: int, consumer: InboxConsumer) -> list[list[_Item]]:
    batches = []
    for b in range(n):
        items = []
        for i in range(batch):
            msg = Added(item_id=uuid.uuid4(), n=b * batch + i)
            env = wrap(msg, producer="bench")
            record = ConsumerRecord(
                TOPIC,
                0,
                b * batch + i,
                0,
                0,
                msg.partition_key().encode(),
                encode(env),
                None,
                0,
                0,
                (),
            )
            items.append(_Item(record, env, msg, _handle))
        batches.append(items)
    return batches


async def run_round(v: Variant, batches: list[list[_Item]], url: str) -> None:
    server_before, cpu_before, started = (
        _cpu(_server(url)),
        time.process_time(),
        time.perf_counter(),
    )
    for items in batches:
        await v.consumer._transaction(items)
        await v.relay.publish_batch()
    await v.relay.publish_batch()  # the last batch's rows deleted too
    v.wall_s += time.perf_counter() - started
    v.cpu_s += time.process_time() - cpu_before
    v.server_cpu_s += _spent(server_before, _cpu(_server(url)))
    v.cycles += len(batches)


async def main(args: argparse.Namespace) -> None:
    url = args.database_url
    await db.ensure_database(url)
    pool = await db.create_pool(url, min_size=2, max_size=4)
    await db.apply_migrations(pool)
    await pool.execute(CREATE_ROWS)
    await ensure_topics(
        args.bootstrap, [TopicSpec(TOPIC, "event", 1), TopicSpec(TOPIC + ".counted", "event", 1)]
    )
    producer: AIOKafkaProducer = make_producer(
        args.bootstrap, client_id="bench-cycle", linger_ms=ServiceSettings().producer_linger_ms
    )
    await producer.start()
    registry = Registry(Added, Counted)

    def consumer(inbox_first: bool, unit: Any = _unit) -> InboxConsumer:
        return InboxConsumer(
            name=f"bench-cycle-{uuid.uuid4().hex[:8]}",
            topics=[TOPIC],
            handlers={Added: _handle},
            registry=registry,
            pool=pool,
            producer=producer,
            bootstrap_servers=args.bootstrap,
            service="benchcycle",
            unit=unit,
            inbox_first=inbox_first,
        )

    variants = [
        Variant(
            "inbox first",
            consumer(True),
            OutboxRelay(pool, producer, service="b", delete_with_next_read=False),
        ),
        Variant("inbox last", consumer(False), OutboxRelay(pool, producer, service="b")),
        Variant(
            "unit in last",
            consumer(False, _unit_writes),
            OutboxRelay(pool, producer, service="b"),
        ),
    ]
    try:
        await run_round(variants[0], _items(50, args.batch, variants[0].consumer), url)  # warm
        for v in variants:
            v.wall_s = v.cpu_s = v.server_cpu_s = 0.0
            v.cycles = 0
        for r in range(args.rounds):
            figures = []
            for v in variants if r % 2 == 0 else reversed(variants):
                before = v.cpu_s + v.server_cpu_s
                await run_round(v, _items(args.cycles, args.batch, v.consumer), url)
                per_cycle = (v.cpu_s + v.server_cpu_s - before) / args.cycles * 1000
                figures.append(f"{v.name} {per_cycle:.3f} ms")
            print(
                f"round {r + 1} of {args.rounds}: CPU per cycle, {', '.join(figures)}", flush=True
            )
    finally:
        for v in variants:
            await v.consumer.kafka.stop()  # made with the consumer, never started
        await producer.stop()
        await pool.close()
    base = variants[0]
    print(f"\n{args.batch} record(s) a batch, {base.cycles} cycles per variant:")
    print(f"{'':12} {'wall ms':>8} {'CPU ms':>8} {'server':>8} {'both':>8} {'ratio':>6}")
    for v in variants:
        both = (v.cpu_s + v.server_cpu_s) / v.cycles * 1000
        base_both = (base.cpu_s + base.server_cpu_s) / base.cycles * 1000
        print(
            f"{v.name:12} {v.wall_s / v.cycles * 1000:8.3f} {v.cpu_s / v.cycles * 1000:8.3f} "
            f"{v.server_cpu_s / v.cycles * 1000:8.3f} {both:8.3f} {both / base_both:6.3f}"
        )


def cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cycles", type=int, default=1000, help="cycles per variant per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1, help="records per batch")
    parser.add_argument("--bootstrap", default=LOCAL_KAFKA)
    parser.add_argument("--database-url", default=local_database_url("bench_cycle"))
    uvloop.run(main(parser.parse_args(argv)))


if __name__ == "__main__":
    cli()
