"""Plain SQL for stock and reservations, and the few functions that map rows to domain values.

Every function runs on the caller's connection inside the caller's transaction. Stock rows are
always locked in sorted SKU order, so transactions that touch several SKUs cannot deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import asyncpg
import orjson

from events.contracts import StockLine
from events.kit.db import Conn
from events.kit.inbox import Writes
from inventory_service.domain import Reservation, ReservationStatus, StockLevel

LOCK_STOCK = """
SELECT sku, on_hand, reserved, low_stock_threshold FROM stock
WHERE sku = ANY($1::text[]) ORDER BY sku FOR UPDATE
"""
UNRESERVE_UNITS = """
UPDATE stock AS s SET reserved = s.reserved - u.units, updated_at = now()
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

# A batch's reservations and stock rows, locked, in one round trip: the reservations of the orders
# named, in order-id order, then the stock rows of every SKU the commands or those reservations
# name, in SKU order (as before in two statements, so the locks are taken in the same order as
# everywhere else: reservations, then stock), and the transaction's time, which reservations made
# in it expire from. A row locked after waiting for another transaction is read as that one left
# it. One result, its rows told apart by `what`.
LOCK_BATCH = """
WITH r AS MATERIALIZED (
    SELECT order_id, status, lines, expires_at, updated_at FROM reservations
    WHERE order_id = ANY($1::uuid[]) ORDER BY order_id FOR UPDATE
), s AS MATERIALIZED (
    SELECT sku, on_hand, reserved, low_stock_threshold FROM stock
    WHERE sku = ANY(ARRAY(
        SELECT unnest($2::text[])
        UNION SELECT line->>'sku' FROM r, jsonb_array_elements(r.lines) AS line
    ))
    ORDER BY sku FOR UPDATE
)
SELECT 'reservation' AS what, order_id, status, lines, expires_at, updated_at,
    NULL::text AS sku, NULL::int AS on_hand, NULL::int AS reserved,
    NULL::int AS low_stock_threshold, NULL::timestamptz AS db_now
FROM r
UNION ALL
SELECT 'stock', NULL, NULL, NULL, NULL, NULL, sku, on_hand, reserved, low_stock_threshold, NULL
FROM s
UNION ALL
SELECT 'now', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, now()
"""
# Everything a batch changed, as CTEs for the consumer's last statement (events.kit.inbox.Writes;
# on its own, Writes.execute). The stock rows it updates are locked, so it sets
# their values; SKUs new to the batch are added to whatever a concurrent insert put there. The
# table's CHECKs refuse any row that would oversell.
SAVE_BATCH_WRITES = """
new_stock AS (
    INSERT INTO stock AS s (sku, on_hand, reserved, low_stock_threshold)
    SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::int[])
    ON CONFLICT (sku) DO UPDATE SET on_hand = s.on_hand + EXCLUDED.on_hand,
        reserved = s.reserved + EXCLUDED.reserved, updated_at = now()
), changed_stock AS (
    UPDATE stock AS s SET on_hand = u.on_hand, reserved = u.reserved, updated_at = now()
    FROM unnest($5::text[], $6::int[], $7::int[]) AS u(sku, on_hand, reserved)
    WHERE s.sku = u.sku
), new_reservations AS (
    INSERT INTO reservations (order_id, status, lines, expires_at)
    SELECT r.order_id, r.status, r.lines::jsonb, r.expires_at
    FROM unnest($8::uuid[], $9::text[], $10::text[], $11::timestamptz[])
        AS r(order_id, status, lines, expires_at)
), reservation_statuses AS (
    UPDATE reservations AS r SET status = u.status, updated_at = now()
    FROM unnest($12::uuid[], $13::text[]) AS u(order_id, status)
    WHERE r.order_id = u.order_id
)
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


async def lock_stock(conn: Conn, skus: Sequence[str]) -> dict[str, StockLevel]:
    """Lock the stock rows of these SKUs in sorted order; unknown SKUs are simply absent."""
    rows = await conn.fetch(LOCK_STOCK, sorted(skus))
    return {row["sku"]: _level(row) for row in rows}


async def unreserve_units(conn: Conn, units: Mapping[str, int]) -> None:
    """Take units off reserved (an expiry), the rows locked in SKU order first: an UPDATE ...
    FROM would lock them in join order."""
    await lock_stock(conn, list(units))
    await conn.execute(UNRESERVE_UNITS, list(units), list(units.values()))


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


async def lock_batch(
    conn: Conn, order_ids: Iterable[uuid.UUID], skus: Iterable[str]
) -> tuple[dict[uuid.UUID, Reservation], dict[str, StockLevel], datetime]:
    """Lock these orders' reservations (those that exist), then the stock rows of these SKUs and
    of the reservations' lines (those that exist), in one statement (LOCK_BATCH); also the
    transaction's time."""
    reservations: dict[uuid.UUID, Reservation] = {}
    levels: dict[str, StockLevel] = {}
    now: datetime | None = None
    for row in await conn.fetch(LOCK_BATCH, sorted(set(order_ids)), sorted(set(skus))):
        what = row["what"]
        if what == "stock":
            levels[row["sku"]] = _level(row)
        elif what == "reservation":
            reservations[row["order_id"]] = _reservation(row)
        else:
            now = row["db_now"]
    assert now is not None  # the statement's last row, always there
    return reservations, levels, now


def save_batch(
    *,
    new_stock: Sequence[StockLevel],
    changed_stock: Sequence[StockLevel],
    new_reservations: Sequence[Reservation],
    statuses: Mapping[uuid.UUID, ReservationStatus],
) -> Writes:
    """Write what a batch changed (see SAVE_BATCH_WRITES)."""
    return Writes(
        SAVE_BATCH_WRITES,
        [
            [x.sku for x in new_stock],
            [x.on_hand for x in new_stock],
            [x.reserved for x in new_stock],
            [x.low_stock_threshold for x in new_stock],
            [x.sku for x in changed_stock],
            [x.on_hand for x in changed_stock],
            [x.reserved for x in changed_stock],
            [r.order_id for r in new_reservations],
            [r.status.value for r in new_reservations],
            [_lines_json(r.lines) for r in new_reservations],
            [r.expires_at for r in new_reservations],
            list(statuses),
            [status.value for status in statuses.values()],
        ],
    )


def _lines_json(lines: Sequence[StockLine]) -> str:
    return orjson.dumps([line.model_dump(mode="json") for line in lines]).decode()


async def lock_due_reservations(conn: Conn, limit: int) -> list[Reservation]:
    """Lock RESERVED reservations past their expiry, skipping any another transaction holds."""
    return [_reservation(r) for r in await conn.fetch(LOCK_DUE_RESERVATIONS, limit)]


async def mark_expired(conn: Conn, order_ids: Sequence[uuid.UUID]) -> list[Reservation]:
    return [_reservation(r) for r in await conn.fetch(EXPIRE_RESERVATIONS, list(order_ids))]
