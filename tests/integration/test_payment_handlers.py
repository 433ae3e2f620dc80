"""Payment handlers on a real PostgreSQL database, each call in its own transaction as the kit runs it.

The gateway is the simulator, so the tests can count what it really charged.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka.structs import ConsumerRecord
from fastapi import FastAPI

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
from events.envelope import wrap
from events.kit import auth, db
from events.kit.inbox import HandlerContext
from events.kit.settings import DEV_SIGNING_KEY, ServiceSettings
from events.messages import Message, Money
from payment_service.api import router
from payment_service.app import MIGRATIONS
from payment_service.gateway import GatewayResult, GatewayUnavailable, RetryPolicy, SimulatedGateway
from payment_service.handlers import HANDLERS, Deps, PaymentUnit
from tests.integration.platform_support import admin_headers, wait_until

pytestmark = pytest.mark.integration

USD_10 = Money(amount=1000, currency="USD")
RECORD = ConsumerRecord("payment.commands", 0, 0, 0, 0, None, b"", None, 0, 0, [])
FAST_RETRY = RetryPolicy(max_attempts=3, backoff_ms=1)


@pytest.fixture(scope="module")
async def pool(stack: Any) -> AsyncIterator[asyncpg.Pool]:
    url = stack.database_url(f"payment_handlers_{uuid.uuid4().hex[:8]}")
    await db.ensure_database(url)
    pool = await db.create_pool(url, min_size=1, max_size=4)
    await db.apply_migrations(pool, MIGRATIONS)
    yield pool
    await pool.close()


@pytest.fixture
def gateway() -> SimulatedGateway:
    return SimulatedGateway(timeout_ms=50, seed=1)


class Payments:
    """Delivers commands to the handlers the way the inbox does: one transaction per call."""

    def __init__(self, pool: asyncpg.Pool, gateway: SimulatedGateway) -> None:
        self.pool = pool
        self.gateway = gateway
        self.order_id = uuid.uuid4()

    def key(self, step: str) -> str:
        return f"{self.order_id}:{step}"

    def authorize(self, token: str = "tok_approve") -> AuthorizePayment:
        return AuthorizePayment(
            order_id=self.order_id,
            customer_id="c1",
            amount=USD_10,
            payment_token=token,
            idempotency_key=self.key("authorize"),
        )

    def capture(self) -> CapturePayment:
        return CapturePayment(
            order_id=self.order_id, amount=USD_10, idempotency_key=self.key("capture")
        )

    def void(self) -> VoidPayment:
        return VoidPayment(order_id=self.order_id, reason="test", idempotency_key=self.key("void"))

    def refund(self) -> RefundPayment:
        return RefundPayment(
            order_id=self.order_id, amount=USD_10, reason="test", idempotency_key=self.key("refund")
        )

    async def send(
        self, cmd: Message, *, crash_before_commit: bool = False, settle_for_s: float = 0.0
    ) -> Message:
        """Run the command's handler; with crash_before_commit its transaction is rolled back."""

        class Crash(Exception):
            pass

        handler = HANDLERS[type(cmd)]
        envelope = wrap(cmd, producer="test-saga")
        record = ConsumerRecord("payment.commands", 0, 0, 0, 0, None, b"", None, 0, 0, [])
        replies: Sequence[Message] = []
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                unit = await PaymentUnit.for_commands(conn, [cmd])
                ctx = HandlerContext(conn, envelope, record, unit)
                replies = await handler(
                    cmd, ctx, Deps(self.gateway, FAST_RETRY, settle_for_s=settle_for_s)
                )
                await unit.flush()
                if crash_before_commit:
                    raise Crash
        except Crash:
            pass
        assert len(replies) == 1
        return replies[0]

    async def status(self) -> str | None:
        value: str | None = await self.pool.fetchval(
            "SELECT status FROM payments WHERE order_id = $1", self.order_id
        )
        return value

    async def ledger(self) -> list[tuple[str, int, str]]:
        rows = await self.pool.fetch(
            "SELECT kind, amount, idempotency_key FROM ledger WHERE order_id = $1 ORDER BY id",
            self.order_id,
        )
        return [(r["kind"], r["amount"], r["idempotency_key"]) for r in rows]


@pytest.fixture
def payments(pool: asyncpg.Pool, gateway: SimulatedGateway) -> Payments:
    return Payments(pool, gateway)


