"""Operator lookups (admin role): an order's payment and its ledger. Read-only; commands arrive
over Kafka."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict

from events.kit.auth import admin_principal
from events.messages import Money
from payment_service import repository
from payment_service.domain import MovementKind, PaymentStatus


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class LedgerEntry(_View):
    id: int
    payment_id: uuid.UUID
    kind: MovementKind
    amount: Money
    idempotency_key: str
    gateway_reference: str | None
    code: str | None
    created_at: datetime


class PaymentView(_View):
    order_id: uuid.UUID
    payment_id: uuid.UUID
    status: PaymentStatus
    amount: Money
    token_hint: str
    gateway_reference: str | None
    updated_at: datetime
    ledger: list[LedgerEntry]


def get_pool(request: Request) -> asyncpg.Pool:
    """The pool of the runtime that app.py puts in the app's state (set once it has started)."""
    pool: asyncpg.Pool = request.app.state.runtime.pool
    return pool


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
OrderId = Annotated[uuid.UUID, Path(description="The order the payment belongs to.")]

router = APIRouter(
    prefix="/payments",
    tags=["payments"],
    dependencies=[Depends(admin_principal)],
    responses={401: {"description": "No valid token"}, 403: {"description": "Not an admin"}},
)


@router.get("/{order_id}")
async def get_payment(order_id: OrderId, db: PoolDep) -> PaymentView:
    """An order's payment status and every movement of its ledger, oldest first."""
    async with db.acquire() as conn:
        row = await conn.fetchrow(repository.SELECT_PAYMENT, order_id)
        if row is None:
            raise HTTPException(404, f"no payment for order {order_id}")
        entries = await conn.fetch(repository.SELECT_LEDGER, order_id)
    return PaymentView(
        order_id=row["order_id"],
        payment_id=row["payment_id"],
        status=PaymentStatus(row["status"]),
        amount=Money(amount=row["amount"], currency=row["currency"]),
        token_hint=row["token_hint"],
        gateway_reference=row["gateway_reference"],
        updated_at=row["updated_at"],
        ledger=[
            LedgerEntry(
                id=e["id"],
                payment_id=e["payment_id"],
                kind=MovementKind(e["kind"]),
                amount=Money(amount=e["amount"], currency=e["currency"]),
                idempotency_key=e["idempotency_key"],
                gateway_reference=e["gateway_reference"],
                code=e["code"],
                created_at=e["created_at"],
            )
            for e in entries
        ],
    )
