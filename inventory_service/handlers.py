"""One async function per inventory command; each returns the events that answer it.

Handlers run inside the caller's transaction (`ctx.conn`, the inbox's batch transaction) and never
commit or publish: what they return goes to the outbox in that same transaction. Every command gets
an answer that says where the order's reservation stands, so a repeated or late command is harmless
and the saga always hears back; the one exception is releasing a sold order, which is RestockOrder's
job. Expiry and the admin API change state outside a consumer and publish with `publish`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from events.contracts import (
    CommitReservation,
    OrderRestocked,
    ReleaseReservation,
    ReservationCommitted,
    ReservationExpired,
    ReservationReleased,
    ReserveStock,
    Restock,
    RestockOrder,
    StockLevelChanged,
    StockRejected,
    StockReserved,
)
from events.kit import outbox
from events.kit.db import Conn
from events.kit.inbox import Handler, HandlerContext, Handlers
from events.kit.logging import get_logger
from events.messages import Message
from inventory_service import domain, repository
from inventory_service.domain import Policy, Reservation, ReservationStatus, StockLevel

log = get_logger(__name__)

EXPIRY_BATCH = 500


async def reserve_stock(cmd: ReserveStock, ctx: HandlerContext, policy: Policy) -> list[Message]:
    """Reserve every line of the order or none; a repeated command gets the existing answer."""
    existing = await repository.lock_reservation(ctx.conn, cmd.order_id)
    if existing is not None:
        return [domain.describe(existing)]
    wanted = domain.units_by_sku(cmd.lines)
    levels = await repository.lock_stock(ctx.conn, list(wanted))
    if shortages := domain.shortages(wanted, levels):
        return [
            StockRejected(
                order_id=cmd.order_id, reason=domain.INSUFFICIENT_STOCK, shortages=shortages
            )
        ]
    await repository.reserve_units(ctx.conn, wanted)
    expires_at = await repository.insert_reservation(
        ctx.conn, cmd.order_id, cmd.lines, policy.reservation_ttl
    )
    reserved = StockReserved(order_id=cmd.order_id, lines=cmd.lines, expires_at=expires_at)
    return [reserved, *domain.low_stock_crossings(wanted, levels)]


async def commit_reservation(
    cmd: CommitReservation, ctx: HandlerContext, policy: Policy
) -> list[Message]:
    """Sell a live reservation's units; otherwise say again how the reservation ended."""
    reservation = await repository.lock_reservation(ctx.conn, cmd.order_id)
    if reservation is None:
        return [domain.no_reservation(cmd.order_id)]
    if reservation.status is not ReservationStatus.RESERVED:
        return [domain.describe(reservation)]
    await repository.sell_units(ctx.conn, reservation.units)
    await repository.set_status(ctx.conn, cmd.order_id, ReservationStatus.COMMITTED)
    return [ReservationCommitted(order_id=cmd.order_id, lines=reservation.lines)]


async def release_reservation(
    cmd: ReleaseReservation, ctx: HandlerContext, policy: Policy
) -> list[Message]:
    """Free a live reservation's units; releasing one that is already free is a no-op reply."""
    reservation = await repository.lock_reservation(ctx.conn, cmd.order_id)
    if reservation is None:
        return [domain.no_reservation(cmd.order_id)]
    match reservation.status:
        case ReservationStatus.RESERVED:
            await _release(ctx.conn, reservation)
            return [
                ReservationReleased(
                    order_id=cmd.order_id, lines=reservation.lines, reason=cmd.reason
                )
            ]
        case ReservationStatus.RELEASED | ReservationStatus.EXPIRED:
            # No lines: nothing moves now (see domain.describe).
            return [
                ReservationReleased(
                    order_id=cmd.order_id,
                    lines=(),
                    reason=f"already {reservation.status.lower()}",
                )
            ]
        case _:
            log.warning(
                "release of a sold order ignored; RestockOrder puts its units back",
                order_id=str(cmd.order_id),
                status=reservation.status.value,
            )
            return []


