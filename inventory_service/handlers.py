"""One async function per inventory command; each returns the events that answer it.

Handlers run inside the inbox's batch transaction and work on its StockUnit (`ctx.unit`): the
batch's reservations and stock rows, locked once, changed in memory and written in one statement
when the batch ends. They never commit or publish: what they return goes to the outbox in that
same transaction. Every command gets
an answer that says where the order's reservation stands, so a repeated or late command is harmless
and the saga always hears back; the one exception is releasing a sold order, which is RestockOrder's
job. Expiry and the admin API change state outside a consumer and publish with `publish`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
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
    StockLine,
    StockRejected,
    StockReserved,
    order_ids,
)
from events.kit import outbox
from events.kit.db import Conn
from events.kit.inbox import Handler, HandlerContext, Handlers, Writes
from events.kit.logging import get_logger
from events.messages import Message
from inventory_service import domain, repository
from inventory_service.domain import Policy, Reservation, ReservationStatus, StockLevel

log = get_logger(__name__)

EXPIRY_BATCH = 500


class StockUnit:
    """The reservations and stock rows one transaction works on, locked, and what the handlers
    changed in them; flushed in one statement. One lock query and one write per batch of commands,
    however many it holds."""

    def __init__(
        self,
        conn: Conn,
        reservations: dict[uuid.UUID, Reservation],
        levels: dict[str, StockLevel],
        now: datetime,
    ) -> None:
        self.conn = conn
        self.reservations = reservations
        self.levels = levels
        self._now = now
        self._locked = set(levels)
        self._new: dict[uuid.UUID, Reservation] = {}
        self._statuses: dict[uuid.UUID, ReservationStatus] = {}
        self._changed: set[str] = set()

    @classmethod
    async def for_commands(cls, conn: Conn, commands: Sequence[Message]) -> StockUnit:
        """Lock the reservations of the orders named, then every SKU they or the commands touch,
        in one round trip."""
        skus: set[str] = set()
        for c in commands:
            if isinstance(c, ReserveStock):
                skus.update(line.sku for line in c.lines)
            elif isinstance(c, Restock):
                skus.add(c.sku)
        reservations, levels, now = await repository.lock_batch(conn, order_ids(commands), skus)
        return cls(conn, reservations, levels, now)

    def _move(self, units: Mapping[str, int], *, on_hand: int = 0, reserved: int = 0) -> None:
        for sku, n in units.items():
            self.levels[sku] = domain.moved(
                self.levels[sku], on_hand=on_hand * n, reserved=reserved * n
            )
            self._changed.add(sku)

    def _set(self, reservation: Reservation, status: ReservationStatus) -> None:
        changed = replace(reservation, status=status)
        self.reservations[reservation.order_id] = changed
        if reservation.order_id in self._new:
            self._new[reservation.order_id] = changed
        else:
            self._statuses[reservation.order_id] = status

    def reserve(
        self, order_id: uuid.UUID, lines: tuple[StockLine, ...], ttl: timedelta
    ) -> Reservation:
        self._move(domain.units_by_sku(lines), reserved=+1)
        reservation = Reservation(
            order_id, ReservationStatus.RESERVED, lines, self._now + ttl, self._now
        )
        self.reservations[order_id] = self._new[order_id] = reservation
        return reservation

    def sell(self, reservation: Reservation) -> None:
        self._move(reservation.units, on_hand=-1, reserved=-1)
        self._set(reservation, ReservationStatus.COMMITTED)

    def release(self, reservation: Reservation) -> None:
        self._move(reservation.units, reserved=-1)
        self._set(reservation, ReservationStatus.RELEASED)

    def put_back(self, reservation: Reservation) -> None:
        self._move(reservation.units, on_hand=+1)
        self._set(reservation, ReservationStatus.RESTOCKED)

    def restock(self, sku: str, quantity: int, threshold: int) -> StockLevel:
        if sku not in self.levels:
            self.levels[sku] = StockLevel(sku, 0, 0, threshold)
        self._move({sku: quantity}, on_hand=+1)
        return self.levels[sku]

    async def flush(self) -> None:
        if writes := self.writes():
            await writes.execute(self.conn)

    def writes(self) -> Writes | None:
        """What flush() would write, handed over for the consumer's last statement."""
        if not (self._changed or self._new or self._statuses):
            return None
        writes = repository.save_batch(
            new_stock=[self.levels[s] for s in sorted(self._changed - self._locked)],
            changed_stock=[self.levels[s] for s in sorted(self._changed & self._locked)],
            new_reservations=list(self._new.values()),
            statuses=self._statuses,
        )
        self._changed, self._new, self._statuses = set(), {}, {}
        return writes


