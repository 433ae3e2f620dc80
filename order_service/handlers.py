"""The saga's handlers: each takes its order from the batch's unit of work, asks the domain what
follows, and leaves the change with the unit. The unit locks every order of a batch of replies in
one query and saves them all (and their timeline entries) in one statement: two statements per
batch, however many replies it holds.

Replies for unknown orders are logged and dropped; late and duplicate replies are answered by the
domain (usually with nothing, or with the compensation they need).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from events.contracts import (
    PaymentAuthorized,
    PaymentCaptured,
    PaymentDeclined,
    PaymentOperationFailed,
    PaymentRefunded,
    PaymentVoided,
    ProductUpserted,
    ReservationCommitted,
    ReservationExpired,
    ReservationReleased,
    StockRejected,
    StockReserved,
    order_ids,
)
from events.kit.db import Conn
from events.kit.inbox import HandlerContext, Handlers, Writes
from events.kit.logging import get_logger
from events.messages import Message
from order_service import domain, repository
from order_service.domain import Deadlines, Decision, Order

log = get_logger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


PURGE_BATCH = 5_000


async def purge_idempotency_keys(conn: Conn, older_than: datetime) -> int:
    """Delete up to PURGE_BATCH idempotency keys created before `older_than`; returns how many."""
    status = await conn.execute(repository.PURGE_IDEMPOTENCY_KEYS, older_than, PURGE_BATCH)
    purged = int(status.split()[-1])
    if purged:
        log.info("idempotency keys purged", count=purged)
    return purged


class SagaUnit:
    """The orders one transaction works on, locked, and the saga steps taken on them."""

    def __init__(self, conn: Conn, orders: dict[uuid.UUID, Order]) -> None:
        self.conn = conn
        self.orders = orders
        self._changed: dict[uuid.UUID, Order] = {}
        self._timeline: list[repository.TimelineEntry] = []

    @classmethod
    async def lock(cls, conn: Conn, order_ids: Iterable[uuid.UUID]) -> SagaUnit:
        return cls(conn, await repository.lock_orders(conn, sorted(set(order_ids))))

    @classmethod
    async def for_replies(cls, conn: Conn, messages: Sequence[Message]) -> SagaUnit:
        """The unit of a batch of saga replies: every order they name, locked."""
        return await cls.lock(conn, order_ids(messages))

    def apply(self, before: Order, decision: Decision) -> list[Message]:
        """Take what the domain decided; the messages to send."""
        after = decision.order
        if after is not None:
            self.orders[after.order_id] = after
            self._changed[after.order_id] = after
        if decision.note or (after is not None and after.status != before.status):
            status = after.status if after is not None else before.status
            self._timeline.append((before.order_id, status, decision.note))
        return decision.messages

    def step(self, order_id: uuid.UUID, decide: Callable[[Order], Decision]) -> list[Message]:
        order = self.orders.get(order_id)
        if order is None:
            log.warning("reply for an unknown order dropped", order_id=str(order_id))
            return []
        return self.apply(order, decide(order))

    async def flush(self) -> None:
        if writes := self.writes():
            await writes.execute(self.conn)

    def writes(self) -> Writes | None:
        """What flush() would write, handed over for the consumer's last statement."""
        if not (self._changed or self._timeline):
            return None
        writes = repository.save_steps(list(self._changed.values()), self._timeline)
        self._changed, self._timeline = {}, []
        return writes


def _step(
    ctx: HandlerContext, order_id: uuid.UUID, decide: Callable[[Order], Decision]
) -> list[Message]:
    unit: SagaUnit = ctx.unit
    return unit.step(order_id, decide)


async def cancel_order(
    conn: Conn, order_id: uuid.UUID, reason: str, now: datetime
) -> tuple[Order, list[Message]] | None:
    """A customer's cancel; raises domain.CannotCancel when the order already ended unsold."""
    unit = await SagaUnit.lock(conn, [order_id])
    order = unit.orders.get(order_id)
    if order is None:
        return None
    decision = domain.cancel(order, reason, now)
    messages = unit.apply(order, decision)
    await unit.flush()
    assert decision.order is not None
    return decision.order, messages


