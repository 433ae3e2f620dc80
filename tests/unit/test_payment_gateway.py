"""The simulated gateway and the retry policy: test tokens, idempotency, failures, and books kept
in memory or in a file that outlives the process."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from events.messages import Money
from payment_service.gateway import (
    GatewayResult,
    GatewayTimeout,
    GatewayUnavailable,
    IdempotencyKeyReused,
    RetryPolicy,
    SimulatedGateway,
    _Hold,
    with_retries,
)
from tests.security.cardscan import find_card_numbers

USD_10 = Money(amount=1000, currency="USD")


async def authorized(gateway: SimulatedGateway, key: str = "o1:authorize") -> str:
    result = await gateway.authorize("tok_approve", USD_10, key)
    assert result.approved
    assert result.reference is not None
    return result.reference


async def test_approve_token_authorizes_and_counts_one_charge() -> None:
    gateway = SimulatedGateway()
    result = await gateway.authorize("tok_approve", USD_10, "o1:authorize")
    assert result.approved
    assert result.reference is not None
    assert result.reference.startswith("auth_")
    assert len(result.reference) == len("auth_") + 32  # never a 13-19 digit run, see _reference
    assert gateway.charges == 1
    assert gateway.state_of(result.reference) == "authorized"


async def test_any_other_test_token_approves() -> None:
    result = await SimulatedGateway().authorize("tok_visa_gold", USD_10, "o1:authorize")
    assert result.approved


@pytest.mark.parametrize(
    ("token", "code"),
    [("tok_decline", "declined"), ("tok_insufficient_funds", "insufficient_funds")],
)
async def test_declining_tokens_decline_with_their_code_and_charge_nothing(
    token: str, code: str
) -> None:
    gateway = SimulatedGateway()
    result = await gateway.authorize(token, USD_10, "o1:authorize")
    assert result == GatewayResult(approved=False, code=code)
    assert gateway.charges == 0


async def test_timeout_token_never_answers_within_the_timeout() -> None:
    gateway = SimulatedGateway(timeout_ms=30)
    started = time.monotonic()
    with pytest.raises(GatewayTimeout):
        await gateway.authorize("tok_timeout", USD_10, "o1:authorize")
    assert time.monotonic() - started >= 0.03
    assert gateway.charges == 0


async def test_latency_at_or_beyond_the_timeout_times_out() -> None:
    gateway = SimulatedGateway(latency_ms=40, timeout_ms=40)
    with pytest.raises(GatewayTimeout):
        await gateway.authorize("tok_approve", USD_10, "o1:authorize")


async def test_latency_below_the_timeout_delays_the_answer() -> None:
    gateway = SimulatedGateway(latency_ms=30, timeout_ms=1000)
    started = time.monotonic()
    assert (await gateway.authorize("tok_approve", USD_10, "o1:authorize")).approved
    assert time.monotonic() - started >= 0.03


async def test_same_idempotency_key_gives_the_same_result_and_charges_once() -> None:
    gateway = SimulatedGateway()
    first = await gateway.authorize("tok_approve", USD_10, "o1:authorize")
    again = await gateway.authorize("tok_approve", USD_10, "o1:authorize")
    assert again == first
    assert gateway.calls["authorize"] == 2
    assert gateway.charges == 1


async def test_a_new_idempotency_key_is_a_new_charge() -> None:
    gateway = SimulatedGateway()
    await gateway.authorize("tok_approve", USD_10, "o1:authorize")
    await gateway.authorize("tok_approve", USD_10, "o2:authorize")
    assert gateway.charges == 2


async def test_a_key_reused_for_another_request_is_refused() -> None:
    gateway = SimulatedGateway()
    await gateway.authorize("tok_approve", USD_10, "o1:authorize")
    with pytest.raises(IdempotencyKeyReused):
        await gateway.authorize("tok_approve", Money(amount=1, currency="USD"), "o1:authorize")
    assert gateway.charges == 1


async def test_a_decline_is_remembered_under_its_key_too() -> None:
    gateway = SimulatedGateway()
    first = await gateway.authorize("tok_decline", USD_10, "o1:authorize")
    assert await gateway.authorize("tok_decline", USD_10, "o1:authorize") == first
    assert gateway.effects["decline"] == 1


async def test_transient_failures_happen_before_any_effect() -> None:
    gateway = SimulatedGateway(failure_rate=1.0)
    with pytest.raises(GatewayUnavailable):
        await gateway.authorize("tok_approve", USD_10, "o1:authorize")
    gateway.failure_rate = 0.0
    assert (await gateway.authorize("tok_approve", USD_10, "o1:authorize")).approved
    assert gateway.charges == 1


async def test_a_seed_makes_the_failures_reproducible() -> None:
    async def pattern(seed: int) -> list[bool]:
        gateway = SimulatedGateway(failure_rate=0.5, seed=seed)
        outcomes = []
        for n in range(20):
            try:
                await gateway.authorize("tok_approve", USD_10, f"o{n}:authorize")
                outcomes.append(True)
            except GatewayUnavailable:
                outcomes.append(False)
        return outcomes

    first = await pattern(7)
    assert first == await pattern(7)
    assert True in first
    assert False in first


async def test_capture_then_refund_moves_the_authorization_through_its_states() -> None:
    gateway = SimulatedGateway()
    auth = await authorized(gateway)
    assert (await gateway.capture(auth, USD_10, "o1:capture")).approved
    assert gateway.state_of(auth) == "captured"
    assert (await gateway.refund(auth, USD_10, "o1:refund")).approved
    assert gateway.state_of(auth) == "refunded"
    assert gateway.effects == {"authorize": 1, "capture": 1, "refund": 1}


async def test_void_releases_an_uncaptured_authorization() -> None:
    gateway = SimulatedGateway()
    auth = await authorized(gateway)
    assert (await gateway.void(auth, "o1:void")).approved
    assert gateway.state_of(auth) == "voided"


async def test_void_after_capture_is_refused() -> None:
    gateway = SimulatedGateway()
    auth = await authorized(gateway)
    await gateway.capture(auth, USD_10, "o1:capture")
    assert await gateway.void(auth, "o1:void") == GatewayResult(
        approved=False, code="already_captured"
    )
    assert gateway.state_of(auth) == "captured"


async def test_refund_before_capture_is_refused() -> None:
    gateway = SimulatedGateway()
    auth = await authorized(gateway)
    result = await gateway.refund(auth, USD_10, "o1:refund")
    assert result == GatewayResult(approved=False, code="already_authorized")


async def test_capture_of_more_than_was_authorized_is_refused() -> None:
    gateway = SimulatedGateway()
    auth = await authorized(gateway)
    result = await gateway.capture(auth, Money(amount=1001, currency="USD"), "o1:capture")
    assert result == GatewayResult(approved=False, code="amount_exceeds_authorization")


async def test_capture_of_an_unknown_authorization_is_refused() -> None:
    result = await SimulatedGateway().capture("auth_nope", USD_10, "o1:capture")
    assert result.code == "no_such_authorization"


def failing(
    times: int, then: GatewayResult
) -> tuple[Callable[[], Awaitable[GatewayResult]], list[int]]:
    calls: list[int] = []

    async def call() -> GatewayResult:
        calls.append(1)
        if len(calls) <= times:
            raise GatewayUnavailable("flaky")
        return then

    return call, calls


async def test_retries_transient_failures_until_the_gateway_answers() -> None:
    call, calls = failing(2, GatewayResult(approved=True, reference="auth_1"))
    result = await with_retries(call, RetryPolicy(max_attempts=3, backoff_ms=1))
    assert result.approved
    assert len(calls) == 3


async def test_gives_up_after_the_last_attempt() -> None:
    call, calls = failing(5, GatewayResult(approved=True))
    with pytest.raises(GatewayUnavailable):
        await with_retries(call, RetryPolicy(max_attempts=3, backoff_ms=1))
    assert len(calls) == 3


async def test_a_timeout_is_not_retried() -> None:
    calls: list[int] = []

    async def call() -> GatewayResult:
        calls.append(1)
        raise GatewayTimeout("silent")

    with pytest.raises(GatewayTimeout):
        await with_retries(call, RetryPolicy(max_attempts=3, backoff_ms=1))
    assert len(calls) == 1


# --- books that outlive the process (state_path): what the platform's payment service runs with


async def test_after_a_restart_the_gateway_still_knows_its_authorizations(tmp_path: Path) -> None:
    """The chaos run's finding: payment restarted between capture and refund, and the refund was
    refused as no_such_authorization, leaving a cancelled order charged."""
    books = tmp_path / "gateway.sqlite3"
    before = SimulatedGateway(state_path=books, seed=1)
    reference = await authorized(before)
    assert (await before.capture(reference, USD_10, "o1:capture")).approved
    before.close()

    after = SimulatedGateway(state_path=books, seed=1)  # same seed: a restarted process
    assert after.state_of(reference) == "captured"
    refund = await after.refund(reference, USD_10, "o1:refund")
    assert refund.approved
    assert after.state_of(reference) == "refunded"
    # a key answered before the restart gets its first answer, and no second charge
    again = await after.authorize("tok_approve", USD_10, "o1:authorize")
    assert again.reference == reference
    assert after.charges == 0
    with pytest.raises(IdempotencyKeyReused):
        await after.authorize("tok_approve", Money(amount=5, currency="USD"), "o1:authorize")
    # the same seed draws the same random numbers: references must not repeat for all that
    other = await authorized(after, "o2:authorize")
    assert other != reference


async def test_two_processes_sharing_the_books_see_each_other_s_effects(tmp_path: Path) -> None:
    books = tmp_path / "gateway.sqlite3"
    one, two = SimulatedGateway(state_path=books), SimulatedGateway(state_path=books)
    reference = await authorized(one)
    assert (await two.capture(reference, USD_10, "o1:capture")).approved
    refused = await one.capture(reference, USD_10, "o1:capture-again")
    assert refused == GatewayResult(approved=False, code="already_captured")
    # a key one of them answered is answered the same by the other
    assert await two.capture(reference, USD_10, "o1:capture") == await one.capture(
        reference, USD_10, "o1:capture"
    )


async def test_a_failure_inside_a_call_leaves_the_books_as_they_were(tmp_path: Path) -> None:
    books = tmp_path / "gateway.sqlite3"
    gateway = SimulatedGateway(state_path=books)
    reference = await authorized(gateway)

    def broken() -> GatewayResult:
        gateway._state.put_hold(reference, _Hold(USD_10, "captured"))
        raise RuntimeError("the gateway fell over mid-call")

    with pytest.raises(RuntimeError):
        await gateway._call("o1:capture", ("capture", reference, USD_10), broken)
    assert SimulatedGateway(state_path=books).state_of(reference) == "authorized"


async def test_no_gateway_reference_reads_as_a_card_number(tmp_path: Path) -> None:
    """A CI run's card scan once flagged a capture reference whose 16 hex digits were all
    decimal and passed Luhn; references are 32 hex digits now, which no card-number run fits."""
    for gateway in (SimulatedGateway(seed=7), SimulatedGateway(state_path=tmp_path / "g.sqlite3")):
        references = [gateway._reference("cap") for _ in range(2000)]
        assert len(set(references)) == 2000
        assert find_card_numbers(" ".join(references).encode()) == []
    all_digits = "cap_" + "4" * 31 + "2"  # the one shape left: still not a 13-19 digit run
    assert find_card_numbers(all_digits.encode()) == []
