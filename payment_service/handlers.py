"""One handler per payment command; each runs inside the consumer batch's transaction.

A transaction's PaymentUnit (`ctx.unit`) locks its orders and reads their payments and the
movements already recorded under the commands' idempotency keys in two round trips, and writes
what the handlers record in one. Every handler looks its idempotency key up there first: a key
already recorded is answered with its recorded outcome and the gateway is not called. Otherwise
the gateway is called with the same key, so a crash after the gateway acted but before our commit
is covered by the gateway's own idempotency when the command is redelivered.

When the gateway keeps failing (transient errors past the retries, or a timeout):
- AuthorizePayment answers PaymentDeclined (code gateway_error or gateway_timeout), recorded, so the
  saga always gets an answer and can cancel the order (voiding defensively).
- Capture, void and refund ask again instead. They move money the saga has already committed to,
  and a "failed" answer while the gateway may have acted could leave a stray charge or a lost
  refund. They keep asking, with the same idempotency key (always safe) and a growing pause, for
  up to `Deps.settle_for_s` (PAYMENT_GATEWAY_SETTLE_FOR_S, 60 s): a gateway outage of seconds
  must not leave a cancelled order charged. Past that they raise; the kit retries the command and
  then dead-letters it to payment.commands.dlq for redrive. The saga's own deadlines still end the
  order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from events.contracts import (
    AuthorizePayment,
    CapturePayment,
    RefundPayment,
    VoidPayment,
)
from events.kit.db import Conn
from events.kit.inbox import HandlerContext, Writes
from events.kit.logging import get_logger
from events.messages import Message
from payment_service import domain, repository
from payment_service.domain import Movement, MovementKind, Operation, Payment
from payment_service.gateway import (
    GatewayError,
    GatewayResult,
    GatewayTimeout,
    GatewayUnavailable,
    PaymentGateway,
    RetryPolicy,
    with_retries,
)

log = get_logger(__name__)


class PaymentUnit:
    """The orders one transaction works on (locked), their payments, the movements recorded
    under the commands' keys, and what the handlers record."""

    def __init__(
        self, conn: Conn, payments: dict[uuid.UUID, Payment], movements: dict[str, Movement]
    ) -> None:
        self.conn = conn
        self.payments = payments
        self.movements = movements
        self._saved: dict[uuid.UUID, Payment] = {}
        self._new: list[Movement] = []

    @classmethod
    async def for_commands(cls, conn: Conn, commands: Sequence[Message]) -> PaymentUnit:
        order_ids = [
            i for c in commands if isinstance(i := getattr(c, "order_id", None), uuid.UUID)
        ]
        keys = [k for c in commands if isinstance(k := getattr(c, "idempotency_key", None), str)]
        await repository.lock_orders(conn, order_ids)
        return cls(conn, *await repository.load_state(conn, order_ids, keys))

    def record(self, payment: Payment, movement: Movement) -> None:
        self.payments[payment.order_id] = self._saved[payment.order_id] = payment
        self.movements[movement.idempotency_key] = movement
        self._new.append(movement)

    async def flush(self) -> None:
        if writes := self.writes():
            await writes.execute(self.conn)

    def writes(self) -> Writes | None:
        """What flush() would write, handed over for the consumer's last statement."""
        if not self._new:
            return None
        writes = repository.record_all(list(self._saved.values()), self._new)
        self._saved, self._new = {}, []
        return writes


@dataclass(frozen=True)
class Deps:
    """What the handlers need besides the transaction: the gateway and how to retry it."""

    gateway: PaymentGateway
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # How long capture, void and refund keep asking a gateway that does not answer (0: once).
    settle_for_s: float = 0.0


async def authorize_payment(
    cmd: AuthorizePayment, ctx: HandlerContext, deps: Deps
) -> list[Message]:
    """Authorize the order's amount on its token; one gateway authorization per idempotency key."""
    unit: PaymentUnit = ctx.unit
    recorded = unit.movements.get(cmd.idempotency_key)
    if recorded is not None:
        return [domain.replay(recorded, Operation.AUTHORIZE, cmd.order_id)]
    answer = domain.check_authorize(unit.payments.get(cmd.order_id), cmd)
    if answer is not None:
        return [answer]
    result = await _authorize_at_gateway(cmd, deps)
    if result.approved:
        payment, movement = domain.authorized(cmd, result.reference or "")
    else:
        payment, movement = domain.declined(cmd, result.code or "declined")
    unit.record(payment, movement)
    log.info(
        "payment authorized" if result.approved else "payment declined",
        order_id=str(cmd.order_id),
        token=payment.token_hint,
        code=movement.code,
    )
    return [domain.reply_for(movement)]