async def test_approve_token_is_authorized_and_recorded(payments: Payments) -> None:
    reply = await payments.send(payments.authorize("tok_approve"))
    assert isinstance(reply, PaymentAuthorized)
    assert reply.order_id == payments.order_id
    assert reply.amount == USD_10
    assert payments.gateway.state_of(reply.authorization_code) == "authorized"
    assert await payments.status() == "AUTHORIZED"
    assert await payments.ledger() == [("authorize", 1000, payments.key("authorize"))]


@pytest.mark.parametrize(
    ("token", "code"),
    [("tok_decline", "declined"), ("tok_insufficient_funds", "insufficient_funds")],
)
async def test_declining_token_is_declined_with_its_code_and_recorded(
    payments: Payments, token: str, code: str
) -> None:
    reply = await payments.send(payments.authorize(token))
    assert isinstance(reply, PaymentDeclined)
    assert reply.code == code
    assert await payments.status() == "DECLINED"
    assert await payments.ledger() == [("decline", 1000, payments.key("authorize"))]
    assert payments.gateway.charges == 0


async def test_gateway_timeout_is_declined_with_gateway_timeout(payments: Payments) -> None:
    reply = await payments.send(payments.authorize("tok_timeout"))
    assert isinstance(reply, PaymentDeclined)
    assert reply.code == "gateway_timeout"
    assert await payments.status() == "DECLINED"


async def test_a_gateway_failing_past_its_retries_is_declined_with_gateway_error(
    payments: Payments,
) -> None:
    payments.gateway.failure_rate = 1.0
    reply = await payments.send(payments.authorize())
    assert isinstance(reply, PaymentDeclined)
    assert reply.code == "gateway_error"
    assert payments.gateway.calls["authorize"] == FAST_RETRY.max_attempts
    assert payments.gateway.charges == 0


async def test_transient_failures_are_retried_and_charge_once(payments: Payments) -> None:
    gateway = payments.gateway
    real_authorize = gateway.authorize
    failures = [GatewayUnavailable("blip"), GatewayUnavailable("blip")]

    async def flaky(token: str, amount: Money, idempotency_key: str) -> GatewayResult:
        if failures:
            raise failures.pop()
        return await real_authorize(token, amount, idempotency_key)

    gateway.authorize = flaky  # type: ignore[method-assign]
    reply = await payments.send(payments.authorize())
    assert isinstance(reply, PaymentAuthorized)
    assert gateway.charges == 1


async def test_the_same_authorize_delivered_twice_charges_once(payments: Payments) -> None:
    first = await payments.send(payments.authorize())
    again = await payments.send(payments.authorize())
    assert again == first
    assert payments.gateway.calls["authorize"] == 1
    assert payments.gateway.charges == 1
    assert len(await payments.ledger()) == 1


async def test_a_crash_after_the_gateway_charged_but_before_commit_charges_once(
    payments: Payments,
) -> None:
    lost = await payments.send(payments.authorize(), crash_before_commit=True)
    assert await payments.status() is None
    redelivered = await payments.send(payments.authorize())
    assert redelivered == lost
    assert payments.gateway.calls["authorize"] == 2
    assert payments.gateway.charges == 1
    assert await payments.ledger() == [("authorize", 1000, payments.key("authorize"))]


async def test_a_repeated_decline_is_answered_from_the_ledger(payments: Payments) -> None:
    first = await payments.send(payments.authorize("tok_decline"))
    assert await payments.send(payments.authorize("tok_decline")) == first
    assert payments.gateway.calls["authorize"] == 1


async def test_capture_then_refund_moves_the_money_and_records_each_movement(
    payments: Payments,
) -> None:
    authorized = await payments.send(payments.authorize())
    assert isinstance(authorized, PaymentAuthorized)
    captured = await payments.send(payments.capture())
    assert captured == PaymentCaptured(
        order_id=payments.order_id, payment_id=authorized.payment_id, amount=USD_10
    )
    assert await payments.status() == "CAPTURED"
    refunded = await payments.send(payments.refund())
    assert refunded == PaymentRefunded(
        order_id=payments.order_id, payment_id=authorized.payment_id, amount=USD_10
    )
    assert await payments.status() == "REFUNDED"
    assert payments.gateway.state_of(authorized.authorization_code) == "refunded"
    assert await payments.ledger() == [
        ("authorize", 1000, payments.key("authorize")),
        ("capture", 1000, payments.key("capture")),
        ("refund", 1000, payments.key("refund")),
    ]


