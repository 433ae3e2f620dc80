"""The order saga as pure decisions: given an order's state and what happened, what changes and what
commands go out. No I/O; the handlers load and save around these functions.

Compensation is driven from here too: a late or unexpected reply to an order that has already ended
is answered with the compensation it needs (a reservation that arrives after the order was cancelled
is released, a capture for a cancelled order is refunded), so every effect is undone exactly once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from events.contracts import (
    AuthorizePayment,
    CapturePayment,
    CommitReservation,
    OrderCancelled,
    OrderConfirmed,
    OrderRejected,
    OrderStatus,
    OrderStatusChanged,
    RefundPayment,
    ReleaseReservation,
    RestockOrder,
    Shortage,
    StockLine,
    VoidPayment,
)
from events.messages import Message, Money

S = OrderStatus


@dataclass(frozen=True)
class Deadlines:
    stock: timedelta = timedelta(seconds=30)
    payment: timedelta = timedelta(seconds=30)
    confirm: timedelta = timedelta(seconds=30)

    def for_status(self, status: OrderStatus) -> timedelta | None:
        return {S.PENDING: self.stock, S.STOCK_RESERVED: self.payment}.get(
            status, self.confirm if status == S.PAYMENT_AUTHORIZED else None
        )


@dataclass(frozen=True)
class Order:
    order_id: uuid.UUID
    customer_id: str
    status: OrderStatus
    lines: tuple[StockLine, ...]
    total: Money
    payment_token: str
    stock_committed: bool = False
    payment_captured: bool = False
    refunded: bool = False
    reason: str | None = None
    deadline: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in (S.CONFIRMED, S.REJECTED, S.CANCELLED)

    @property
    def ended_without_sale(self) -> bool:
        return self.status in (S.REJECTED, S.CANCELLED)


@dataclass(frozen=True)
class Decision:
    """The order after the step (None: unchanged), the messages to send, and a timeline note."""

    order: Order | None = None
    messages: list[Message] = field(default_factory=list)
    note: str | None = None


NOTHING = Decision()


def key(order: Order, step: str) -> str:
    """Idempotency key of one saga step: a retry of the step never charges twice."""
    return f"{order.order_id}:{step}"


def _move(
    order: Order, status: OrderStatus, now: datetime, deadlines: Deadlines, **changes: object
) -> Order:
    limit = deadlines.for_status(status)
    return replace(order, status=status, deadline=now + limit if limit else None, **changes)  # type: ignore[arg-type]


def _advanced(
    order: Order, status: OrderStatus, now: datetime, deadlines: Deadlines
) -> tuple[Order, Message]:
    moved = _move(order, status, now, deadlines)
    return moved, OrderStatusChanged(
        order_id=order.order_id, status=status, previous_status=order.status
    )


def _cancel(order: Order, reason: str, now: datetime) -> tuple[Order, Message]:
    """The order cancelled. A captured payment is always given back when an order is cancelled
    (`compensations`, `cancel`): `refunded` says so from then on."""
    refunded = order.payment_captured
    cancelled = replace(order, status=S.CANCELLED, reason=reason, deadline=None, refunded=refunded)
    return cancelled, OrderCancelled(
        order_id=order.order_id, customer_id=order.customer_id, reason=reason, refunded=refunded
    )


def _return_payment(order: Order, reason: str) -> Message:
    """What gives an unfinished order's payment back: a refund once it was captured (capture and
    the stock commit run at the same time, so a capture may come before the order fails), else a
    void of the authorization (a void that meets a capture still in flight is refused, and the
    capture's reply then finds the order ended and refunds it)."""
    if order.payment_captured:
        return RefundPayment(
            order_id=order.order_id,
            amount=order.total,
            reason=reason,
            idempotency_key=key(order, "refund"),
        )
    return VoidPayment(order_id=order.order_id, reason=reason, idempotency_key=key(order, "void"))


def compensations(order: Order, reason: str) -> list[Message]:
    """What undoes an unfinished order's effects so far, newest first (reverse order of steps)."""
    msgs: list[Message] = []
    if order.status in (S.STOCK_RESERVED, S.PAYMENT_AUTHORIZED):
        msgs.append(_return_payment(order, reason))
    if order.stock_committed:
        msgs.append(RestockOrder(order_id=order.order_id, reason=reason))
    else:
        msgs.append(ReleaseReservation(order_id=order.order_id, reason=reason))
    return msgs


def on_stock_reserved(order: Order, now: datetime, d: Deadlines) -> Decision:
    if order.status == S.PENDING:
        moved, changed = _advanced(order, S.STOCK_RESERVED, now, d)
        authorize = AuthorizePayment(
            order_id=order.order_id,
            customer_id=order.customer_id,
            amount=order.total,
            payment_token=order.payment_token,
            idempotency_key=key(order, "authorize"),
        )
        return Decision(moved, [changed, authorize], "stock reserved; authorizing payment")
    if order.ended_without_sale:
        return Decision(
            None,
            [ReleaseReservation(order_id=order.order_id, reason=f"order already {order.status}")],
            "late reservation released",
        )
    return NOTHING


def on_stock_rejected(order: Order, reason: str, shortages: tuple[Shortage, ...]) -> Decision:
    if order.status != S.PENDING:
        return NOTHING
    detail = ", ".join(f"{s.sku} (wanted {s.requested}, {s.available} left)" for s in shortages)
    why = f"out of stock: {detail}" if detail else reason
    rejected = replace(order, status=S.REJECTED, reason=why, deadline=None)
    return Decision(
        rejected,
        [OrderRejected(order_id=order.order_id, customer_id=order.customer_id, reason=why)],
        why,
    )


def on_payment_authorized(order: Order, now: datetime, d: Deadlines) -> Decision:
    if order.status == S.STOCK_RESERVED:
        moved, changed = _advanced(order, S.PAYMENT_AUTHORIZED, now, d)
        capture = CapturePayment(
            order_id=order.order_id, amount=order.total, idempotency_key=key(order, "capture")
        )
        return Decision(
            moved,
            [changed, CommitReservation(order_id=order.order_id), capture],
            "payment authorized; committing stock and capturing payment",
        )
    if order.ended_without_sale:
        void = VoidPayment(
            order_id=order.order_id, reason="order ended", idempotency_key=key(order, "void")
        )
        return Decision(None, [void], "late authorization voided")
    return NOTHING


def on_payment_declined(order: Order, code: str, reason: str, now: datetime) -> Decision:
    if order.status != S.STOCK_RESERVED:
        return NOTHING
    why = f"payment {code.replace('_', ' ')}: {reason}" if reason else f"payment {code}"
    msgs = compensations(order, why)
    cancelled, event = _cancel(order, why, now)
    return Decision(cancelled, [*msgs, event], why)


def _confirmed(order: Order, note: str) -> Decision:
    """Both the stock commit and the capture are in: the order is sold."""
    confirmed = replace(order, status=S.CONFIRMED, deadline=None, reason=None)
    event = OrderConfirmed(
        order_id=order.order_id, customer_id=order.customer_id, total=order.total
    )
    return Decision(confirmed, [event], note)


def on_reservation_committed(order: Order) -> Decision:
    if order.status == S.PAYMENT_AUTHORIZED and not order.stock_committed:
        moved = replace(order, stock_committed=True)
        if moved.payment_captured:
            return _confirmed(moved, "stock committed; order confirmed")
        return Decision(moved, [], "stock committed; waiting for the capture")
    if order.ended_without_sale and not order.stock_committed:
        restock = RestockOrder(order_id=order.order_id, reason=f"order already {order.status}")
        return Decision(replace(order, stock_committed=True), [restock], "late commit restocked")
    return NOTHING


def on_reservation_lost(order: Order, why: str, now: datetime) -> Decision:
    """The reservation expired or was released while the order still needed it."""
    if order.status in (S.STOCK_RESERVED, S.PAYMENT_AUTHORIZED) and not order.stock_committed:
        cancelled, event = _cancel(order, why, now)
        return Decision(cancelled, [_return_payment(order, why), event], why)
    if order.status == S.PENDING:
        cancelled, event = _cancel(order, why, now)
        return Decision(cancelled, [event], why)
    return NOTHING


def on_payment_captured(order: Order) -> Decision:
    if order.status == S.PAYMENT_AUTHORIZED and not order.payment_captured:
        moved = replace(order, payment_captured=True)
        if moved.stock_committed:
            return _confirmed(moved, "payment captured; order confirmed")
        return Decision(moved, [], "payment captured; waiting for the stock commit")
    if order.ended_without_sale and not order.refunded:
        refund = RefundPayment(
            order_id=order.order_id,
            amount=order.total,
            reason="order ended before capture",
            idempotency_key=key(order, "refund"),
        )
        return Decision(replace(order, payment_captured=True), [refund], "late capture refunded")
    return NOTHING


def on_capture_failed(order: Order, reason: str, now: datetime) -> Decision:
    if order.status != S.PAYMENT_AUTHORIZED:
        return NOTHING
    why = f"payment capture failed: {reason}"
    msgs = compensations(order, why)
    cancelled, event = _cancel(order, why, now)
    return Decision(cancelled, [*msgs, event], why)


def on_payment_refunded(order: Order) -> Decision:
    if order.refunded:
        return NOTHING
    return Decision(replace(order, refunded=True), [], "payment refunded")


def on_deadline(order: Order, now: datetime) -> Decision:
    """A step's deadline passed: compensate what was done and cancel."""
    if order.terminal or order.deadline is None or order.deadline > now:
        return NOTHING
    awaited = [] if order.stock_committed else ["stock commit"]
    awaited += [] if order.payment_captured else ["payment capture"]
    waiting = {S.PENDING: "stock reservation", S.STOCK_RESERVED: "payment authorization"}.get(
        order.status, " and ".join(awaited)
    )
    why = f"timed out waiting for {waiting}"
    msgs = compensations(order, why)
    cancelled, event = _cancel(order, why, now)
    return Decision(cancelled, [*msgs, event], why)


class CannotCancel(Exception):
    pass


def cancel(order: Order, reason: str, now: datetime) -> Decision:
    """A customer's cancel: before confirmation release and void; after it refund and restock."""
    if order.status == S.CONFIRMED:
        refund = RefundPayment(
            order_id=order.order_id,
            amount=order.total,
            reason=reason,
            idempotency_key=key(order, "refund"),
        )
        restock = RestockOrder(order_id=order.order_id, reason=reason)
        cancelled, event = _cancel(order, reason, now)
        return Decision(
            cancelled, [refund, restock, event], "cancelled after confirmation; refunding"
        )
    if order.ended_without_sale:
        raise CannotCancel(f"order is already {order.status}")
    msgs = compensations(order, reason)
    cancelled, event = _cancel(order, reason, now)
    return Decision(cancelled, [*msgs, event], "cancelled by customer")


class OrderRequestError(ValueError):
    """The order cannot be accepted as asked; the message says what is wrong."""


@dataclass(frozen=True)
class CatalogItem:
    sku: str
    price: Money
    active: bool


def price_lines(
    lines: list[StockLine], catalog: dict[str, CatalogItem], currency: str
) -> tuple[list[dict[str, object]], Money]:
    """Price each line from the service's own catalog view; clients never send prices."""
    problems: list[str] = []
    priced: list[dict[str, object]] = []
    total = 0
    for line in lines:
        item = catalog.get(line.sku)
        if item is None:
            problems.append(f"unknown SKU {line.sku}")
        elif not item.active:
            problems.append(f"SKU {line.sku} is not for sale")
        elif item.price.currency != currency:
            problems.append(f"SKU {line.sku} is priced in {item.price.currency}, not {currency}")
        else:
            priced.append(
                {"sku": line.sku, "quantity": line.quantity, "unit_price": item.price.amount}
            )
            total += item.price.amount * line.quantity
    if problems:
        raise OrderRequestError("; ".join(problems))
    return priced, Money(amount=total, currency=currency)


def new_order(
    order_id: uuid.UUID,
    customer_id: str,
    lines: list[StockLine],
    total: Money,
    payment_token: str,
    now: datetime,
    deadlines: Deadlines,
) -> Order:
    return Order(
        order_id=order_id,
        customer_id=customer_id,
        status=S.PENDING,
        lines=tuple(lines),
        total=total,
        payment_token=payment_token,
        deadline=now + deadlines.stock,
    )
