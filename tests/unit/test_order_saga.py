"""The order saga's decisions, without I/O."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from events.contracts import (
    AuthorizePayment,
    CapturePayment,
    CommitReservation,
    OrderCancelled,
    OrderConfirmed,
    OrderRejected,
    OrderStatus,
    RefundPayment,
    ReleaseReservation,
    RestockOrder,
    Shortage,
    StockLine,
    VoidPayment,
)
from events.messages import Money
from order_service import domain
from order_service.domain import CatalogItem, Deadlines, Order

S = OrderStatus
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
D = Deadlines()


def order(status: OrderStatus = S.PENDING, **changes: object) -> Order:
    base = Order(
        order_id=uuid.uuid4(),
        customer_id="c1",
        status=status,
        lines=(StockLine(sku="A", quantity=2),),
        total=Money(amount=1000, currency="USD"),
        payment_token="tok_approve",
        deadline=NOW + timedelta(seconds=30),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def kinds(decision: domain.Decision) -> list[type]:
    return [type(m) for m in decision.messages]


def test_stock_reserved_moves_a_pending_order_on_and_asks_for_payment() -> None:
    d = domain.on_stock_reserved(order(), NOW, D)
    assert d.order is not None
    assert d.order.status == S.STOCK_RESERVED
    authorize = d.messages[-1]
    assert isinstance(authorize, AuthorizePayment)
    assert authorize.idempotency_key.endswith(":authorize")
    assert d.order.deadline == NOW + D.payment


def test_a_reservation_arriving_after_the_order_was_cancelled_is_released() -> None:
    d = domain.on_stock_reserved(order(S.CANCELLED), NOW, D)
    assert d.order is None
    assert kinds(d) == [ReleaseReservation]


def test_a_duplicate_reservation_for_an_order_already_moving_on_changes_nothing() -> None:
    assert domain.on_stock_reserved(order(S.PAYMENT_AUTHORIZED), NOW, D) == domain.NOTHING


def test_out_of_stock_rejects_the_order_with_a_reason_naming_the_sku() -> None:
    d = domain.on_stock_rejected(order(), "short", (Shortage(sku="A", requested=2, available=1),))
    assert d.order is not None
    assert d.order.status == S.REJECTED
    assert "A (wanted 2, 1 left)" in (d.order.reason or "")
    assert kinds(d) == [OrderRejected]


def test_payment_declined_releases_the_reservation_and_voids_defensively() -> None:
    d = domain.on_payment_declined(order(S.STOCK_RESERVED), "insufficient_funds", "no", NOW)
    assert d.order is not None
    assert d.order.status == S.CANCELLED
    assert kinds(d) == [VoidPayment, ReleaseReservation, OrderCancelled]


def test_payment_authorized_commits_the_stock_and_captures_at_once() -> None:
    d = domain.on_payment_authorized(order(S.STOCK_RESERVED), NOW, D)
    assert d.order is not None
    assert d.order.status == S.PAYMENT_AUTHORIZED
    assert d.order.deadline == NOW + D.confirm
    assert kinds(d)[-2:] == [CommitReservation, CapturePayment]
    capture = d.messages[-1]
    assert isinstance(capture, CapturePayment)
    assert capture.idempotency_key.endswith(":capture")
    assert capture.amount == d.order.total


@pytest.mark.parametrize("commit_first", [True, False])
def test_the_order_is_confirmed_once_both_the_commit_and_the_capture_are_in(
    commit_first: bool,
) -> None:
    authorized = domain.on_payment_authorized(order(S.STOCK_RESERVED), NOW, D).order
    assert authorized is not None

    steps = [domain.on_reservation_committed, domain.on_payment_captured]
    first, second = steps if commit_first else steps[::-1]
    d1 = first(authorized)
    assert d1.order is not None
    assert d1.order.status == S.PAYMENT_AUTHORIZED
    assert d1.messages == []
    assert d1.order.deadline == authorized.deadline  # the confirm deadline still runs
    assert first(d1.order) == domain.NOTHING  # a duplicate of the first reply changes nothing
    d2 = second(d1.order)
    assert d2.order is not None
    assert d2.order.status == S.CONFIRMED
    assert d2.order.stock_committed
    assert d2.order.payment_captured
    assert d2.order.deadline is None
    assert kinds(d2) == [OrderConfirmed]


def test_a_reservation_lost_after_the_capture_is_refunded_not_voided() -> None:
    captured = order(S.PAYMENT_AUTHORIZED, payment_captured=True)
    d = domain.on_reservation_lost(captured, "reservation expired", NOW)
    assert d.order is not None
    assert d.order.status == S.CANCELLED
    assert d.order.refunded
    refunded_then_cancelled: list[type] = [RefundPayment, OrderCancelled]
    assert kinds(d) == refunded_then_cancelled
    refund = d.messages[0]
    assert isinstance(refund, RefundPayment)
    assert refund.amount == captured.total
    assert refund.idempotency_key.endswith(":refund")
    # the refund's own reply, and any repeat of the capture, change nothing more
    assert domain.on_payment_captured(d.order) == domain.NOTHING


def test_a_reservation_lost_before_the_capture_voids_and_a_capture_in_flight_is_refunded() -> None:
    d = domain.on_reservation_lost(order(S.PAYMENT_AUTHORIZED), "reservation expired", NOW)
    assert d.order is not None
    assert kinds(d) == [VoidPayment, OrderCancelled]
    assert not d.order.refunded
    # the capture sent with the commit was applied before the void: its reply refunds it
    late = domain.on_payment_captured(d.order)
    assert kinds(late) == [RefundPayment]


def test_a_failed_capture_while_the_commit_is_in_flight_is_restocked_when_the_commit_lands() -> (
    None
):
    d = domain.on_capture_failed(order(S.PAYMENT_AUTHORIZED), "gateway down", NOW)
    assert d.order is not None
    assert d.order.status == S.CANCELLED
    assert kinds(d) == [VoidPayment, ReleaseReservation, OrderCancelled]
    assert kinds(domain.on_reservation_committed(d.order)) == [RestockOrder]


def test_a_late_authorization_for_a_cancelled_order_is_voided() -> None:
    assert kinds(domain.on_payment_authorized(order(S.CANCELLED), NOW, D)) == [VoidPayment]


def test_a_capture_for_an_order_that_ended_is_refunded_once() -> None:
    d = domain.on_payment_captured(order(S.CANCELLED))
    assert kinds(d) == [RefundPayment]
    assert d.order is not None
    refunded = domain.on_payment_refunded(d.order)
    assert refunded.order is not None
    assert refunded.order.refunded
    assert domain.on_payment_captured(refunded.order) == domain.NOTHING


def test_a_commit_after_cancellation_is_restocked() -> None:
    d = domain.on_reservation_committed(order(S.CANCELLED))
    assert kinds(d) == [RestockOrder]


def test_reservation_expiry_while_waiting_for_payment_voids_and_cancels() -> None:
    d = domain.on_reservation_lost(order(S.STOCK_RESERVED), "reservation expired", NOW)
    assert d.order is not None
    assert d.order.status == S.CANCELLED
    assert kinds(d) == [VoidPayment, OrderCancelled]


@pytest.mark.parametrize(
    ("status", "committed", "expected"),
    [
        (S.PENDING, False, [ReleaseReservation, OrderCancelled]),
        (S.STOCK_RESERVED, False, [VoidPayment, ReleaseReservation, OrderCancelled]),
        (S.PAYMENT_AUTHORIZED, False, [VoidPayment, ReleaseReservation, OrderCancelled]),
        (S.PAYMENT_AUTHORIZED, True, [VoidPayment, RestockOrder, OrderCancelled]),
    ],
)
def test_a_missed_deadline_compensates_newest_step_first_and_cancels(
    status: OrderStatus, committed: bool, expected: list[type]
) -> None:
    late = order(status, stock_committed=committed, deadline=NOW - timedelta(seconds=1))
    d = domain.on_deadline(late, NOW)
    assert d.order is not None
    assert d.order.status == S.CANCELLED
    assert "timed out" in (d.order.reason or "")
    assert kinds(d) == expected


@pytest.mark.parametrize(
    ("committed", "captured", "expected", "waiting"),
    [
        (False, False, [VoidPayment, ReleaseReservation], "stock commit and payment capture"),
        (True, False, [VoidPayment, RestockOrder], "payment capture"),
        (False, True, [RefundPayment, ReleaseReservation], "stock commit"),
    ],
)
def test_a_missed_confirm_deadline_names_what_is_missing_and_returns_a_capture(
    committed: bool, captured: bool, expected: list[type], waiting: str
) -> None:
    late = order(
        S.PAYMENT_AUTHORIZED,
        stock_committed=committed,
        payment_captured=captured,
        deadline=NOW - timedelta(seconds=1),
    )
    d = domain.on_deadline(late, NOW)
    assert d.order is not None
    assert d.order.reason == f"timed out waiting for {waiting}"
    assert d.order.refunded is captured
    assert kinds(d) == [*expected, OrderCancelled]


def test_a_deadline_not_yet_passed_changes_nothing() -> None:
    assert domain.on_deadline(order(), NOW) == domain.NOTHING


def test_cancel_after_confirmation_refunds_and_restocks() -> None:
    d = domain.cancel(order(S.CONFIRMED, stock_committed=True, payment_captured=True), "r", NOW)
    assert d.order is not None
    assert d.order.status == S.CANCELLED
    assert d.order.refunded
    assert kinds(d) == [RefundPayment, RestockOrder, OrderCancelled]


def test_cancel_between_the_capture_and_the_commit_refunds_and_releases() -> None:
    d = domain.cancel(order(S.PAYMENT_AUTHORIZED, payment_captured=True), "r", NOW)
    assert d.order is not None
    assert d.order.refunded
    assert kinds(d) == [RefundPayment, ReleaseReservation, OrderCancelled]


def test_cancelling_an_order_that_already_ended_unsold_is_refused() -> None:
    with pytest.raises(domain.CannotCancel):
        domain.cancel(order(S.REJECTED), "r", NOW)


def test_orders_are_priced_from_the_catalog_view() -> None:
    catalog = {"A": CatalogItem("A", Money(amount=250, currency="USD"), True)}
    lines, total = domain.price_lines([StockLine(sku="A", quantity=3)], catalog, "USD")
    assert total == Money(amount=750, currency="USD")
    assert lines == [{"sku": "A", "quantity": 3, "unit_price": 250}]


def test_pricing_names_every_unknown_inactive_or_wrong_currency_line() -> None:
    catalog = {
        "OFF": CatalogItem("OFF", Money(amount=1, currency="USD"), False),
        "EUR": CatalogItem("EUR", Money(amount=1, currency="EUR"), True),
    }
    lines = [StockLine(sku=s, quantity=1) for s in ("NOPE", "OFF", "EUR")]
    with pytest.raises(domain.OrderRequestError) as err:
        domain.price_lines(lines, catalog, "USD")
    message = str(err.value)
    assert "unknown SKU NOPE" in message
    assert "OFF is not for sale" in message
    assert "priced in EUR" in message
