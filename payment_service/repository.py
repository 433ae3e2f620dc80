"""SQL of payment_service, and the few functions that turn its rows into domain objects."""

from __future__ import annotations

import uuid

import asyncpg

from events.kit.db import Conn
from events.kit.inbox import Writes
from events.messages import Money
from payment_service.domain import Movement, MovementKind, Payment, PaymentStatus

# Two-key advisory locks live apart from the kit's one-key locks (outbox relay, migrations).
LOCK_SPACE = 4004
# Several orders at once, in the order given (sorted by the caller, so batches cannot deadlock).
LOCK_ORDERS = """
SELECT pg_advisory_xact_lock($1, hashtext(o)) FROM unnest($2::text[]) WITH ORDINALITY AS t(o, n)
ORDER BY n
"""
# What a batch's handlers need, read after the locks in one round trip: the orders' payments, and
# the movements already recorded under the commands' idempotency keys.
SELECT_STATE = """
SELECT 'payment' AS what, order_id, payment_id, status, amount, currency, token_hint,
    gateway_reference, NULL AS kind, NULL AS idempotency_key, NULL AS code
FROM payments WHERE order_id = ANY($1::uuid[])
UNION ALL
SELECT 'movement', order_id, payment_id, NULL, amount, currency, NULL, gateway_reference, kind,
    idempotency_key, code
FROM ledger WHERE idempotency_key = ANY($2::text[])
"""
# What a batch recorded: each payment's new state and the movements, in one statement.
SAVE_RECORDS_WRITES = """
saved AS (
    INSERT INTO payments
        (order_id, payment_id, status, amount, currency, token_hint, gateway_reference, updated_at)
    SELECT p.*, now()
    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::text[],
        $7::text[]) AS p
    ON CONFLICT (order_id) DO UPDATE SET
        payment_id = EXCLUDED.payment_id,
        status = EXCLUDED.status,
        amount = EXCLUDED.amount,
        currency = EXCLUDED.currency,
        token_hint = EXCLUDED.token_hint,
        gateway_reference = EXCLUDED.gateway_reference,
        updated_at = now()
), ledger_rows AS (
    INSERT INTO ledger
        (order_id, payment_id, kind, amount, currency, idempotency_key, gateway_reference, code)
    SELECT m.order_id, m.payment_id, m.kind, m.amount, m.currency, m.idempotency_key,
        m.gateway_reference, m.code
    FROM unnest($8::uuid[], $9::uuid[], $10::text[], $11::bigint[], $12::text[], $13::text[],
        $14::text[], $15::text[]) WITH ORDINALITY
        AS m(order_id, payment_id, kind, amount, currency, idempotency_key, gateway_reference,
            code, n)
    ORDER BY m.n
)
"""

SELECT_PAYMENT = """
SELECT order_id, payment_id, status, amount, currency, token_hint, gateway_reference, updated_at
FROM payments WHERE order_id = $1
"""
SELECT_LEDGER = """
SELECT id, payment_id, kind, amount, currency, idempotency_key, gateway_reference, code, created_at
FROM ledger WHERE order_id = $1 ORDER BY id
"""


def _payment(row: asyncpg.Record) -> Payment:
    return Payment(
        order_id=row["order_id"],
        payment_id=row["payment_id"],
        status=PaymentStatus(row["status"]),
        amount=Money(amount=row["amount"], currency=row["currency"]),
        token_hint=row["token_hint"],
        authorization=row["gateway_reference"],
    )


async def lock_orders(conn: Conn, order_ids: list[uuid.UUID]) -> None:
    """Serialise the commands of these orders until the transaction ends, even across a
    rebalance; locked in the order given (sorted by the caller)."""
    await conn.execute(LOCK_ORDERS, LOCK_SPACE, [str(o) for o in order_ids])


async def load_state(
    conn: Conn, order_ids: list[uuid.UUID], keys: list[str]
) -> tuple[dict[uuid.UUID, Payment], dict[str, Movement]]:
    """The payments of these orders and the movements recorded under these keys."""
    payments: dict[uuid.UUID, Payment] = {}
    movements: dict[str, Movement] = {}
    for row in await conn.fetch(SELECT_STATE, order_ids, keys):
        if row["what"] == "payment":
            payments[row["order_id"]] = _payment(row)
        else:
            movements[row["idempotency_key"]] = _movement(row)
    return payments, movements


def record_all(payments: list[Payment], movements: list[Movement]) -> Writes:
    """record() for a batch: the payments' new states and the movements, as CTEs for the
    consumer's last statement (events.kit.inbox.Writes; on their own, Writes.execute)."""
    return Writes(
        SAVE_RECORDS_WRITES,
        [
            [p.order_id for p in payments],
            [p.payment_id for p in payments],
            [p.status.value for p in payments],
            [p.amount.amount for p in payments],
            [p.amount.currency for p in payments],
            [p.token_hint for p in payments],
            [p.authorization for p in payments],
            [m.order_id for m in movements],
            [m.payment_id for m in movements],
            [m.kind.value for m in movements],
            [m.amount.amount for m in movements],
            [m.amount.currency for m in movements],
            [m.idempotency_key for m in movements],
            [m.gateway_reference for m in movements],
            [m.code for m in movements],
        ],
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
