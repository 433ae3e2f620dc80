"""Every service's inbox consumer under fuzzing, on the real broker: batches of corrupt records
(random bytes, broken JSON, wrong types, unknown event types, huge payloads) interleaved with valid
messages. Each corrupt record must land in `<topic>.dlq` with the headers saying why and from
where, and each valid one, including those after a corrupt one, must take effect."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.contracts import (
    REGISTRY,
    AuthorizePayment,
    ProductUpserted,
    Restock,
    StockRejected,
)
from events.envelope import DecodeError, decode, encode, headers_for, wrap
from events.kit.producer import make_producer
from events.messages import Message, Money
from events.topics import CATALOG_PRODUCTS, INVENTORY_COMMANDS, INVENTORY_EVENTS, PAYMENT_COMMANDS
from tests.fuzz import corrupt as bad
from tests.fuzz.conftest import FuzzPlatform, auth_headers

pytestmark = pytest.mark.integration

KNOWN = frozenset(REGISTRY.names())
CASE_HEADER = "fuzz-case"
DEADLINE_S = 60.0


@dataclass(frozen=True)
class Target:
    """A consumer group of one service, a valid message for it and how to see it took effect."""

    group: str
    topic: str
    valid: Callable[[], Message]
    took_effect: Callable[[FuzzPlatform, Message, uuid.UUID], Awaitable[bool]]


def restock() -> Message:
    return Restock(sku=f"FZ-{uuid.uuid4().hex[:12]}", quantity=7)


def authorize() -> Message:
    order_id = uuid.uuid4()
    return AuthorizePayment(
        order_id=order_id,
        customer_id="fuzz",
        amount=Money(amount=1234, currency="USD"),
        payment_token="tok_approve",
        idempotency_key=f"authorize-{order_id}",
    )


def product() -> Message:
    return ProductUpserted(
        sku=f"FZ-{uuid.uuid4().hex[:12]}",
        name="fuzzed",
        category="fuzz",
        price=Money(amount=100, currency="USD"),
        updated_at=datetime.now(UTC),
    )


def stock_rejected() -> Message:
    return StockRejected(order_id=uuid.uuid4(), reason="fuzz: an order the service never placed")


async def _get_ok(base_url: str, path: str, role: str = "admin") -> httpx.Response | None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        r = await client.get(path, headers=auth_headers(role))
    return r if r.status_code == 200 else None


async def stock_known(p: FuzzPlatform, msg: Message, _: uuid.UUID) -> bool:
    r = await _get_ok(p.url("inventory"), f"/stock/{msg.sku}")  # type: ignore[attr-defined]
    return r is not None and r.json()["on_hand"] == 7


async def payment_known(p: FuzzPlatform, msg: Message, _: uuid.UUID) -> bool:
    return await _get_ok(p.url("payment"), f"/payments/{msg.order_id}") is not None  # type: ignore[attr-defined]


async def product_known(p: FuzzPlatform, msg: Message, _: uuid.UUID) -> bool:
    return await _get_ok(p.url("order"), f"/catalog/{msg.sku}") is not None  # type: ignore[attr-defined]


async def saga_applied(p: FuzzPlatform, _: Message, event_id: uuid.UUID) -> bool:
    """A reply for an unknown order changes no order; the inbox row shows it was applied."""
    conn = await asyncpg.connect(p.database_urls["order"])
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM inbox WHERE consumer = $1 AND event_id = $2",
            p.group_prefix + "order-saga",
            event_id,
        )
    finally:
        await conn.close()
    return bool(found)


TARGETS = {
    "inventory": Target("inventory", INVENTORY_COMMANDS, restock, stock_known),
    "payment": Target("payment", PAYMENT_COMMANDS, authorize, payment_known),
    "order-catalog-view": Target("order-catalog-view", CATALOG_PRODUCTS, product, product_known),
    "order-saga": Target("order-saga", INVENTORY_EVENTS, stock_rejected, saga_applied),
}
SAMPLE = {name: encode(wrap(t.valid(), producer="fuzz")) for name, t in TARGETS.items()}


def refused(raw: bytes) -> bool:
    try:
        decode(raw, REGISTRY)
    except DecodeError:
        return True
    return False


def batches(target: str) -> st.SearchStrategy[list[bytes | None]]:
    """Corrupt records (bytes) and valid ones (None, made fresh at send time), ending valid."""
    corrupt = bad.corrupt(SAMPLE[target], KNOWN).filter(refused)
    return st.lists(st.one_of(corrupt, st.none()), min_size=1, max_size=8).map(
        lambda rs: [*rs, None]
    )


async def dead_letters(bootstrap: str, topic: str, case: str) -> dict[int, dict[str, bytes]]:
    """The dead letters of this case so far: source offset -> headers."""
    reader = AIOKafkaConsumer(
        topic + ".dlq",
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await reader.start()
    found: dict[int, dict[str, bytes]] = {}
    try:
        while True:
            batch = await reader.getmany(timeout_ms=300)
            for records in batch.values():
                for r in records:
                    headers = dict(r.headers or ())
                    if headers.get(CASE_HEADER) == case.encode():
                        found[int(headers["dlq.source_offset"])] = headers
            assigned = list(reader.assignment())
            if not batch and assigned:
                end = await reader.end_offsets(assigned)
                if all([await reader.position(tp) >= end[tp] for tp in assigned]):
                    return found
    finally:
        await reader.stop()


async def round_trip(
    platform: FuzzPlatform, bootstrap: str, target: Target, batch: list[bytes | None]
) -> None:
    case = uuid.uuid4().hex
    producer = make_producer(bootstrap, client_id="fuzz-consumers", max_request_size=1_048_576)
    await producer.start()
    sent_bad: list[int] = []
    sent_good: list[tuple[Message, uuid.UUID]] = []
    try:
        for i, raw in enumerate(batch):
            if raw is None:
                message = target.valid()
                envelope = wrap(message, producer="fuzz")
                value, headers = encode(envelope), headers_for(envelope)
                sent_good.append((message, envelope.event_id))
            else:
                value, headers = raw, []
            meta = await producer.send_and_wait(
                target.topic,
                value,
                # a key of its own: the compacted topic refuses keyless records
                key=f"fuzz-{case}-{i}".encode(),
                partition=0,
                headers=[*headers, (CASE_HEADER, case.encode())],
            )
            if raw is not None:
                sent_bad.append(meta.offset)
    finally:
        await producer.stop()

    deadline = time.monotonic() + DEADLINE_S
    pending = list(sent_good)
    letters: dict[int, dict[str, bytes]] = {}
    while time.monotonic() < deadline:
        pending = [(m, e) for m, e in pending if not await target.took_effect(platform, m, e)]
        letters = await dead_letters(bootstrap, target.topic, case)
        if not pending and set(sent_bad) <= set(letters):
            break
        await asyncio.sleep(0.3)
    assert not pending, f"{len(pending)} valid messages of {len(sent_good)} took no effect"
    assert set(letters) == set(sent_bad), (sorted(letters), sent_bad)
    for offset in sent_bad:
        why = letters[offset]
        assert why["dlq.reason"] == b"undecodable"
        assert why["dlq.error"]
        assert why["dlq.source_topic"] == target.topic.encode()
        assert why["dlq.source_partition"] == b"0"
        assert why["dlq.consumer"] == (platform.group_prefix + target.group).encode()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_corrupt_records_are_dead_lettered_and_the_consumer_keeps_applying_valid_ones(
    fuzz_platform: FuzzPlatform, stack: object, name: str
) -> None:
    bootstrap: str = stack.kafka_bootstrap  # type: ignore[attr-defined]
    target = TARGETS[name]

    @settings(
        max_examples=4,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(batch=batches(name))
    def one_batch(batch: list[bytes | None]) -> None:
        asyncio.run(round_trip(fuzz_platform, bootstrap, target, batch))

    one_batch()
