"""analytics_service's memory against the orders it has folded: `python -m bench.analytics_memory`.

The platform bench (`python -m bench`) samples every process while the saga runs, so analytics'
figure there also carries whatever backlog the saga left it on a busy machine. This isolates the
fold: a stack of its own (Kafka, PostgreSQL) on --port-base, analytics_service alone, and
synthetic orders (OrderPlaced, PaymentAuthorized, OrderConfirmed, occurring now) produced straight
to the event topics in --rounds rounds. After each round it waits until analytics has folded every
record (its /api/positions) and prints the resident memory (state kept per order in the heap
grows with every round; state on disk levels off), and the CPU time analytics used for the round
per order (its threads included).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]
from aiokafka import AIOKafkaProducer

from deploy.local.services import ServiceSupervisor
from deploy.local.stack import LocalStack
from events.contracts import OrderConfirmed, OrderPlaced, PaymentAuthorized, PricedLine
from events.envelope import encode, wrap
from events.messages import Money

SKUS = [f"MEM-{i:03d}" for i in range(200)]


def order_events(rng: random.Random) -> list[tuple[str, str, bytes]]:
    """One confirmed order's three events: (topic, key, value)."""
    order_id = uuid.uuid4()
    now = datetime.now(UTC)
    lines = tuple(
        PricedLine(
            sku=sku, quantity=rng.randint(1, 3), unit_price=Money(amount=999, currency="USD")
        )
        for sku in rng.sample(SKUS, rng.randint(1, 3))
    )
    total = Money(amount=sum(line.quantity * 999 for line in lines), currency="USD")
    messages = [
        OrderPlaced(order_id=order_id, customer_id="mem", lines=lines, total=total, placed_at=now),
        PaymentAuthorized(
            order_id=order_id, payment_id=uuid.uuid4(), amount=total, authorization_code="ok"
        ),
        OrderConfirmed(order_id=order_id, customer_id="mem", total=total),
    ]
    key = str(order_id)
    return [(type(m).topic, key, encode(wrap(m, producer="bench"))) for m in messages]


async def produce(bootstrap: str, orders: int, rng: random.Random) -> dict[str, int]:
    """Produce the orders' events; the offset after the last record per "topic/partition"."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
    await producer.start()
    ends: dict[str, int] = {}
    try:
        pending = []
        for _ in range(orders):
            for topic, key, value in order_events(rng):
                pending.append(await producer.send(topic, value, key=key.encode()))
            if len(pending) >= 3000:
                for meta in await asyncio.gather(*pending):
                    where = f"{meta.topic}/{meta.partition}"
                    ends[where] = max(ends.get(where, 0), meta.offset + 1)
                pending.clear()
        for meta in await asyncio.gather(*pending):
            where = f"{meta.topic}/{meta.partition}"
            ends[where] = max(ends.get(where, 0), meta.offset + 1)
    finally:
        await producer.stop()
    return ends


async def folded(url: str, ends: dict[str, int], timeout: float) -> float:
    """Wait until analytics has folded up to `ends`; seconds it took."""
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        while True:
            positions = (await http.get("/api/positions")).json()["positions"]
            if all(positions.get(where, 0) >= end for where, end in ends.items()):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"analytics did not fold round within {timeout}s")
            await asyncio.sleep(0.2)


async def rocksdb_mib(url: str) -> str:
    """The RocksDB cache and memtable gauges of /metrics (absent under the memory store)."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        text = (await http.get("/metrics")).text
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("analytics_rocksdb_cache_bytes", "analytics_rocksdb_memtable_bytes"):
            found[name] = float(value) / 2**20
    return ", ".join(f"{v:.1f}" for v in found.values()) or "-"


async def measure(args: argparse.Namespace, stack: LocalStack, sup: ServiceSupervisor) -> None:
    stack.up(databases=["analytics"])
    sup.start("analytics")
    sup.wait_ready("analytics", timeout=120)
    pid = sup.pid("analytics")
    assert pid is not None
    process = psutil.Process(pid)
    rng = random.Random(8)
    url = sup.url("analytics")
    each = args.orders // args.rounds
    print(
        f"{'orders':>9} {'rss MiB':>8} {'fold s':>7} {'cpu ms/order':>12} "
        "RocksDB MiB (cache, memtables)",
        flush=True,
    )
    print(f"{0:>9} {process.memory_info().rss / 2**20:>8.1f} {'':>7} {'':>12}", flush=True)
    ends: dict[str, int] = {}
    for k in range(1, args.rounds + 1):
        cpu = process.cpu_times()
        ends |= await produce(stack.kafka.bootstrap, each, rng)
        took = await folded(url, ends, args.timeout_s)
        after = process.cpu_times()
        per_order = (after.user + after.system - cpu.user - cpu.system) * 1000 / each
        rss = process.memory_info().rss / 2**20
        rocks = await rocksdb_mib(url)
        print(f"{k * each:>9} {rss:>8.1f} {took:>7.1f} {per_order:>12.3f} {rocks}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--port-base", type=int, default=24150)
    parser.add_argument("--timeout-s", type=float, default=600)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="shop-analytics-memory-"))
    base = args.port_base
    stack = LocalStack(data, kafka_port=base, kafka_controller_port=base + 1, pg_port=base + 2)
    sup = ServiceSupervisor(
        kafka_bootstrap=stack.kafka.bootstrap,
        database_url=stack.postgres.database_url,
        data_dir=data,
        ports={"analytics_service": base + 10},
        env={"ANALYTICS_LOG_LEVEL": "WARNING"},
    )
    try:
        asyncio.run(measure(args, stack, sup))
    finally:
        sup.stop_all()
        stack.down()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