async def _authorize_at_gateway(cmd: AuthorizePayment, deps: Deps) -> GatewayResult:
    def call() -> Awaitable[GatewayResult]:
        return deps.gateway.authorize(cmd.payment_token, cmd.amount, cmd.idempotency_key)

    try:
        return await with_retries(call, deps.retry)
    except GatewayTimeout:
        return GatewayResult(approved=False, code="gateway_timeout")
    except GatewayError as exc:
        log.warning("gateway failed past its retries", order_id=str(cmd.order_id), error=str(exc))
        return GatewayResult(approved=False, code="gateway_error")


async def capture_payment(cmd: CapturePayment, ctx: HandlerContext, deps: Deps) -> list[Message]:
    """Capture an authorized payment in full."""
    return await _settle(
        ctx,
        deps,
        cmd.order_id,
        cmd.idempotency_key,
        Operation.CAPTURE,
        lambda payment: domain.check_capture(payment, cmd),
        lambda auth: deps.gateway.capture(auth, cmd.amount, cmd.idempotency_key),
    )


async def void_payment(cmd: VoidPayment, ctx: HandlerContext, deps: Deps) -> list[Message]:
    """Release an authorization that was not captured; nothing authorized is voided as a no-op."""
    return await _settle(
        ctx,
        deps,
        cmd.order_id,
        cmd.idempotency_key,
        Operation.VOID,
        lambda payment: domain.check_void(payment, cmd),
        lambda auth: deps.gateway.void(auth, cmd.idempotency_key),
    )


async def refund_payment(cmd: RefundPayment, ctx: HandlerContext, deps: Deps) -> list[Message]:
    """Give a captured payment back in full; anything not captured is refused."""
    return await _settle(
        ctx,
        deps,
        cmd.order_id,
        cmd.idempotency_key,
        Operation.REFUND,
        lambda payment: domain.check_refund(payment, cmd),
        lambda auth: deps.gateway.refund(auth, cmd.amount, cmd.idempotency_key),
    )


async def _settle(
    ctx: HandlerContext,
    deps: Deps,
    order_id: uuid.UUID,
    key: str,
    op: Operation,
    check: Callable[[Payment | None], Message | None],
    call: Callable[[str], Awaitable[GatewayResult]],
) -> list[Message]:
    """Capture, void and refund share one shape: replay, check, call the gateway, record."""
    unit: PaymentUnit = ctx.unit
    recorded = unit.movements.get(key)
    if recorded is not None:
        return [domain.replay(recorded, op, order_id)]
    payment = unit.payments.get(order_id)
    answer = check(payment)
    if answer is not None:
        return [answer]
    if payment is None or not payment.authorization:
        return [domain.failed(order_id, op, "the payment has no gateway authorization")]
    authorization = payment.authorization
    result = await _until_answered(lambda: call(authorization), deps, op, order_id)
    if not result.approved:
        log.warning("gateway refused", operation=op.value, order_id=str(order_id), code=result.code)
        return [domain.failed(order_id, op, f"the gateway refused: {result.code}")]
    payment, movement = domain.moved(payment, MovementKind(op.value), key, result.reference)
    unit.record(payment, movement)
    log.info("payment moved", operation=op.value, status=payment.status, order_id=str(order_id))
    return [domain.reply_for(movement)]


async def _until_answered(
    call: Callable[[], Awaitable[GatewayResult]], deps: Deps, op: Operation, order_id: uuid.UUID
) -> GatewayResult:
    """The gateway's answer to a settlement, asking again while it fails or times out, for up to
    `deps.settle_for_s`; the call reuses its idempotency key, so asking again never moves money
    twice."""
    deadline = time.monotonic() + deps.settle_for_s
    pause = max(deps.retry.backoff_ms / 1000, 0.05)
    while True:
        try:
            return await with_retries(call, deps.retry)
        except (GatewayUnavailable, GatewayTimeout) as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning(
                "gateway did not answer a settlement; asking again",
                operation=op.value,
                order_id=str(order_id),
                error=repr(exc),
                pause_s=round(pause, 2),
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)


PaymentHandler = Callable[[Any, HandlerContext, Deps], Awaitable[list[Message]]]

HANDLERS: dict[type[Message], PaymentHandler] = {
    AuthorizePayment: authorize_payment,
    CapturePayment: capture_payment,
    VoidPayment: void_payment,
    RefundPayment: refund_payment,
}
