"""Payments as pure decisions: what a command may do to an order's payment, and what to answer.

No I/O. The handlers lock the order, look the idempotency key up in the ledger, ask these functions
whether the gateway needs calling at all, and record what happened as a Movement: a row of the
ledger from which the reply can be rebuilt, so a repeated key gets the very same answer.

Captures and refunds are for the whole authorized amount (what the saga asks for); a partial one is
refused rather than half-supported.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from enum import StrEnum

from events.contracts import (
    AuthorizePayment,
    CapturePayment,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentDeclined,
    PaymentOperationFailed,
    PaymentRefunded,
    PaymentVoided,
    RefundPayment,
    VoidPayment,
)
from events.messages import Message, Money


class PaymentStatus(StrEnum):
    AUTHORIZED = "AUTHORIZED"
    DECLINED = "DECLINED"
    CAPTURED = "CAPTURED"
    VOIDED = "VOIDED"
    REFUNDED = "REFUNDED"


class MovementKind(StrEnum):
    AUTHORIZE = "authorize"
    DECLINE = "decline"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"


class Operation(StrEnum):
    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"


S = PaymentStatus
K = MovementKind

DECLINE_REASONS = {
    "declined": "the card was declined",
    "insufficient_funds": "insufficient funds",
    "gateway_timeout": "the payment gateway did not answer in time",
    "gateway_error": "the payment gateway kept failing",
}

# Which ledger kinds a repeated idempotency key may legitimately find, per operation.
OUTCOMES = {
    Operation.AUTHORIZE: {K.AUTHORIZE, K.DECLINE},
    Operation.CAPTURE: {K.CAPTURE},
    Operation.VOID: {K.VOID},
    Operation.REFUND: {K.REFUND},
}

_PAYMENT_IDS = uuid.UUID("5d1e6c1e-7a43-4b0e-9f0a-3c8b9f6d2a10")


@dataclass(frozen=True)
class Payment:
    """An order's payment as it stands; `authorization` is the gateway's reference for it."""

    order_id: uuid.UUID
    payment_id: uuid.UUID
    status: PaymentStatus
    amount: Money
    token_hint: str
    authorization: str | None


@dataclass(frozen=True)
class Movement:
    """One ledger row: a movement of money (or a decline) done once under its idempotency key."""

    order_id: uuid.UUID
    payment_id: uuid.UUID
    kind: MovementKind
    amount: Money
    idempotency_key: str
    gateway_reference: str | None = None
    code: str | None = None


def token_hint(token: str) -> str:
    """Enough of a token to recognise it in logs and views; never the whole of it."""
    return f"tok_...{token[-4:]}" if len(token) > 8 else "tok_..."


def payment_id_for(order_id: uuid.UUID, idempotency_key: str) -> uuid.UUID:
    """Derived, not random: a replay of the log rebuilds the same ids."""
    return uuid.uuid5(_PAYMENT_IDS, f"{order_id}/{idempotency_key}")


def reply_for(m: Movement) -> Message:
    """The event that reports a recorded movement; the same movement always gives the same one."""
    match m.kind:
        case K.AUTHORIZE:
            return PaymentAuthorized(
                order_id=m.order_id,
                payment_id=m.payment_id,
                amount=m.amount,
                authorization_code=m.gateway_reference or "",
            )
        case K.DECLINE:
            code = m.code or "declined"
            reason = DECLINE_REASONS.get(code, code.replace("_", " "))
            return PaymentDeclined(order_id=m.order_id, code=code, reason=reason)
        case K.CAPTURE:
            return PaymentCaptured(order_id=m.order_id, payment_id=m.payment_id, amount=m.amount)
        case K.VOID:
            return PaymentVoided(order_id=m.order_id, payment_id=m.payment_id)
        case K.REFUND:
            return PaymentRefunded(order_id=m.order_id, payment_id=m.payment_id, amount=m.amount)


def replay(m: Movement, operation: Operation, order_id: uuid.UUID) -> Message:
    """Answer a repeated idempotency key with what it did the first time, if it was this request."""
    if m.order_id == order_id and m.kind in OUTCOMES[operation]:
        return reply_for(m)
    why = f"idempotency key {m.idempotency_key!r} was already used for a {m.kind} of {m.order_id}"
    if operation is Operation.AUTHORIZE:
        return PaymentDeclined(order_id=order_id, code="idempotency_key_reused", reason=why)
    return failed(order_id, operation, why)


def failed(order_id: uuid.UUID, operation: Operation, reason: str) -> PaymentOperationFailed:
    return PaymentOperationFailed(order_id=order_id, operation=operation.value, reason=reason)


# --- authorize -----------------------------------------------------------------------------------


def check_authorize(payment: Payment | None, cmd: AuthorizePayment) -> Message | None:
    """None when the gateway should be asked; otherwise the answer. One live payment per order."""
    if payment is None or payment.status is S.DECLINED:
        return None
    if payment.status in (S.AUTHORIZED, S.CAPTURED):
        return PaymentAuthorized(
            order_id=cmd.order_id,
            payment_id=payment.payment_id,
            amount=payment.amount,
            authorization_code=payment.authorization or "",
        )
    return PaymentDeclined(
        order_id=cmd.order_id,
        code="payment_closed",
        reason=f"the order's payment {payment.payment_id} is already {payment.status}",
    )


def authorized(cmd: AuthorizePayment, authorization: str) -> tuple[Payment, Movement]:
    payment_id = payment_id_for(cmd.order_id, cmd.idempotency_key)
    payment = Payment(
        cmd.order_id,
        payment_id,
        S.AUTHORIZED,
        cmd.amount,
        token_hint(cmd.payment_token),
        authorization,
    )
    return payment, Movement(
        cmd.order_id, payment_id, K.AUTHORIZE, cmd.amount, cmd.idempotency_key, authorization
    )


def declined(cmd: AuthorizePayment, code: str) -> tuple[Payment, Movement]:
    payment_id = payment_id_for(cmd.order_id, cmd.idempotency_key)
    payment = Payment(
        cmd.order_id, payment_id, S.DECLINED, cmd.amount, token_hint(cmd.payment_token), None
    )
    movement = Movement(
        cmd.order_id, payment_id, K.DECLINE, cmd.amount, cmd.idempotency_key, code=code
    )
    return payment, movement


# --- capture, void, refund -----------------------------------------------------------------------


def check_capture(payment: Payment | None, cmd: CapturePayment) -> Message | None:
    """None when the gateway should capture; otherwise the answer."""
    op = Operation.CAPTURE
    if payment is None or payment.status is S.DECLINED:
        return failed(cmd.order_id, op, "the order has no authorized payment")
    if payment.status is S.CAPTURED:
        return PaymentCaptured(
            order_id=cmd.order_id, payment_id=payment.payment_id, amount=payment.amount
        )
    if payment.status is not S.AUTHORIZED:
        return failed(cmd.order_id, op, f"the payment is {payment.status}")
    return _amount_mismatch(payment, cmd.amount, op)


def check_void(payment: Payment | None, cmd: VoidPayment) -> Message | None:
    """None when the gateway should void; otherwise the answer. Never voids a capture silently."""
    if payment is None or payment.status is S.DECLINED:
        return PaymentVoided(order_id=cmd.order_id, payment_id=None)
    if payment.status is S.VOIDED:
        return PaymentVoided(order_id=cmd.order_id, payment_id=payment.payment_id)
    if payment.status is not S.AUTHORIZED:
        why = f"the payment is {payment.status}; only a refund can return it"
        return failed(cmd.order_id, Operation.VOID, why)
    return None


def check_refund(payment: Payment | None, cmd: RefundPayment) -> Message | None:
    """None when the gateway should refund; otherwise the answer. Only a capture is refunded."""
    op = Operation.REFUND
    if payment is None:
        return failed(cmd.order_id, op, "the order has no payment")
    if payment.status is S.REFUNDED:
        return PaymentRefunded(
            order_id=cmd.order_id, payment_id=payment.payment_id, amount=payment.amount
        )
    if payment.status is not S.CAPTURED:
        return failed(cmd.order_id, op, f"the payment is {payment.status}, not captured")
    return _amount_mismatch(payment, cmd.amount, op)


def moved(
    payment: Payment, kind: MovementKind, key: str, reference: str | None
) -> tuple[Payment, Movement]:
    """A capture, void or refund the gateway did: the payment's new status and its ledger row."""
    status = {K.CAPTURE: S.CAPTURED, K.VOID: S.VOIDED, K.REFUND: S.REFUNDED}[kind]
    after = replace(payment, status=status)
    movement = Movement(payment.order_id, payment.payment_id, kind, payment.amount, key, reference)
    return after, movement


def _amount_mismatch(payment: Payment, amount: Money, op: Operation) -> Message | None:
    if amount == payment.amount:
        return None
    why = (
        f"{op} of {amount.amount} {amount.currency} does not match the payment's "
        f"{payment.amount.amount} {payment.amount.currency}"
    )
    return failed(payment.order_id, op, why)
