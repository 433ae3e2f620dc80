"""SQL of payment_service, and the few functions that turn its rows into domain objects."""

from __future__ import annotations

import uuid

import asyncpg

from events.kit.db import Conn
from events.messages import Money
from payment_service.domain import Movement, MovementKind, Payment, PaymentStatus

# Two-key advisory locks live apart from the kit's one-key locks (outbox relay, migrations).
LOCK_SPACE = 4004
LOCK_ORDER = "SELECT pg_advisory_xact_lock($1, hashtext($2))"

SELECT_PAYMENT = """
SELECT order_id, payment_id, status, amount, currency, token_hint, gateway_reference, updated_at
FROM payments WHERE order_id = $1
"""
UPSERT_PAYMENT = """
INSERT INTO payments
    (order_id, payment_id, status, amount, currency, token_hint, gateway_reference, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now())
ON CONFLICT (order_id) DO UPDATE SET
    payment_id = EXCLUDED.payment_id,
    status = EXCLUDED.status,
    amount = EXCLUDED.amount,
    currency = EXCLUDED.currency,
    token_hint = EXCLUDED.token_hint,
    gateway_reference = EXCLUDED.gateway_reference,
    updated_at = now()
"""
SELECT_MOVEMENT_BY_KEY = """
SELECT order_id, payment_id, kind, amount, currency, idempotency_key, gateway_reference, code
FROM ledger WHERE idempotency_key = $1
"""
INSERT_MOVEMENT = """
INSERT INTO ledger
    (order_id, payment_id, kind, amount, currency, idempotency_key, gateway_reference, code)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
SELECT_LEDGER = """
SELECT id, payment_id, kind, amount, currency, idempotency_key, gateway_reference, code, created_at
FROM ledger WHERE order_id = $1 ORDER BY id
"""


async def lock_order(conn: Conn, order_id: uuid.UUID) -> None:
    """Serialise the commands of one order until the transaction ends, even across a rebalance."""
    await conn.execute(LOCK_ORDER, LOCK_SPACE, str(order_id))


async def load_payment(conn: Conn, order_id: uuid.UUID) -> Payment | None:
    row = await conn.fetchrow(SELECT_PAYMENT, order_id)
    if row is None:
        return None
    return Payment(
        order_id=row["order_id"],
        payment_id=row["payment_id"],
        status=PaymentStatus(row["status"]),
        amount=Money(amount=row["amount"], currency=row["currency"]),
        token_hint=row["token_hint"],
        authorization=row["gateway_reference"],
    )


async def movement_by_key(conn: Conn, idempotency_key: str) -> Movement | None:
    row = await conn.fetchrow(SELECT_MOVEMENT_BY_KEY, idempotency_key)
    return None if row is None else _movement(row)


async def record(conn: Conn, payment: Payment, movement: Movement) -> None:
    """Save the payment's new state and the movement that led to it (same transaction)."""
    await conn.execute(
        UPSERT_PAYMENT,
        payment.order_id,
        payment.payment_id,
        payment.status.value,
        payment.amount.amount,
        payment.amount.currency,
        payment.token_hint,
        payment.authorization,
    )
    await conn.execute(
        INSERT_MOVEMENT,
        movement.order_id,
        movement.payment_id,
        movement.kind.value,
        movement.amount.amount,
        movement.amount.currency,
        movement.idempotency_key,
        movement.gateway_reference,
        movement.code,
    )


def _movement(row: asyncpg.Record) -> Movement:
    return Movement(
        order_id=row["order_id"],
        payment_id=row["payment_id"],
        kind=MovementKind(row["kind"]),
        amount=Money(amount=row["amount"], currency=row["currency"]),
        idempotency_key=row["idempotency_key"],
        gateway_reference=row["gateway_reference"],
        code=row["code"],
    )
