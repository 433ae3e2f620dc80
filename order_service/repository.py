"""SQL of the order service: orders, their timeline, the local catalog view, idempotency keys."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from events.contracts import OrderStatus, ProductUpserted, StockLine
from events.kit import outbox
from events.kit.db import Conn
from events.kit.inbox import Writes
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
# A batch's saga steps: the changed orders and their timeline entries (in their order). As CTEs, so
# that the consumer's last statement may carry them (`events.kit.inbox.Writes`).
SAVE_STEPS_WRITES = """
saved AS (
    UPDATE orders AS o SET status = u.status, stock_committed = u.stock_committed,
        payment_captured = u.payment_captured, refunded = u.refunded, reason = u.reason,
        deadline = u.deadline, updated_at = now()
    FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::bool[], $5::bool[], $6::text[],
        $7::timestamptz[])
        AS u(order_id, status, stock_committed, payment_captured, refunded, reason, deadline)
    WHERE o.order_id = u.order_id
), timeline AS (
    INSERT INTO order_timeline (order_id, status, note)
    SELECT t.order_id, t.status, t.note
    FROM unnest($8::uuid[], $9::text[], $10::text[]) WITH ORDINALITY
        AS t(order_id, status, note, n)
    ORDER BY t.n
)
"""
# A batch of placements in one statement: the orders, their first timeline entries, the answers
# kept for their Idempotency-Keys, their events in the outbox (in order) and the relay's wake-up.
# The timeline's foreign key is checked at the end of the statement, after the orders' insert.
PLACE_ORDERS = f"""
WITH placed AS (
    INSERT INTO orders
        (order_id, customer_id, status, lines, total_amount, currency, payment_token, deadline)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::bigint[],
        $6::text[], $7::text[], $8::timestamptz[])
), timeline AS (
    INSERT INTO order_timeline (order_id, status, note)
    SELECT t.order_id, t.status, 'order placed'
    FROM unnest($1::uuid[], $3::text[]) AS t(order_id, status)
), answers AS (
    INSERT INTO idempotency_keys (customer_id, key, request_hash, status_code, response)
    SELECT * FROM unnest($9::text[], $10::text[], $11::text[], $12::int[], $13::jsonb[])
), sent AS (
    {outbox.insert_rows(14)}
)
SELECT pg_notify($20, '') WHERE $20 <> ''
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
# The customers' placement locks, which serialise each customer's placements so that two at once
# cannot both pass the cap, taken in the order given (sorted: concurrent batches cannot deadlock),
# and the prices of the SKUs, in one round trip (the locked row is the outer side: the locks are
# taken even when no SKU is known). The open orders are counted by the next statement, whose
# snapshot sees every placement committed before the locks were granted.
LOCK_CUSTOMERS_SELECT_PRODUCTS = """
WITH locked AS MATERIALIZED (
    SELECT count(pg_advisory_xact_lock(hashtextextended(c, 7340004))) AS n
    FROM unnest($1::text[]) AS c
)
SELECT p.sku, p.price_amount, p.currency, p.active
FROM locked LEFT JOIN catalog_view AS p ON p.sku = ANY($2::text[])
"""
COUNT_OPEN_ORDERS = """
SELECT customer_id, count(*) AS open FROM orders
WHERE customer_id = ANY($1::text[]) AND status IN ('PENDING', 'STOCK_RESERVED')
GROUP BY customer_id
"""
PURGE_IDEMPOTENCY_KEYS = """
DELETE FROM idempotency_keys WHERE ctid IN (
    SELECT ctid FROM idempotency_keys WHERE created_at < $1 ORDER BY created_at LIMIT $2
)
"""
# A request holding an Idempotency-Key holds its lock until it commits; another request with
# the same key meanwhile does not wait for it (it is answered 409). Then the answers kept.
TRY_LOCK_IDEMPOTENCY_KEYS = """
SELECT t.customer_id, t.key,
    pg_try_advisory_xact_lock(hashtextextended(t.customer_id || ':' || t.key, 7340003)) AS locked
FROM unnest($1::text[], $2::text[]) AS t(customer_id, key)
"""
SELECT_IDEMPOTENCY_KEYS = """
SELECT k.customer_id, k.key, k.request_hash, k.status_code, k.response
FROM unnest($1::text[], $2::text[]) AS t(customer_id, key)
JOIN idempotency_keys AS k ON k.customer_id = t.customer_id AND k.key = t.key
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


@functools.lru_cache(maxsize=8192)
def _stock_lines(lines_json: str) -> tuple[StockLine, ...]:
    """An order's lines from its `lines` column. An order's lines never change and each order is
    loaded once per saga step: parsed and validated once (4.6 % of the order service's CPU went
    to this at 150 orders/s), then shared (the lines are frozen)."""
    return tuple(
        StockLine(sku=ln["sku"], quantity=ln["quantity"]) for ln in orjson.loads(lines_json)
    )


def _order(row: Any) -> Order:
    return Order(
        order_id=row["order_id"],
        customer_id=row["customer_id"],
        status=OrderStatus(row["status"]),
        lines=_stock_lines(row["lines"]),
        total=Money(amount=row["total_amount"], currency=row["currency"]),
        payment_token=row["payment_token"],
        stock_committed=row["stock_committed"],
        payment_captured=row["payment_captured"],
        refunded=row["refunded"],
        reason=row["reason"],
        deadline=row["deadline"],
    )


IdempotencyKey = tuple[str, str]  # (customer, key)


async def try_lock_idempotency_keys(conn: Conn, keys: list[IdempotencyKey]) -> set[IdempotencyKey]:
    """Those of the keys whose lock this transaction now holds (the others are in progress)."""
    rows = await conn.fetch(TRY_LOCK_IDEMPOTENCY_KEYS, [c for c, _ in keys], [k for _, k in keys])
    return {(r["customer_id"], r["key"]) for r in rows if r["locked"]}


async def kept_answers(conn: Conn, keys: list[IdempotencyKey]) -> dict[IdempotencyKey, Any]:
    """The answers kept for those of the keys that were used before."""
    if not keys:
        return {}
    rows = await conn.fetch(SELECT_IDEMPOTENCY_KEYS, [c for c, _ in keys], [k for _, k in keys])
    return {(r["customer_id"], r["key"]): r for r in rows}


async def lock_customers_and_price(
    conn: Conn, customers: list[str], skus: list[str]
) -> dict[str, Any]:
    """Lock the customers' placements (in sorted order) and read the SKUs' catalog rows."""
    rows = await conn.fetch(LOCK_CUSTOMERS_SELECT_PRODUCTS, sorted(set(customers)), skus)
    return {r["sku"]: r for r in rows if r["sku"] is not None}


async def open_orders(conn: Conn, customers: list[str]) -> dict[str, int]:
    """How many orders each customer has holding (or asking for) stock."""
    rows = await conn.fetch(COUNT_OPEN_ORDERS, customers)
    return {r["customer_id"]: r["open"] for r in rows}


@dataclass(frozen=True)
class Placement:
    """A new order to save, with its priced lines, and the answer its Idempotency-Key keeps."""

    order: Order
    priced_lines: list[dict[str, Any]]
    kept: tuple[IdempotencyKey, str, int, str] | None = None  # key, request hash, status, body


async def place_orders(
    conn: Conn, placements: Sequence[Placement], outgoing: tuple[list[Any], ...], channel: str
) -> None:
    """Save new orders, their first timeline entries ("order placed"), their kept answers and
    their outbox rows (`outbox.outbox_columns`), and NOTIFY `channel` unless it is empty (see
    `outbox.RelayWakeup`): one statement."""
    orders = [p.order for p in placements]
    kept = [p.kept for p in placements if p.kept is not None]
    await conn.execute(
        PLACE_ORDERS,
        [o.order_id for o in orders],
        [o.customer_id for o in orders],
        [o.status.value for o in orders],
        [orjson.dumps(p.priced_lines).decode() for p in placements],
        [o.total.amount for o in orders],
        [o.total.currency for o in orders],
        [o.payment_token for o in orders],
        [o.deadline for o in orders],
        [k[0][0] for k in kept],
        [k[0][1] for k in kept],
        [k[1] for k in kept],
        [k[2] for k in kept],
        [k[3] for k in kept],
        *outgoing,
        channel,
    )


async def lock_orders(conn: Conn, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, Order]:
    """The orders with these ids (those that exist), each locked until the transaction ends."""
    rows = await conn.fetch(SELECT_ORDERS_FOR_UPDATE, order_ids)
    return {row["order_id"]: _order(row) for row in rows}


async def get_order_row(conn: Conn, order_id: uuid.UUID) -> Any:
    return await conn.fetchrow(SELECT_ORDER, order_id)


TimelineEntry = tuple[uuid.UUID, OrderStatus, str | None]


def save_steps(orders: list[Order], entries: list[TimelineEntry]) -> Writes:
    """Save the changed orders and append the timeline entries (in their order)."""
    return Writes(
        SAVE_STEPS_WRITES,
        [
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
        ],
    )


async def timeline(conn: Conn, order_id: uuid.UUID, after_id: int = 0) -> list[Any]:
    return list(await conn.fetch(SELECT_TIMELINE, order_id, after_id))


async def customer_orders(conn: Conn, customer_id: str, limit: int, offset: int) -> list[Any]:
    return list(await conn.fetch(SELECT_CUSTOMER_ORDERS, customer_id, limit, offset))


async def overdue_orders(conn: Conn, now: datetime, limit: int) -> list[Order]:
    return [_order(r) for r in await conn.fetch(SELECT_OVERDUE, now, limit)]
