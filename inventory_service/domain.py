"""Stock and reservations as plain values, and the decisions about them. No I/O."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from events.contracts import (
    LowStockDetected,
    OrderRestocked,
    ReservationCommitted,
    ReservationExpired,
    ReservationReleased,
    Shortage,
    StockLevelChanged,
    StockLine,
    StockReserved,
)
from events.messages import Message

INSUFFICIENT_STOCK = "insufficient stock"
NO_RESERVATION = "no reservation"

# SKU -> units, in sorted SKU order: the order rows are locked in.
Units = dict[str, int]


class ReservationStatus(StrEnum):
    RESERVED = "RESERVED"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"
    RESTOCKED = "RESTOCKED"


@dataclass(frozen=True)
class Policy:
    """The service's tunables that handlers need, taken from Settings once."""

    reservation_ttl: timedelta = timedelta(seconds=120)
    low_stock_threshold: int = 10


@dataclass(frozen=True)
class StockLevel:
    sku: str
    on_hand: int
    reserved: int
    low_stock_threshold: int

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved

    @property
    def is_low(self) -> bool:
        return self.available < self.low_stock_threshold


@dataclass(frozen=True)
class Reservation:
    order_id: uuid.UUID
    status: ReservationStatus
    lines: tuple[StockLine, ...]
    expires_at: datetime
    updated_at: datetime

    @property
    def units(self) -> Units:
        return units_by_sku(self.lines)


def units_by_sku(lines: Iterable[StockLine]) -> Units:
    """Units per SKU, sorted by SKU; two lines of one SKU draw on the same stock."""
    units: dict[str, int] = {}
    for line in lines:
        units[line.sku] = units.get(line.sku, 0) + line.quantity
    return dict(sorted(units.items()))


def total_units(reservations: Iterable[Reservation]) -> Units:
    """Units per SKU over several reservations, sorted by SKU."""
    return units_by_sku(line for r in reservations for line in r.lines)


def shortages(wanted: Mapping[str, int], levels: Mapping[str, StockLevel]) -> tuple[Shortage, ...]:
    """The SKUs that cannot cover what is wanted; an unknown SKU has nothing available."""
    short = []
    for sku, requested in sorted(wanted.items()):
        level = levels.get(sku)
        available = level.available if level else 0
        if available < requested:
            short.append(Shortage(sku=sku, requested=requested, available=max(0, available)))
    return tuple(short)


def after_reserving(level: StockLevel, units: int) -> StockLevel:
    return moved(level, reserved=units)


def moved(level: StockLevel, *, on_hand: int = 0, reserved: int = 0) -> StockLevel:
    """The level after units move on or off hand and on or off reserved; refuses a level that
    would oversell (the database's CHECKs would refuse it too)."""
    after = replace(level, on_hand=level.on_hand + on_hand, reserved=level.reserved + reserved)
    if after.reserved < 0 or after.reserved > after.on_hand:
        raise ValueError(f"stock of {level.sku} cannot go to {after}")
    return after


def low_stock_crossings(
    wanted: Mapping[str, int], levels: Mapping[str, StockLevel]
) -> list[LowStockDetected]:
    """One alert per SKU whose available stock falls below its threshold by this reservation."""
    alerts = []
    for sku, units in sorted(wanted.items()):
        before = levels[sku]
        after = after_reserving(before, units)
        if after.is_low and not before.is_low:
            alerts.append(
                LowStockDetected(
                    sku=sku, available=after.available, threshold=after.low_stock_threshold
                )
            )
    return alerts


def level_changed(level: StockLevel, *, cause: str) -> StockLevelChanged:
    return StockLevelChanged(
        sku=level.sku,
        on_hand=level.on_hand,
        reserved=level.reserved,
        available=level.available,
        cause=cause,
    )


def describe(reservation: Reservation, *, reason: str | None = None) -> Message:
    """The event that tells the saga where a reservation stands; the reply to a repeated or late
    command. It carries no lines: it moves no stock, and the log (which `shop events audit` and
    any rebuilt read model add up) must hold each reservation's movements once, in the events
    that made them."""
    order_id, lines = reservation.order_id, ()
    match reservation.status:
        case ReservationStatus.RESERVED:
            return StockReserved(order_id=order_id, lines=lines, expires_at=reservation.expires_at)
        case ReservationStatus.COMMITTED:
            return ReservationCommitted(order_id=order_id, lines=lines)
        case ReservationStatus.RELEASED:
            return ReservationReleased(order_id=order_id, lines=lines, reason=reason or "released")
        case ReservationStatus.EXPIRED:
            return ReservationExpired(
                order_id=order_id, lines=lines, expired_at=reservation.updated_at
            )
        case ReservationStatus.RESTOCKED:
            return OrderRestocked(order_id=order_id, lines=lines)


def no_reservation(order_id: uuid.UUID) -> ReservationReleased:
    """The reply for an order inventory never reserved: nothing is held for it."""
    return ReservationReleased(order_id=order_id, lines=(), reason=NO_RESERVATION)