async def test_a_repeated_capture_is_answered_without_calling_the_gateway(
    payments: Payments,
) -> None:
    await payments.send(payments.authorize())
    first = await payments.send(payments.capture())
    assert await payments.send(payments.capture()) == first
    assert payments.gateway.calls["capture"] == 1


async def test_void_before_capture_releases_the_authorization(payments: Payments) -> None:
    authorized = await payments.send(payments.authorize())
    assert isinstance(authorized, PaymentAuthorized)
    voided = await payments.send(payments.void())
    assert voided == PaymentVoided(order_id=payments.order_id, payment_id=authorized.payment_id)
    assert await payments.status() == "VOIDED"
    assert payments.gateway.state_of(authorized.authorization_code) == "voided"
    assert [kind for kind, *_ in await payments.ledger()] == ["authorize", "void"]
    assert await payments.send(payments.void()) == voided
    assert payments.gateway.calls["void"] == 1


async def test_void_with_nothing_authorized_is_answered_without_a_payment_id(
    payments: Payments,
) -> None:
    assert await payments.send(payments.void()) == PaymentVoided(
        order_id=payments.order_id, payment_id=None
    )
    assert await payments.send(payments.void()) == PaymentVoided(
        order_id=payments.order_id, payment_id=None
    )
    assert payments.gateway.calls["void"] == 0
    assert await payments.ledger() == []


async def test_void_after_a_timeout_decline_is_answered_without_a_payment_id(
    payments: Payments,
) -> None:
    await payments.send(payments.authorize("tok_timeout"))
    reply = await payments.send(payments.void())
    assert reply == PaymentVoided(order_id=payments.order_id, payment_id=None)


async def test_void_after_capture_fails_and_leaves_the_capture_alone(payments: Payments) -> None:
    await payments.send(payments.authorize())
    await payments.send(payments.capture())
    reply = await payments.send(payments.void())
    assert isinstance(reply, PaymentOperationFailed)
    assert reply.operation == "void"
    assert await payments.status() == "CAPTURED"
    assert payments.gateway.calls["void"] == 0


async def test_refund_before_capture_is_refused(payments: Payments) -> None:
    await payments.send(payments.authorize())
    reply = await payments.send(payments.refund())
    assert isinstance(reply, PaymentOperationFailed)
    assert reply.operation == "refund"
    assert await payments.status() == "AUTHORIZED"
    assert payments.gateway.calls["refund"] == 0


async def test_capture_without_authorization_fails(payments: Payments) -> None:
    await payments.send(payments.authorize("tok_decline"))
    reply = await payments.send(payments.capture())
    assert isinstance(reply, PaymentOperationFailed)
    assert reply.operation == "capture"


async def test_a_gateway_outage_during_capture_raises_so_the_kit_retries_it(
    payments: Payments,
) -> None:
    await payments.send(payments.authorize())
    payments.gateway.failure_rate = 1.0
    with pytest.raises(GatewayUnavailable):
        await payments.send(payments.capture())
    assert await payments.status() == "AUTHORIZED"
    payments.gateway.failure_rate = 0.0
    assert isinstance(await payments.send(payments.capture()), PaymentCaptured)


@pytest.mark.parametrize("outage", ["failing", "timing out"])
async def test_a_refund_asks_a_gateway_in_an_outage_again_until_it_answers(
    payments: Payments, outage: str
) -> None:
    """The long chaos run's finding: a refund given up after three quick tries while the gateway
    was slow went to the dead-letter topic, and its cancelled order stayed charged."""
    await payments.send(payments.authorize())
    assert isinstance(await payments.send(payments.capture()), PaymentCaptured)
    if outage == "failing":
        payments.gateway.failure_rate = 1.0
    else:
        payments.gateway.latency_ms = payments.gateway.timeout_ms  # every call times out
    refund = asyncio.create_task(payments.send(payments.refund(), settle_for_s=30))

    async def asked_again() -> bool:
        return payments.gateway.calls["refund"] >= 4  # past the three quick tries

    await wait_until(asked_again, timeout=20)
    assert not refund.done()
    assert await payments.status() == "CAPTURED"
    payments.gateway.failure_rate = 0.0
    payments.gateway.latency_ms = 0
    reply = await asyncio.wait_for(refund, timeout=20)
    assert isinstance(reply, PaymentRefunded)
    assert await payments.status() == "REFUNDED"
    assert [kind for kind, _, _ in await payments.ledger()] == ["authorize", "capture", "refund"]