async def reserve_stock(cmd: ReserveStock, ctx: HandlerContext, policy: Policy) -> list[Message]:
    """Reserve every line of the order or none; a repeated command gets the existing answer."""
    unit: StockUnit = ctx.unit
    existing = unit.reservations.get(cmd.order_id)
    if existing is not None:
        return [domain.describe(existing)]
    wanted = domain.units_by_sku(cmd.lines)
    levels = {sku: unit.levels[sku] for sku in wanted if sku in unit.levels}
    if shortages := domain.shortages(wanted, levels):
        return [
            StockRejected(
                order_id=cmd.order_id, reason=domain.INSUFFICIENT_STOCK, shortages=shortages
            )
        ]
    reservation = unit.reserve(cmd.order_id, cmd.lines, policy.reservation_ttl)
    reserved = StockReserved(
        order_id=cmd.order_id, lines=cmd.lines, expires_at=reservation.expires_at
    )
    return [reserved, *domain.low_stock_crossings(wanted, levels)]


async def commit_reservation(
    cmd: CommitReservation, ctx: HandlerContext, policy: Policy
) -> list[Message]:
    """Sell a live reservation's units; otherwise say again how the reservation ended."""
    unit: StockUnit = ctx.unit
    reservation = unit.reservations.get(cmd.order_id)
    if reservation is None:
        return [domain.no_reservation(cmd.order_id)]
    if reservation.status is not ReservationStatus.RESERVED:
        return [domain.describe(reservation)]
    unit.sell(reservation)
    return [ReservationCommitted(order_id=cmd.order_id, lines=reservation.lines)]


async def release_reservation(
    cmd: ReleaseReservation, ctx: HandlerContext, policy: Policy
) -> list[Message]:
    """Free a live reservation's units; releasing one that is already free is a no-op reply."""
    unit: StockUnit = ctx.unit
    reservation = unit.reservations.get(cmd.order_id)
    if reservation is None:
        return [domain.no_reservation(cmd.order_id)]
    match reservation.status:
        case ReservationStatus.RESERVED:
            unit.release(reservation)
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
    unit: StockUnit = ctx.unit
    reservation = unit.reservations.get(cmd.order_id)
    if reservation is None:
        return [domain.no_reservation(cmd.order_id)]
    match reservation.status:
        case ReservationStatus.COMMITTED:
            unit.put_back(reservation)
            return [OrderRestocked(order_id=cmd.order_id, lines=reservation.lines)]
        case ReservationStatus.RESERVED:
            unit.release(reservation)
            return [
                ReservationReleased(
                    order_id=cmd.order_id, lines=reservation.lines, reason=cmd.reason
                )
            ]
        case _:
            return [domain.describe(reservation)]


async def restock(cmd: Restock, ctx: HandlerContext, policy: Policy) -> list[Message]:
    """Add units of a SKU, creating it if new (this is also how stock is first seeded)."""
    unit: StockUnit = ctx.unit
    level = unit.restock(cmd.sku, cmd.quantity, policy.low_stock_threshold)
    return [domain.level_changed(level, cause="restock")]


async def apply_restock(
    conn: Conn, sku: str, quantity: int, policy: Policy
) -> tuple[StockLevel, StockLevelChanged]:
    """The admin API's restock, outside a consumer."""
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
