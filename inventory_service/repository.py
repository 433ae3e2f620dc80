"""Plain SQL for stock and reservations, and the few functions that map rows to domain values.

Every function runs on the caller's connection inside the caller's transaction. Stock rows are
always locked in sorted SKU order, so transactions that touch several SKUs cannot deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import asyncpg
import orjson

from events.contracts import StockLine
from events.kit.db import Conn
from inventory_service.domain import Reservation, ReservationStatus, StockLevel

LOCK_STOCK = """
SELECT sku, on_hand, reserved, low_stock_threshold FROM stock
WHERE sku = ANY($1::text[]) ORDER BY sku FOR UPDATE
"""
# The WHERE clause re-checks availability even though the rows are locked: a guard, not the plan.
RESERVE_UNITS = """
UPDATE stock AS s SET reserved = s.reserved + u.units, updated_at = now()
FROM unnest($1::text[], $2::int[]) AS u(sku, units)
WHERE s.sku = u.sku AND s.on_hand - s.reserved >= u.units
"""
UNRESERVE_UNITS = """
UPDATE stock AS s SET reserved = s.reserved - u.units, updated_at = now()
FROM unnest($1::text[], $2::int[]) AS u(sku, units)
WHERE s.sku = u.sku
"""
SELL_UNITS = """
UPDATE stock AS s
SET on_hand = s.on_hand - u.units, reserved = s.reserved - u.units, updated_at = now()
FROM unnest($1::text[], $2::int[]) AS u(sku, units)
WHERE s.sku = u.sku
"""
RETURN_UNITS = """
UPDATE stock AS s SET on_hand = s.on_hand + u.units, updated_at = now()
FROM unnest($1::text[], $2::int[]) AS u(sku, units)
WHERE s.sku = u.sku
"""
RESTOCK = """
INSERT INTO stock AS s (sku, on_hand, reserved, low_stock_threshold) VALUES ($1, $2, 0, $3)
ON CONFLICT (sku) DO UPDATE SET on_hand = s.on_hand + EXCLUDED.on_hand, updated_at = now()
RETURNING sku, on_hand, reserved, low_stock_threshold
"""
SELECT_STOCK = "SELECT sku, on_hand, reserved, low_stock_threshold FROM stock WHERE sku = $1"
LIST_STOCK = """
SELECT sku, on_hand, reserved, low_stock_threshold FROM stock
WHERE NOT $1::bool OR on_hand - reserved < low_stock_threshold
ORDER BY sku LIMIT $2 OFFSET $3
"""
COUNT_STOCK = """
SELECT count(*) FROM stock WHERE NOT $1::bool OR on_hand - reserved < low_stock_threshold
"""

LOCK_RESERVATION = """
SELECT order_id, status, lines, expires_at, updated_at FROM reservations
WHERE order_id = $1 FOR UPDATE
"""
INSERT_RESERVATION = """
INSERT INTO reservations (order_id, status, lines, expires_at)
VALUES ($1, 'RESERVED', $2::jsonb, now() + make_interval(secs => $3))
RETURNING expires_at
"""
SET_STATUS = """
UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1
"""
LOCK_DUE_RESERVATIONS = """
SELECT order_id, status, lines, expires_at, updated_at FROM reservations
WHERE status = 'RESERVED' AND expires_at < now()
ORDER BY order_id LIMIT $1 FOR UPDATE SKIP LOCKED
"""
EXPIRE_RESERVATIONS = """
UPDATE reservations SET status = 'EXPIRED', updated_at = now()
WHERE order_id = ANY($1::uuid[])
RETURNING order_id, status, lines, expires_at, updated_at
"""


class StockInvariantBroken(RuntimeError):
    """A conditional stock update did not apply although its rows were locked and checked."""


def _level(row: asyncpg.Record) -> StockLevel:
    return StockLevel(row["sku"], row["on_hand"], row["reserved"], row["low_stock_threshold"])


def _reservation(row: asyncpg.Record) -> Reservation:
    return Reservation(
        order_id=row["order_id"],
        status=ReservationStatus(row["status"]),
        lines=tuple(StockLine.model_validate(x) for x in orjson.loads(row["lines"])),
        expires_at=row["expires_at"],
        updated_at=row["updated_at"],
    )


def _columns(units: Mapping[str, int]) -> tuple[list[str], list[int]]:
    return list(units), list(units.values())


async def lock_stock(conn: Conn, skus: Sequence[str]) -> dict[str, StockLevel]:
    """Lock the stock rows of these SKUs in sorted order; unknown SKUs are simply absent."""
    rows = await conn.fetch(LOCK_STOCK, sorted(skus))
    return {row["sku"]: _level(row) for row in rows}


async def reserve_units(conn: Conn, units: Mapping[str, int]) -> None:
    """Add to reserved; every row must still have the units available, or nothing changes."""
    status = await conn.execute(RESERVE_UNITS, *_columns(units))
    if status != f"UPDATE {len(units)}":
        raise StockInvariantBroken(f"reserving {units} applied as {status!r}")


async def unreserve_units(conn: Conn, units: Mapping[str, int]) -> None:
    """Take units off reserved: a release or an expiry."""
    await _locked_update(conn, UNRESERVE_UNITS, units)


async def sell_units(conn: Conn, units: Mapping[str, int]) -> None:
    """Reserved units leave the warehouse: off reserved and off on hand."""
    await _locked_update(conn, SELL_UNITS, units)


async def return_units(conn: Conn, units: Mapping[str, int]) -> None:
    """Sold units come back on hand."""
    await _locked_update(conn, RETURN_UNITS, units)


async def _locked_update(conn: Conn, sql: str, units: Mapping[str, int]) -> None:
    # An UPDATE ... FROM locks rows in join order; take the locks in SKU order first.
    skus, counts = _columns(units)
    await conn.execute(LOCK_STOCK, sorted(skus))
    await conn.execute(sql, skus, counts)


async def restock(conn: Conn, sku: str, quantity: int, threshold: int) -> StockLevel:
    """Add units on hand, creating the SKU with the given low-stock threshold if it is new."""
    row = await conn.fetchrow(RESTOCK, sku, quantity, threshold)
    assert row is not None
    return _level(row)


async def get_stock(conn: Conn, sku: str) -> StockLevel | None:
    row = await conn.fetchrow(SELECT_STOCK, sku)
    return _level(row) if row else None


async def list_stock(
    conn: Conn, *, below_threshold: bool, limit: int, offset: int
) -> list[StockLevel]:
    """A page of stock rows in SKU order."""
    return [_level(r) for r in await conn.fetch(LIST_STOCK, below_threshold, limit, offset)]


async def count_stock(conn: Conn, *, below_threshold: bool) -> int:
    total: int = await conn.fetchval(COUNT_STOCK, below_threshold)
    return total


async def lock_reservation(conn: Conn, order_id: uuid.UUID) -> Reservation | None:
    row = await conn.fetchrow(LOCK_RESERVATION, order_id)
    return _reservation(row) if row else None


async def insert_reservation(
    conn: Conn, order_id: uuid.UUID, lines: Sequence[StockLine], ttl: timedelta
) -> datetime:
    """Record a RESERVED reservation expiring ttl from now (database time); return its expiry."""
    payload = orjson.dumps([line.model_dump(mode="json") for line in lines]).decode()
    expires_at: datetime = await conn.fetchval(
        INSERT_RESERVATION, order_id, payload, ttl.total_seconds()
    )
    return expires_at


async def set_status(conn: Conn, order_id: uuid.UUID, status: ReservationStatus) -> None:
    await conn.execute(SET_STATUS, order_id, status.value)


async def lock_due_reservations(conn: Conn, limit: int) -> list[Reservation]:
    """Lock RESERVED reservations past their expiry, skipping any another transaction holds."""
    return [_reservation(r) for r in await conn.fetch(LOCK_DUE_RESERVATIONS, limit)]


async def mark_expired(conn: Conn, order_ids: Sequence[uuid.UUID]) -> list[Reservation]:
    return [_reservation(r) for r in await conn.fetch(EXPIRE_RESERVATIONS, list(order_ids))]
