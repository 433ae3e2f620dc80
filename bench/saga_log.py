"""A realistic saga log without running the saga: the records the services would have written.

Each order gets what the platform publishes for it (events and commands, in the envelope, keyed
and with the routing headers as the outbox relay sends them): most are confirmed, some are
rejected for stock, some declined, some confirmed then cancelled with a refund. Stock levels,
low-stock alerts and the catalog's products come along. Used by `make bench` to give the log
tools a log of a chosen size quickly, and by tests that need many orders on the log.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer

from events.contracts import (
    AuthorizePayment,
    CapturePayment,
    CommitReservation,
    LowStockDetected,
    OrderCancelled,
    OrderConfirmed,
    OrderPlaced,
    OrderRejected,
    OrderRestocked,
    OrderStatus,
    OrderStatusChanged,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentDeclined,
    PaymentRefunded,
    PaymentVoided,
    PricedLine,
    ProductUpserted,
    RefundPayment,
    ReleaseReservation,
    ReservationCommitted,
    ReservationReleased,
    ReserveStock,
    RestockOrder,
    Shortage,
    StockLevelChanged,
    StockLine,
    StockRejected,
    StockReserved,
    VoidPayment,
)
from events.envelope import encode, headers_for, wrap
from events.messages import Message, Money

Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers
LOW_STOCK_THRESHOLD = 10


class SagaLog:
    """Generates the records of `orders` orders over `skus`, starting at `start`."""

    def __init__(self, skus: list[str], *, seed: int = 1, stock: int = 1_000_000) -> None:
        self.rnd = random.Random(seed)
        self.skus = skus
        self.prices = {sku: 199 + 50 * (i % 40) for i, sku in enumerate(skus)}
        self.stock = dict.fromkeys(skus, stock)
        self.reserved = dict.fromkeys(skus, 0)

    def _record(
        self, msg: Message, at: datetime, producer: str, correlation: str | None = None
    ) -> Record:
        env = wrap(msg, producer=producer, occurred_at=at, correlation_id=correlation)
        return (msg.topic, msg.partition_key().encode(), encode(env), headers_for(env))

    def products(self, at: datetime) -> Iterator[Record]:
        for i, sku in enumerate(self.skus):
            yield self._record(
                ProductUpserted(
                    sku=sku,
                    name=f"Product {sku}",
                    category=f"category-{i % 6}",
                    price=Money(amount=self.prices[sku], currency="USD"),
                    updated_at=at,
                ),
                at,
                "catalog",
            )

    def _levels(self, lines: list[StockLine], at: datetime, cause: str) -> Iterator[Record]:
        for line in lines:
            available = self.stock[line.sku] - self.reserved[line.sku]
            yield self._record(
                StockLevelChanged(
                    sku=line.sku,
                    on_hand=self.stock[line.sku],
                    reserved=self.reserved[line.sku],
                    available=available,
                    cause=cause,
                ),
                at,
                "inventory",
            )
            if available < LOW_STOCK_THRESHOLD:
                yield self._record(
                    LowStockDetected(
                        sku=line.sku, available=available, threshold=LOW_STOCK_THRESHOLD
                    ),
                    at,
                    "inventory",
                )

    def order(self, at: datetime) -> Iterator[Record]:
        """One order's records, its steps a few milliseconds apart."""
        rnd = self.rnd
        oid = uuid.uuid4()
        corr = str(oid)
        customer = f"customer-{rnd.randint(1, 5000)}"
        picked = {rnd.choice(self.skus): rnd.randint(1, 3) for _ in range(rnd.randint(1, 3))}
        priced = tuple(
            PricedLine(sku=s, quantity=q, unit_price=Money(amount=self.prices[s], currency="USD"))
            for s, q in picked.items()
        )
        total = Money(amount=sum(p.quantity * p.unit_price.amount for p in priced), currency="USD")
        lines = [StockLine(sku=s, quantity=q) for s, q in picked.items()]
        step = [at]

        def rec(msg: Message, producer: str) -> Record:
            step[0] += timedelta(milliseconds=rnd.randint(2, 40))
            return self._record(msg, step[0], producer, corr)

        yield rec(
            OrderPlaced(
                order_id=oid, customer_id=customer, lines=priced, total=total, placed_at=at
            ),
            "order",
        )
        yield rec(ReserveStock(order_id=oid, lines=tuple(lines)), "order")
        fate = rnd.random()
        short = [ln for ln in lines if self.stock[ln.sku] - self.reserved[ln.sku] < ln.quantity]
        if fate < 0.05 or short:
            shortages = tuple(
                Shortage(sku=ln.sku, requested=ln.quantity, available=0) for ln in lines[:1]
            )
            yield rec(
                StockRejected(order_id=oid, reason="insufficient stock", shortages=shortages),
                "inventory",
            )
            yield rec(
                OrderRejected(order_id=oid, customer_id=customer, reason="out of stock"), "order"
            )
            return
        for ln in lines:
            self.reserved[ln.sku] += ln.quantity
        expires = step[0] + timedelta(minutes=5)
        yield rec(StockReserved(order_id=oid, lines=tuple(lines), expires_at=expires), "inventory")
        yield from self._levels(lines, step[0], "reserved")
        yield rec(
            OrderStatusChanged(
                order_id=oid,
                status=OrderStatus.STOCK_RESERVED,
                previous_status=OrderStatus.PENDING,
            ),
            "order",
        )
        key = f"{oid}:authorize"
        yield rec(
            AuthorizePayment(
                order_id=oid,
                customer_id=customer,
                amount=total,
                payment_token="tok_approve",
                idempotency_key=key,
            ),
            "order",
        )
        if fate < 0.15:
            yield rec(
                PaymentDeclined(order_id=oid, code="declined", reason="card declined"), "payment"
            )
            yield rec(ReleaseReservation(order_id=oid, reason="payment declined"), "order")
            yield rec(VoidPayment(order_id=oid, reason="declined", idempotency_key=key), "order")
            for ln in lines:
                self.reserved[ln.sku] -= ln.quantity
            yield rec(
                ReservationReleased(order_id=oid, lines=tuple(lines), reason="declined"),
                "inventory",
            )
            yield from self._levels(lines, step[0], "released")
            yield rec(PaymentVoided(order_id=oid), "payment")
            yield rec(
                OrderCancelled(order_id=oid, customer_id=customer, reason="payment declined"),
                "order",
            )
            return
        payment = uuid.uuid4()
        yield rec(
            PaymentAuthorized(
                order_id=oid, payment_id=payment, amount=total, authorization_code="AUTH"
            ),
            "payment",
        )
        yield rec(CommitReservation(order_id=oid), "order")
        yield rec(
            CapturePayment(order_id=oid, amount=total, idempotency_key=f"{oid}:capture"), "order"
        )
        for ln in lines:
            self.reserved[ln.sku] -= ln.quantity
            self.stock[ln.sku] -= ln.quantity
        yield rec(ReservationCommitted(order_id=oid, lines=tuple(lines)), "inventory")
        yield from self._levels(lines, step[0], "committed")
        yield rec(PaymentCaptured(order_id=oid, payment_id=payment, amount=total), "payment")
        yield rec(OrderConfirmed(order_id=oid, customer_id=customer, total=total), "order")
        if fate > 0.95:
            yield rec(
                RefundPayment(
                    order_id=oid, amount=total, reason="asked", idempotency_key=f"{oid}:refund"
                ),
                "order",
            )
            yield rec(RestockOrder(order_id=oid, reason="cancelled"), "order")
            yield rec(PaymentRefunded(order_id=oid, payment_id=payment, amount=total), "payment")
            for ln in lines:
                self.stock[ln.sku] += ln.quantity
            yield rec(OrderRestocked(order_id=oid, lines=tuple(lines)), "inventory")
            yield from self._levels(lines, step[0], "restocked")
            yield rec(
                OrderCancelled(order_id=oid, customer_id=customer, reason="asked", refunded=True),
                "order",
            )

    def records(self, orders: int, start: datetime, per_second: float = 50.0) -> Iterator[Record]:
        """The catalog, then `orders` orders placed `per_second` apart from `start`."""
        yield from self.products(start)
        for i in range(orders):
            yield from self.order(start + timedelta(seconds=i / per_second))


async def produce(bootstrap: str, records: Iterator[Record], *, until: int | None = None) -> int:
    """Write the records (stop after `until` of them); how many were written."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=10,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    written = 0
    try:
        futures: list[asyncio.Future[object]] = []
        for topic, key, value, headers in records:
            futures.append(await producer.send(topic, value=value, key=key, headers=headers))
            written += 1
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
            if until is not None and written >= until:
                break
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return written


async def write_orders(
    bootstrap: str,
    orders: int,
    *,
    skus: list[str] | None = None,
    seed: int = 1,
    start: datetime | None = None,
    stock: int = 1_000_000,
) -> int:
    """Put `orders` orders' records on the topics; how many records that was."""
    log = SagaLog(skus or [f"SYN-{i:04d}" for i in range(240)], seed=seed, stock=stock)
    begin = start or datetime.now(UTC) - timedelta(seconds=orders / 50.0)
    return await produce(bootstrap, log.records(orders, begin))
