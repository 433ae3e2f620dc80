"""SQL of the order service: orders, their timeline, the local catalog view, idempotency keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson

from events.contracts import OrderStatus, ProductUpserted, StockLine
from events.kit.db import Conn
from events.messages import Money
from order_service.domain import Order

UPSERT_PRODUCT = """
INSERT INTO catalog_view (sku, name, category, price_amount, currency, active, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (sku) DO UPDATE SET
    name = EXCLUDED.name, category = EXCLUDED.category, price_amount = EXCLUDED.price_amount,
    currency = EXCLUDED.currency, active = EXCLUDED.active, updated_at = EXCLUDED.updated_at
WHERE catalog_view.updated_at <= EXCLUDED.updated_at
"""
SELECT_PRODUCTS = """
SELECT sku, name, category, price_amount, currency, active
FROM catalog_view WHERE sku = ANY($1::text[])
"""
# A batch's orders, locked in one fixed order (by id) so that concurrent batches cannot deadlock.
SELECT_ORDERS_FOR_UPDATE = """
SELECT * FROM orders WHERE order_id = ANY($1::uuid[]) ORDER BY order_id FOR UPDATE
"""
SELECT_ORDER = "SELECT * FROM orders WHERE order_id = $1"
# A batch's saga steps: every changed order and every timeline entry, in one statement.
SAVE_STEPS = """
WITH saved AS (
    UPDATE orders AS o SET status = u.status, stock_committed = u.stock_committed,
        payment_captured = u.payment_captured, refunded = u.refunded, reason = u.reason,
        deadline = u.deadline, updated_at = now()
    FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::bool[], $5::bool[], $6::text[],
        $7::timestamptz[])
        AS u(order_id, status, stock_committed, payment_captured, refunded, reason, deadline)
    WHERE o.order_id = u.order_id
)
INSERT INTO order_timeline (order_id, status, note)
SELECT t.order_id, t.status, t.note
FROM unnest($8::uuid[], $9::text[], $10::text[]) WITH ORDINALITY AS t(order_id, status, note, n)
ORDER BY t.n
"""
INSERT_ORDER_WITH_TIMELINE = """
WITH placed AS (
    INSERT INTO orders
        (order_id, customer_id, status, lines, total_amount, currency, payment_token, deadline)
    VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8)
)
INSERT INTO order_timeline (order_id, status, note) VALUES ($1, $3, 'order placed')
"""
SELECT_TIMELINE = """
SELECT id, status, note, at FROM order_timeline WHERE order_id = $1 AND id > $2 ORDER BY id
"""
SELECT_CUSTOMER_ORDERS = """
SELECT order_id, status, total_amount, currency, reason, created_at, updated_at,
    count(*) OVER () AS total
FROM orders WHERE customer_id = $1 ORDER BY created_at DESC, order_id LIMIT $2 OFFSET $3
"""
SELECT_OVERDUE = """
SELECT * FROM orders WHERE deadline < $1 ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED
"""
# Serialises one customer's order placements, so two at once cannot both pass the cap.
LOCK_CUSTOMER = "SELECT pg_advisory_xact_lock(hashtextextended($1, 7340004))"
COUNT_OPEN_ORDERS = """
SELECT count(*) FROM orders WHERE customer_id = $1 AND status IN ('PENDING', 'STOCK_RESERVED')
"""
PURGE_IDEMPOTENCY_KEYS = """
DELETE FROM idempotency_keys WHERE ctid IN (
    SELECT ctid FROM idempotency_keys WHERE created_at < $1 ORDER BY created_at LIMIT $2
)
"""
LOCK_IDEMPOTENCY_KEY = (
    "SELECT pg_try_advisory_xact_lock(hashtextextended($1 || ':' || $2, 7340003))"
)
SELECT_IDEMPOTENCY_KEY = """
SELECT request_hash, status_code, response FROM idempotency_keys WHERE customer_id = $1 AND key = $2
"""
INSERT_IDEMPOTENCY_KEY = """
INSERT INTO idempotency_keys (customer_id, key, request_hash, status_code, response)
VALUES ($1, $2, $3, $4, $5::jsonb)
"""


async def upsert_product(conn: Conn, p: ProductUpserted) -> None:
    await conn.execute(
        UPSERT_PRODUCT,
        p.sku,
        p.name,
        p.category,
        p.price.amount,
        p.price.currency,
        p.active,
        p.updated_at,
    )


async def products(conn: Conn, skus: list[str]) -> dict[str, Any]:
    return {r["sku"]: r for r in await conn.fetch(SELECT_PRODUCTS, skus)}


def _order(row: Any) -> Order:
    return Order(
        order_id=row["order_id"],
        customer_id=row["customer_id"],
        status=OrderStatus(row["status"]),
        lines=tuple(
            StockLine(sku=ln["sku"], quantity=ln["quantity"]) for ln in orjson.loads(row["lines"])
        ),
        total=Money(amount=row["total_amount"], currency=row["currency"]),
        payment_token=row["payment_token"],
        stock_committed=row["stock_committed"],
        payment_captured=row["payment_captured"],
        refunded=row["refunded"],
        reason=row["reason"],
        deadline=row["deadline"],
    )


async def insert_order(conn: Conn, order: Order, priced_lines: list[dict[str, Any]]) -> None:
    """The new order and its first timeline entry ("order placed")."""
    await conn.execute(
        INSERT_ORDER_WITH_TIMELINE,
        order.order_id,
        order.customer_id,
        order.status.value,
        orjson.dumps(priced_lines).decode(),
        order.total.amount,
        order.total.currency,
        order.payment_token,
        order.deadline,
    )


async def lock_orders(conn: Conn, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, Order]:
    """The orders with these ids (those that exist), each locked until the transaction ends."""
    rows = await conn.fetch(SELECT_ORDERS_FOR_UPDATE, order_ids)
    return {row["order_id"]: _order(row) for row in rows}


async def get_order_row(conn: Conn, order_id: uuid.UUID) -> Any:
    return await conn.fetchrow(SELECT_ORDER, order_id)


TimelineEntry = tuple[uuid.UUID, OrderStatus, str | None]


async def save_steps(conn: Conn, orders: list[Order], entries: list[TimelineEntry]) -> None:
    """Save the changed orders and append the timeline entries (in their order)."""
    await conn.execute(
        SAVE_STEPS,
        [o.order_id for o in orders],
        [o.status.value for o in orders],
        [o.stock_committed for o in orders],
        [o.payment_captured for o in orders],
        [o.refunded for o in orders],
        [o.reason for o in orders],
        [o.deadline for o in orders],
        [e[0] for e in entries],
        [e[1].value for e in entries],
        [e[2] for e in entries],
    )


async def timeline(conn: Conn, order_id: uuid.UUID, after_id: int = 0) -> list[Any]:
    return list(await conn.fetch(SELECT_TIMELINE, order_id, after_id))


async def customer_orders(conn: Conn, customer_id: str, limit: int, offset: int) -> list[Any]:
    return list(await conn.fetch(SELECT_CUSTOMER_ORDERS, customer_id, limit, offset))


async def overdue_orders(conn: Conn, now: datetime, limit: int) -> list[Order]:
    return [_order(r) for r in await conn.fetch(SELECT_OVERDUE, now, limit)]
