"""What each saga event means for its order's facts: one pure function per event type.

A handler gets the order's current facts (None for an order not seen yet), the message, its event
time in epoch milliseconds and whether it arrived past the grace period; it returns the new facts,
or None when the event changes nothing (a duplicate, or a fact already known).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from analytics_service.domain import Facts, set_fact
from events.contracts import (
    OrderCancelled,
    OrderConfirmed,
    OrderPlaced,
    OrderRejected,
    PaymentAuthorized,
    PaymentDeclined,
    StockRejected,
)
from events.messages import Message

OrderHandler = Callable[[Facts | None, Any, int, bool], Facts | None]


def order_placed(facts: Facts | None, msg: OrderPlaced, ts: int, late: bool) -> Facts | None:
    """The order's time, currency, total and priced lines."""
    lines = [[line.sku, line.quantity, line.unit_price.amount] for line in msg.lines]
    return set_fact(facts, "placed", [ts, msg.total.currency, msg.total.amount, lines], late)


def order_confirmed(facts: Facts | None, msg: OrderConfirmed, ts: int, late: bool) -> Facts | None:
    """A sale: its revenue counts in the minute it was confirmed."""
    return set_fact(facts, "confirmed", [ts, msg.total.currency, msg.total.amount], late)


def order_rejected(facts: Facts | None, msg: OrderRejected, ts: int, late: bool) -> Facts | None:
    return set_fact(facts, "rejected", [ts], late)


def order_cancelled(facts: Facts | None, msg: OrderCancelled, ts: int, late: bool) -> Facts | None:
    return set_fact(facts, "cancelled", [ts, msg.refunded], late)


def stock_rejected(facts: Facts | None, msg: StockRejected, ts: int, late: bool) -> Facts | None:
    """Inventory could not reserve the order: an out-of-stock rejection."""
    return set_fact(facts, "stock_rejected", [ts], late)


def payment_authorized(
    facts: Facts | None, msg: PaymentAuthorized, ts: int, late: bool
) -> Facts | None:
    return set_fact(facts, "authorized", [ts], late)


def payment_declined(
    facts: Facts | None, msg: PaymentDeclined, ts: int, late: bool
) -> Facts | None:
    return set_fact(facts, "declined", [ts, msg.code], late)


ORDER_HANDLERS: dict[type[Message], OrderHandler] = {
    OrderPlaced: order_placed,
    OrderConfirmed: order_confirmed,
    OrderRejected: order_rejected,
    OrderCancelled: order_cancelled,
    StockRejected: stock_rejected,
    PaymentAuthorized: payment_authorized,
    PaymentDeclined: payment_declined,
}
