"""inventory_service running in-process on the real broker: commands in on inventory.commands,
answers out on inventory.events, the expiry timer and the HTTP routes of the live runtime."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import SecretStr

from events.contracts import (
    CommitReservation,
    ReserveStock,
    Restock,
    StockLine,
)
from events.envelope import DecodeError, Envelope, decode_envelope, encode, headers_for, wrap
from events.kit.producer import make_producer
from events.kit.runtime import ServiceRuntime
from events.messages import Command
from events.topics import INVENTORY_EVENTS
from inventory_service.app import build
from inventory_service.settings import Settings
from tests.integration.kit_support import eventually

pytestmark = pytest.mark.integration

TTL_S = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class EventLog:
    """Every envelope on inventory.events since the test module started, read in the background."""

    seen: list[Envelope] = field(default_factory=list)

    def of(self, correlation_id: object, event_type: str) -> list[Envelope]:
        return [
            e for e in self.seen if e.correlation_id == str(correlation_id) and e.type == event_type
        ]

    async def wait_for(
        self, correlation_id: object, event_type: str, count: int = 1, timeout: float = 30
    ) -> list[Envelope]:
        async def arrived() -> bool:
            return len(self.of(correlation_id, event_type)) >= count

        await eventually(arrived, timeout=timeout)
        return self.of(correlation_id, event_type)


@dataclass
class Running:
    runtime: ServiceRuntime
    producer: AIOKafkaProducer
    events: EventLog
    base_url: str

    async def send(self, command: Command) -> Envelope:
        envelope = wrap(command, producer="inventory-tests")
        await self.producer.send_and_wait(
            command.topic,
            encode(envelope),
            key=command.partition_key().encode(),
            headers=headers_for(envelope),
        )
        return envelope


async def _collect(consumer: AIOKafkaConsumer, log: EventLog) -> None:
    while True:
        batch = await consumer.getmany(timeout_ms=200)
        for records in batch.values():
            for record in records:
                with contextlib.suppress(DecodeError):
                    log.seen.append(decode_envelope(record.value))


@pytest.fixture(scope="module")
async def service(stack: object) -> AsyncIterator[Running]:
    run = uuid.uuid4().hex[:8]
    bootstrap: str = stack.kafka_bootstrap  # type: ignore[attr-defined]
    port = free_port()
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        database_url=SecretStr(stack.database_url(f"inventory_service_{run}")),  # type: ignore[attr-defined]
        http_port=port,
        consumer_group_prefix=f"test-{run}-",
        consumer_poll_ms=50,
        outbox_poll_ms=100,
        reservation_ttl_s=TTL_S,
        expiry_scan_ms=100,
    )
    events = EventLog()
    reader = AIOKafkaConsumer(
        INVENTORY_EVENTS,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await reader.start()
    collector = asyncio.create_task(_collect(reader, events))
    producer = make_producer(bootstrap, client_id="inventory-tests")
    await producer.start()
    runtime = build(settings)
    await runtime.start()
    try:
        yield Running(runtime, producer, events, f"http://127.0.0.1:{port}")
    finally:
        await runtime.stop()
        await producer.stop()
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        await reader.stop()


async def test_a_reserve_stock_command_on_kafka_is_answered_with_stock_reserved(
    service: Running,
) -> None:
    sku = f"kafka-{uuid.uuid4().hex[:8]}"
    await service.send(Restock(sku=sku, quantity=5))
    await service.events.wait_for(sku, "StockLevelChanged")
    order_id = uuid.uuid4()

    command = await service.send(
        ReserveStock(
            order_id=order_id,
            lines=(StockLine(sku=sku, quantity=2), StockLine(sku=sku, quantity=1)),
        )
    )

    [reserved] = await service.events.wait_for(order_id, "StockReserved")
    assert reserved.producer == "inventory"
    assert reserved.causation_id == command.event_id
    assert [line["quantity"] for line in reserved.payload["lines"]] == [2, 1]


async def test_an_order_larger_than_the_stock_is_rejected_over_kafka_with_its_shortages(
    service: Running,
) -> None:
    sku = f"kafka-{uuid.uuid4().hex[:8]}"
    await service.send(Restock(sku=sku, quantity=3))
    await service.events.wait_for(sku, "StockLevelChanged")
    order_id = uuid.uuid4()

    await service.send(
        ReserveStock(
            order_id=order_id,
            lines=(StockLine(sku=sku, quantity=2), StockLine(sku=sku, quantity=2)),
        )
    )

    [rejected] = await service.events.wait_for(order_id, "StockRejected")
    assert rejected.payload["shortages"] == [{"sku": sku, "requested": 4, "available": 3}]


async def test_the_running_service_expires_a_reservation_and_answers_a_late_commit_with_it(
    service: Running,
) -> None:
    sku = f"kafka-{uuid.uuid4().hex[:8]}"
    await service.send(Restock(sku=sku, quantity=4))
    await service.events.wait_for(sku, "StockLevelChanged")
    order_id = uuid.uuid4()
    await service.send(ReserveStock(order_id=order_id, lines=(StockLine(sku=sku, quantity=4),)))
    await service.events.wait_for(order_id, "StockReserved")

    [expired] = await service.events.wait_for(order_id, "ReservationExpired", timeout=TTL_S + 30)
    await service.send(CommitReservation(order_id=order_id))
    answers = await service.events.wait_for(order_id, "ReservationExpired", count=2)

    assert expired.payload["lines"] == [{"sku": sku, "quantity": 4}]
    assert answers[1].payload["expired_at"] == expired.payload["expired_at"]
    assert service.events.of(order_id, "ReservationCommitted") == []
    async with httpx.AsyncClient(base_url=service.base_url, timeout=5) as client:
        stock = (await client.get(f"/stock/{sku}")).json()
    assert (stock["on_hand"], stock["reserved"], stock["available"]) == (4, 0, 4)
