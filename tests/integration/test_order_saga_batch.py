"""The saga's unit of work against the real database: a batch of replies, locked and saved in two
statements, ends exactly where the same replies applied one at a time end."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from events.contracts import (
    PaymentAuthorized,
    PaymentCaptured,
    PaymentDeclined,
    ReservationCommitted,
    StockLine,
    StockRejected,
    StockReserved,
)
from events.envelope import wrap
from events.kit.db import Conn
from events.kit.inbox import HandlerContext
from events.messages import Message, Money
from order_service import handlers, intake
from order_service.domain import Deadlines

pytestmark = pytest.mark.integration

LINES = (StockLine(sku="BATCH-1", quantity=2),)
PRICE = Money(amount=1250, currency="USD")
DEADLINES = Deadlines()


@pytest.fixture(scope="module")
async def pool(order_pool: asyncpg.Pool) -> asyncpg.Pool:
    await order_pool.execute(
        "INSERT INTO catalog_view VALUES ('BATCH-1', 'Batch', 'test', 1250, 'USD', true, now())"
        " ON CONFLICT DO NOTHING"
    )
    return order_pool


async def place(pool: asyncpg.Pool) -> uuid.UUID:
    request = intake.PlaceRequest("batch-customer", LINES, "USD", "tok_approve")
    async with pool.acquire() as conn, conn.transaction():
        [answer] = await intake.place(
            conn, [request], deadlines=DEADLINES, max_open=0, service="order", now=datetime.now(UTC)
        )
    assert answer.order is not None, answer
    return answer.order.order_id


def replies(happy: uuid.UUID, rejected: uuid.UUID, declined: uuid.UUID) -> list[Message]:
    """Every reply of three orders' sagas, interleaved as one batch could bring them."""
    expires = datetime.now(UTC) + timedelta(minutes=5)
    payment = uuid.uuid4()
    return [
        StockReserved(order_id=happy, lines=LINES, expires_at=expires),
        StockRejected(order_id=rejected, reason="out of stock"),
        StockReserved(order_id=declined, lines=LINES, expires_at=expires),
        PaymentAuthorized(order_id=happy, payment_id=payment, amount=PRICE, authorization_code="A"),
        PaymentDeclined(order_id=declined, code="declined", reason="declined"),
        ReservationCommitted(order_id=happy, lines=LINES),
        PaymentCaptured(order_id=happy, payment_id=payment, amount=PRICE),
        StockReserved(order_id=uuid.uuid4(), lines=LINES, expires_at=expires),  # unknown order
    ]


async def apply(conn: Conn, messages: list[Message]) -> list[Message]:
    """What the inbox does for one transaction: one unit, every handler, one flush."""
    saga = handlers.saga_handlers(DEADLINES)
    unit = await handlers.SagaUnit.for_replies(conn, messages)
    emitted: list[Message] = []
    for msg in messages:
        ctx = HandlerContext(conn, wrap(msg, producer="test"), record=None, unit=unit)
        emitted += await saga[type(msg)](msg, ctx) or []
    await unit.flush()
    return emitted


async def outcome(pool: asyncpg.Pool, order_id: uuid.UUID) -> tuple[Any, ...]:
    row = await pool.fetchrow(
        "SELECT status, stock_committed, payment_captured, refunded, reason, deadline IS NULL"
        " FROM orders WHERE order_id = $1",
        order_id,
    )
    notes = await pool.fetch(
        "SELECT status, note FROM order_timeline WHERE order_id = $1 ORDER BY id", order_id
    )
    assert row is not None
    return tuple(row), [tuple(n) for n in notes]


def shape(messages: list[Message], names: Callable[[uuid.UUID], str]) -> list[tuple[str, str]]:
    return [(type(m).__name__, names(m.order_id)) for m in messages]  # type: ignore[attr-defined]


async def test_a_batch_of_replies_ends_where_the_same_replies_one_by_one_end(
    pool: asyncpg.Pool,
) -> None:
    batched = [await place(pool) for _ in range(3)]
    single = [await place(pool) for _ in range(3)]
    async with pool.acquire() as conn, conn.transaction():
        emitted_batched = await apply(conn, replies(*batched))
    emitted_single: list[Message] = []
    for msg in replies(*single):
        async with pool.acquire() as conn, conn.transaction():
            emitted_single += await apply(conn, [msg])

    def names(ids: list[uuid.UUID]) -> Callable[[uuid.UUID], str]:
        return lambda order_id: ("happy", "rejected", "declined")[ids.index(order_id)]

    assert shape(emitted_batched, names(batched)) == shape(emitted_single, names(single))
    for b, s in zip(batched, single, strict=True):
        assert await outcome(pool, b) == await outcome(pool, s)
    happy, notes = await outcome(pool, batched[0])
    assert happy[:4] == ("CONFIRMED", True, True, False)
    assert [status for status, _ in notes] == [
        "PENDING",
        "STOCK_RESERVED",
        "PAYMENT_AUTHORIZED",
        "PAYMENT_AUTHORIZED",
        "CONFIRMED",
    ]
    assert (await outcome(pool, batched[1]))[0][0] == "REJECTED"
    assert (await outcome(pool, batched[2]))[0][0] == "CANCELLED"


async def test_a_batch_holds_its_orders_until_it_commits_and_a_cancel_then_sees_its_steps(
    pool: asyncpg.Pool,
) -> None:
    order_id = await place(pool)
    expires = datetime.now(UTC) + timedelta(minutes=5)
    async with pool.acquire() as conn, conn.transaction():
        unit = await handlers.SagaUnit.for_replies(
            conn, [StockReserved(order_id=order_id, lines=LINES, expires_at=expires)]
        )
        async with pool.acquire() as other:
            free = await other.fetch(
                "SELECT order_id FROM orders WHERE order_id = $1 FOR UPDATE SKIP LOCKED", order_id
            )
        assert free == []  # the batch holds the row until it commits
        msg = StockReserved(order_id=order_id, lines=LINES, expires_at=expires)
        ctx = HandlerContext(conn, wrap(msg, producer="test"), record=None, unit=unit)
        await handlers.saga_handlers(DEADLINES)[StockReserved](msg, ctx)
        await unit.flush()
    async with pool.acquire() as conn, conn.transaction():
        result = await handlers.cancel_order(conn, order_id, "changed my mind", datetime.now(UTC))
    assert result is not None
    assert result[0].status.value == "CANCELLED"
    row, notes = await outcome(pool, order_id)
    assert row[0] == "CANCELLED"
    assert [status for status, _ in notes] == ["PENDING", "STOCK_RESERVED", "CANCELLED"]