async def expire_overdue(conn: Conn, now: datetime, limit: int = 200) -> list[Message]:
    """Cancel and compensate the orders whose current step missed its deadline."""
    overdue = await repository.overdue_orders(conn, now, limit)
    unit = SagaUnit(conn, {o.order_id: o for o in overdue})
    messages: list[Message] = []
    for order in overdue:
        messages += unit.apply(order, domain.on_deadline(order, now))
    await unit.flush()
    return messages


def saga_handlers(deadlines: Deadlines, clock: Clock = utcnow) -> Handlers:
    """The saga's reaction to each inventory and payment event."""

    async def stock_reserved(msg: StockReserved, ctx: HandlerContext) -> list[Message]:
        return _step(ctx, msg.order_id, lambda o: domain.on_stock_reserved(o, clock(), deadlines))

    async def stock_rejected(msg: StockRejected, ctx: HandlerContext) -> list[Message]:
        return _step(
            ctx, msg.order_id, lambda o: domain.on_stock_rejected(o, msg.reason, msg.shortages)
        )

    async def payment_authorized(msg: PaymentAuthorized, ctx: HandlerContext) -> list[Message]:
        return _step(
            ctx, msg.order_id, lambda o: domain.on_payment_authorized(o, clock(), deadlines)
        )

    async def payment_declined(msg: PaymentDeclined, ctx: HandlerContext) -> list[Message]:
        return _step(
            ctx,
            msg.order_id,
            lambda o: domain.on_payment_declined(o, msg.code, msg.reason, clock()),
        )

    async def reservation_committed(
        msg: ReservationCommitted, ctx: HandlerContext
    ) -> list[Message]:
        return _step(ctx, msg.order_id, domain.on_reservation_committed)

    async def reservation_expired(msg: ReservationExpired, ctx: HandlerContext) -> list[Message]:
        return _step(
            ctx,
            msg.order_id,
            lambda o: domain.on_reservation_lost(o, "reservation expired", clock()),
        )

    async def reservation_released(msg: ReservationReleased, ctx: HandlerContext) -> list[Message]:
        why = f"reservation released: {msg.reason}"
        return _step(ctx, msg.order_id, lambda o: domain.on_reservation_lost(o, why, clock()))

    async def payment_captured(msg: PaymentCaptured, ctx: HandlerContext) -> list[Message]:
        return _step(ctx, msg.order_id, domain.on_payment_captured)

    async def payment_failed(msg: PaymentOperationFailed, ctx: HandlerContext) -> list[Message]:
        if msg.operation != "capture":
            note = f"payment {msg.operation} failed: {msg.reason}"
            return _step(ctx, msg.order_id, lambda o: Decision(None, [], note))
        return _step(ctx, msg.order_id, lambda o: domain.on_capture_failed(o, msg.reason, clock()))

    async def payment_refunded(msg: PaymentRefunded, ctx: HandlerContext) -> list[Message]:
        return _step(ctx, msg.order_id, domain.on_payment_refunded)

    async def payment_voided(msg: PaymentVoided, ctx: HandlerContext) -> list[Message]:
        return _step(ctx, msg.order_id, lambda o: Decision(None, [], "payment voided"))

    return {
        StockReserved: stock_reserved,
        StockRejected: stock_rejected,
        PaymentAuthorized: payment_authorized,
        PaymentDeclined: payment_declined,
        ReservationCommitted: reservation_committed,
        ReservationExpired: reservation_expired,
        ReservationReleased: reservation_released,
        PaymentCaptured: payment_captured,
        PaymentOperationFailed: payment_failed,
        PaymentRefunded: payment_refunded,
        PaymentVoided: payment_voided,
    }


async def product_upserted(msg: ProductUpserted, ctx: HandlerContext) -> None:
    """Keep the local catalog view that prices orders."""
    await repository.upsert_product(ctx.conn, msg)


CATALOG_HANDLERS: Handlers = {ProductUpserted: product_upserted}