async def restock_order(cmd: RestockOrder, ctx: HandlerContext, policy: Policy) -> list[Message]:
    """Put a sold order's units back on hand; a reservation never sold is released instead."""
    reservation = await repository.lock_reservation(ctx.conn, cmd.order_id)
    if reservation is None:
        return [domain.no_reservation(cmd.order_id)]
    match reservation.status:
        case ReservationStatus.COMMITTED:
            await repository.return_units(ctx.conn, reservation.units)
            await repository.set_status(ctx.conn, cmd.order_id, ReservationStatus.RESTOCKED)
            return [OrderRestocked(order_id=cmd.order_id, lines=reservation.lines)]
        case ReservationStatus.RESERVED:
            await _release(ctx.conn, reservation)
            return [
                ReservationReleased(
                    order_id=cmd.order_id, lines=reservation.lines, reason=cmd.reason
                )
            ]
        case _:
            return [domain.describe(reservation)]


async def restock(cmd: Restock, ctx: HandlerContext, policy: Policy) -> list[Message]:
    """Add units of a SKU, creating it if new (this is also how stock is first seeded)."""
    _, changed = await apply_restock(ctx.conn, cmd.sku, cmd.quantity, policy)
    return [changed]


async def apply_restock(
    conn: Conn, sku: str, quantity: int, policy: Policy
) -> tuple[StockLevel, StockLevelChanged]:
    """Restock's state change, shared by the command handler and the admin API."""
    level = await repository.restock(conn, sku, quantity, policy.low_stock_threshold)
    return level, domain.level_changed(level, cause="restock")


async def expire_due_reservations(
    conn: Conn, *, limit: int = EXPIRY_BATCH
) -> list[ReservationExpired]:
    """Release the units of reservations past their expiry and mark them EXPIRED."""
    due = await repository.lock_due_reservations(conn, limit)
    if not due:
        return []
    await repository.unreserve_units(conn, domain.total_units(due))
    expired = await repository.mark_expired(conn, [r.order_id for r in due])
    return [
        ReservationExpired(order_id=r.order_id, lines=r.lines, expired_at=r.updated_at)
        for r in sorted(expired, key=lambda r: r.order_id)
    ]


async def expire_reservations(
    pool: asyncpg.Pool, *, service: str, batch: int = EXPIRY_BATCH
) -> int:
    """Expire every due reservation, a transaction per batch, publishing ReservationExpired."""
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            expired = await expire_due_reservations(conn, limit=batch)
            await publish(conn, expired, service=service)
        total += len(expired)
        if len(expired) < batch:
            return total


async def publish(conn: Conn, messages: Sequence[Message], *, service: str) -> None:
    """Append messages to the outbox in the caller's transaction, from outside a consumer."""
    await outbox.emit(conn, messages, service=service)


async def _release(conn: Conn, reservation: Reservation) -> None:
    await repository.unreserve_units(conn, reservation.units)
    await repository.set_status(conn, reservation.order_id, ReservationStatus.RELEASED)


PolicyHandler = Callable[[Any, HandlerContext, Policy], Awaitable[list[Message]]]

HANDLERS: dict[type[Message], PolicyHandler] = {
    ReserveStock: reserve_stock,
    CommitReservation: commit_reservation,
    ReleaseReservation: release_reservation,
    RestockOrder: restock_order,
    Restock: restock,
}


def bind(policy: Policy) -> Handlers:
    """HANDLERS with the settings-derived policy filled in, as the inbox consumer calls them."""

    def with_policy(handler: PolicyHandler) -> Handler:
        async def handle(message: Any, ctx: HandlerContext) -> list[Message]:
            return await handler(message, ctx, policy)

        return handle

    return {kind: with_policy(handler) for kind, handler in HANDLERS.items()}
