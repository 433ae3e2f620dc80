"""Payment decisions without I/O: when the gateway is called, and what each command is answered."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

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
from events.messages import Money
from payment_service import domain
from payment_service.domain import Movement, MovementKind, Operation, Payment, PaymentStatus

ORDER = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
USD_10 = Money(amount=1000, currency="USD")
S = PaymentStatus
K = MovementKind


def authorize(token: str = "tok_approve") -> AuthorizePayment:
    return AuthorizePayment(
        order_id=ORDER,
        customer_id="c1",
        amount=USD_10,
        payment_token=token,
        idempotency_key=f"{ORDER}:authorize",
    )


CAPTURE = CapturePayment(order_id=ORDER, amount=USD_10, idempotency_key=f"{ORDER}:capture")
VOID = VoidPayment(order_id=ORDER, reason="cancelled", idempotency_key=f"{ORDER}:void")
REFUND = RefundPayment(
    order_id=ORDER, amount=USD_10, reason="cancelled", idempotency_key=f"{ORDER}:refund"
)


def payment(status: PaymentStatus) -> Payment:
    authorized, _ = domain.authorized(authorize(), "auth_1")
    return replace(authorized, status=status)


def test_token_hint_keeps_only_the_last_four_characters() -> None:
    assert domain.token_hint("tok_visa_4242424242424242") == "tok_...4242"
    assert domain.token_hint("tok_x") == "tok_..."


def test_payment_id_is_derived_from_order_and_key_so_replays_rebuild_it() -> None:
    key = f"{ORDER}:authorize"
    assert domain.payment_id_for(ORDER, key) == domain.payment_id_for(ORDER, key)
    assert domain.payment_id_for(ORDER, key) != domain.payment_id_for(ORDER, key + "2")


def test_authorization_is_recorded_and_reported_with_the_gateway_reference() -> None:
    payment, movement = domain.authorized(authorize(), "auth_1")
    assert payment.status is S.AUTHORIZED
    assert payment.token_hint == "tok_...rove"
    assert movement.kind is K.AUTHORIZE
    assert domain.reply_for(movement) == PaymentAuthorized(
        order_id=ORDER, payment_id=payment.payment_id, amount=USD_10, authorization_code="auth_1"
    )


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("declined", "the card was declined"),
        ("insufficient_funds", "insufficient funds"),
        ("gateway_timeout", "the payment gateway did not answer in time"),
        ("gateway_error", "the payment gateway kept failing"),
    ],
)
def test_a_decline_is_recorded_with_its_code_and_reported_with_a_reason(
    code: str, reason: str
) -> None:
    payment, movement = domain.declined(authorize(), code)
    assert payment.status is S.DECLINED
    assert (movement.kind, movement.code) == (K.DECLINE, code)
    assert domain.reply_for(movement) == PaymentDeclined(order_id=ORDER, code=code, reason=reason)


def test_a_recorded_key_is_replayed_as_the_same_answer() -> None:
    _, movement = domain.authorized(authorize(), "auth_1")
    assert domain.replay(movement, Operation.AUTHORIZE, ORDER) == domain.reply_for(movement)


def test_a_key_recorded_for_another_operation_is_not_replayed_as_success() -> None:
    _, movement = domain.authorized(authorize(), "auth_1")
    answer = domain.replay(movement, Operation.CAPTURE, ORDER)
    assert isinstance(answer, PaymentOperationFailed)
    assert answer.operation == "capture"


def test_a_key_recorded_for_another_order_is_refused() -> None:
    _, movement = domain.authorized(authorize(), "auth_1")
    other = uuid.uuid4()
    answer = domain.replay(movement, Operation.AUTHORIZE, other)
    assert isinstance(answer, PaymentDeclined)
    assert (answer.order_id, answer.code) == (other, "idempotency_key_reused")


def test_authorize_asks_the_gateway_for_a_new_or_previously_declined_payment() -> None:
    assert domain.check_authorize(None, authorize()) is None
    assert domain.check_authorize(payment(S.DECLINED), authorize()) is None


@pytest.mark.parametrize("status", [S.AUTHORIZED, S.CAPTURED])
def test_authorize_does_not_authorize_an_order_twice(status: PaymentStatus) -> None:
    answer = domain.check_authorize(payment(status), authorize())
    assert isinstance(answer, PaymentAuthorized)
    assert answer.authorization_code == "auth_1"


@pytest.mark.parametrize("status", [S.VOIDED, S.REFUNDED])
def test_authorize_of_a_closed_payment_is_declined(status: PaymentStatus) -> None:
    answer = domain.check_authorize(payment(status), authorize())
    assert isinstance(answer, PaymentDeclined)
    assert answer.code == "payment_closed"


def test_capture_goes_ahead_for_an_authorized_payment_of_the_same_amount() -> None:
    assert domain.check_capture(payment(S.AUTHORIZED), CAPTURE) is None


def test_capture_of_another_amount_is_refused() -> None:
    cmd = CAPTURE.model_copy(update={"amount": Money(amount=999, currency="USD")})
    answer = domain.check_capture(payment(S.AUTHORIZED), cmd)
    assert isinstance(answer, PaymentOperationFailed)
    assert answer.operation == "capture"


@pytest.mark.parametrize("status", [None, S.DECLINED, S.VOIDED, S.REFUNDED])
def test_capture_without_an_authorization_fails(status: PaymentStatus | None) -> None:
    answer = domain.check_capture(payment(status) if status else None, CAPTURE)
    assert isinstance(answer, PaymentOperationFailed)
    assert answer.operation == "capture"


def test_capture_of_a_captured_payment_reports_the_capture_again() -> None:
    captured = payment(S.CAPTURED)
    assert domain.check_capture(captured, CAPTURE) == PaymentCaptured(
        order_id=ORDER, payment_id=captured.payment_id, amount=USD_10
    )


@pytest.mark.parametrize("status", [None, S.DECLINED])
def test_void_with_nothing_authorized_answers_voided_without_a_payment_id(
    status: PaymentStatus | None,
) -> None:
    answer = domain.check_void(payment(status) if status else None, VOID)
    assert answer == PaymentVoided(order_id=ORDER, payment_id=None)


def test_void_of_a_voided_payment_is_answered_again() -> None:
    voided = payment(S.VOIDED)
    assert domain.check_void(voided, VOID) == PaymentVoided(
        order_id=ORDER, payment_id=voided.payment_id
    )


@pytest.mark.parametrize("status", [S.CAPTURED, S.REFUNDED])
def test_void_after_capture_fails_instead_of_voiding_silently(status: PaymentStatus) -> None:
    answer = domain.check_void(payment(status), VOID)
    assert isinstance(answer, PaymentOperationFailed)
    assert answer.operation == "void"


def test_void_goes_ahead_for_an_authorized_payment() -> None:
    assert domain.check_void(payment(S.AUTHORIZED), VOID) is None


@pytest.mark.parametrize("status", [None, S.AUTHORIZED, S.DECLINED, S.VOIDED])
def test_refund_before_capture_is_refused(status: PaymentStatus | None) -> None:
    answer = domain.check_refund(payment(status) if status else None, REFUND)
    assert isinstance(answer, PaymentOperationFailed)
    assert answer.operation == "refund"


def test_refund_goes_ahead_for_a_captured_payment() -> None:
    assert domain.check_refund(payment(S.CAPTURED), REFUND) is None


def test_refund_of_a_refunded_payment_is_answered_again() -> None:
    refunded = payment(S.REFUNDED)
    assert domain.check_refund(refunded, REFUND) == PaymentRefunded(
        order_id=ORDER, payment_id=refunded.payment_id, amount=USD_10
    )


@pytest.mark.parametrize(
    ("kind", "status", "reply"),
    [
        (K.CAPTURE, S.CAPTURED, PaymentCaptured),
        (K.VOID, S.VOIDED, PaymentVoided),
        (K.REFUND, S.REFUNDED, PaymentRefunded),
    ],
)
def test_each_movement_sets_its_status_and_is_reported(
    kind: MovementKind, status: PaymentStatus, reply: type
) -> None:
    before = payment(S.AUTHORIZED)
    after, movement = domain.moved(before, kind, f"{ORDER}:{kind}", "ref_1")
    assert after.status is status
    assert movement == Movement(ORDER, before.payment_id, kind, USD_10, f"{ORDER}:{kind}", "ref_1")
    answer = domain.reply_for(movement)
    assert isinstance(answer, reply)
    assert answer.payment_id == before.payment_id  # type: ignore[attr-defined]
