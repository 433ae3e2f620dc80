"""inventory_service.domain: pure decisions about stock and reservations, no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from events.contracts import (
    LowStockDetected,
    OrderRestocked,
    ReservationCommitted,
    ReservationExpired,
    ReservationReleased,
    Shortage,
    StockLine,
    StockReserved,
)
from inventory_service.domain import (
    Reservation,
    ReservationStatus,
    StockLevel,
    describe,
    level_changed,
    low_stock_crossings,
    no_reservation,
    shortages,
    total_units,
    units_by_sku,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def line(sku: str, quantity: int) -> StockLine:
    return StockLine(sku=sku, quantity=quantity)


def level(sku: str, on_hand: int, reserved: int = 0, threshold: int = 10) -> StockLevel:
    return StockLevel(sku=sku, on_hand=on_hand, reserved=reserved, low_stock_threshold=threshold)


def reservation(status: ReservationStatus, *lines: StockLine) -> Reservation:
    return Reservation(
        order_id=uuid.uuid4(),
        status=status,
        lines=lines or (line("A", 1),),
        expires_at=NOW + timedelta(minutes=2),
        updated_at=NOW,
    )


def test_two_lines_of_one_sku_add_up_to_one_demand() -> None:
    assert units_by_sku([line("B", 2), line("A", 1), line("B", 3)]) == {"A": 1, "B": 5}


def test_units_come_out_in_sorted_sku_order_so_locks_are_taken_in_one_order() -> None:
    assert list(units_by_sku([line("c", 1), line("a", 1), line("b", 1)])) == ["a", "b", "c"]


def test_units_of_several_reservations_are_summed_per_sku() -> None:
    a = reservation(ReservationStatus.RESERVED, line("X", 2), line("Y", 1))
    b = reservation(ReservationStatus.RESERVED, line("X", 3))
    assert total_units([a, b]) == {"X": 5, "Y": 1}


def test_no_shortage_when_every_sku_covers_its_demand_exactly() -> None:
    assert shortages({"A": 5, "B": 1}, {"A": level("A", 7, 2), "B": level("B", 1)}) == ()


def test_reserved_units_are_not_available() -> None:
    assert shortages({"A": 3}, {"A": level("A", 5, reserved=3)}) == (
        Shortage(sku="A", requested=3, available=2),
    )


def test_an_unknown_sku_is_short_with_nothing_available() -> None:
    assert shortages({"NOPE": 1}, {}) == (Shortage(sku="NOPE", requested=1, available=0),)


def test_every_short_sku_is_reported_with_its_summed_demand() -> None:
    wanted = units_by_sku([line("A", 600), line("A", 600), line("B", 1), line("C", 2)])
    found = shortages(wanted, {"A": level("A", 1000), "B": level("B", 5)})
    assert found == (
        Shortage(sku="A", requested=1200, available=1000),
        Shortage(sku="C", requested=2, available=0),
    )


def test_low_stock_is_detected_when_a_reservation_crosses_the_threshold() -> None:
    alerts = low_stock_crossings({"A": 3}, {"A": level("A", 12, threshold=10)})
    assert alerts == [LowStockDetected(sku="A", available=9, threshold=10)]


def test_low_stock_is_not_detected_again_once_below_the_threshold() -> None:
    assert low_stock_crossings({"A": 1}, {"A": level("A", 9, threshold=10)}) == []


def test_low_stock_is_not_detected_while_available_stays_at_the_threshold() -> None:
    assert low_stock_crossings({"A": 2}, {"A": level("A", 12, threshold=10)}) == []


def test_a_zero_threshold_never_raises_low_stock() -> None:
    assert low_stock_crossings({"A": 5}, {"A": level("A", 5, threshold=0)}) == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (ReservationStatus.RESERVED, StockReserved),
        (ReservationStatus.COMMITTED, ReservationCommitted),
        (ReservationStatus.RELEASED, ReservationReleased),
        (ReservationStatus.EXPIRED, ReservationExpired),
        (ReservationStatus.RESTOCKED, OrderRestocked),
    ],
)
def test_a_reservation_is_described_by_the_event_of_its_state(
    status: ReservationStatus, expected: type
) -> None:
    r = reservation(status, line("A", 2), line("A", 1))
    event = describe(r)
    assert isinstance(event, expected)
    assert event.order_id == r.order_id  # type: ignore[attr-defined]
    # A restatement moves no stock: the event that moved it carried the lines.
    assert event.lines == ()  # type: ignore[attr-defined]


def test_an_expired_reservation_says_when_it_expired() -> None:
    r = reservation(ReservationStatus.EXPIRED)
    assert describe(r) == ReservationExpired(order_id=r.order_id, lines=(), expired_at=NOW)


def test_a_live_reservation_says_when_it_expires() -> None:
    r = reservation(ReservationStatus.RESERVED)
    assert describe(r) == StockReserved(order_id=r.order_id, lines=(), expires_at=r.expires_at)


def test_an_order_never_reserved_is_answered_as_released_with_no_lines() -> None:
    order_id = uuid.uuid4()
    assert no_reservation(order_id) == ReservationReleased(
        order_id=order_id, lines=(), reason="no reservation"
    )


def test_a_stock_level_change_reports_available_units() -> None:
    changed = level_changed(level("A", 10, reserved=4), cause="restock")
    assert (changed.on_hand, changed.reserved, changed.available) == (10, 4, 6)
    assert changed.cause == "restock"