async def test_a_settlement_the_gateway_never_answers_is_given_up_after_settle_for_s(
    payments: Payments,
) -> None:
    await payments.send(payments.authorize())
    payments.gateway.failure_rate = 1.0
    started = time.monotonic()
    with pytest.raises(GatewayUnavailable):
        await payments.send(payments.capture(), settle_for_s=0.5)
    assert 0.3 < time.monotonic() - started < 10
    assert payments.gateway.calls["capture"] > 3
    assert await payments.status() == "AUTHORIZED"


async def test_a_batch_of_several_orders_commands_ends_where_they_end_one_by_one(
    pool: asyncpg.Pool, gateway: SimulatedGateway
) -> None:
    """Each order's whole saga in one unit of work (its later commands read what its earlier ones
    recorded, in memory), against the same commands in a transaction each."""

    def commands(orders: list[Payments]) -> list[Message]:
        happy, declined, voided = orders
        return [
            happy.authorize(),
            declined.authorize("tok_decline"),
            voided.authorize(),
            happy.capture(),
            voided.void(),
            happy.refund(),
            happy.capture(),  # repeated: answered from the ledger
        ]

    deps = Deps(gateway, FAST_RETRY)
    runs = []
    for batched in (True, False):
        orders = [Payments(pool, gateway) for _ in range(3)]
        replies: list[Message] = []
        groups = [commands(orders)] if batched else [[c] for c in commands(orders)]
        for group in groups:
            async with pool.acquire() as conn, conn.transaction():
                unit = await PaymentUnit.for_commands(conn, group)
                for cmd in group:
                    ctx = HandlerContext(conn, wrap(cmd, producer="test"), RECORD, unit)
                    replies += await HANDLERS[type(cmd)](cmd, ctx, deps)
                await unit.flush()
        ids = [o.order_id for o in orders]
        runs.append(
            (
                [(type(r).__name__, ids.index(r.order_id)) for r in replies],  # type: ignore[attr-defined]
                [await o.status() for o in orders],
                [[(kind, amount) for kind, amount, _ in await o.ledger()] for o in orders],
            )
        )
    assert runs[0] == runs[1]
    kinds, statuses, ledgers = runs[0]
    assert [k for k, _ in kinds] == [
        "PaymentAuthorized",
        "PaymentDeclined",
        "PaymentAuthorized",
        "PaymentCaptured",
        "PaymentVoided",
        "PaymentRefunded",
        "PaymentCaptured",
    ]
    assert statuses == ["REFUNDED", "DECLINED", "VOIDED"]
    assert ledgers[0] == [("authorize", 1000), ("capture", 1000), ("refund", 1000)]


async def test_only_a_hint_of_the_token_is_stored(payments: Payments) -> None:
    token = "tok_visa_0123456789"
    await payments.send(payments.authorize(token))
    stored = await payments.pool.fetchval(
        "SELECT p::text || (SELECT string_agg(l::text, '') FROM ledger l WHERE l.order_id = $1)"
        " FROM payments p WHERE p.order_id = $1",
        payments.order_id,
    )
    assert token not in stored
    assert "tok_...6789" in stored


async def test_operators_see_the_status_and_the_ledger(payments: Payments) -> None:
    authorized = await payments.send(payments.authorize())
    await payments.send(payments.capture())
    app = FastAPI()
    app.state.runtime = SimpleNamespace(pool=payments.pool)
    app.include_router(router)
    auth.install(app, ServiceSettings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=admin_headers(key=DEV_SIGNING_KEY)
    ) as client:
        found = await client.get(f"/payments/{payments.order_id}")
        missing = await client.get(f"/payments/{uuid.uuid4()}")
    assert found.status_code == 200
    body = found.json()
    assert body["status"] == "CAPTURED"
    assert body["payment_id"] == str(authorized.payment_id)  # type: ignore[attr-defined]
    assert body["token_hint"] == "tok_...rove"
    assert [e["kind"] for e in body["ledger"]] == ["authorize", "capture"]
    assert body["ledger"][0]["amount"] == {"amount": 1000, "currency": "USD"}
    assert missing.status_code == 404
