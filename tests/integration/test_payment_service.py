"""payment_service running in-process against the real broker: commands in, replies out, over Kafka."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from pydantic import SecretStr

from events.contracts import REGISTRY, AuthorizePayment, PaymentAuthorized, PaymentDeclined
from events.envelope import DecodeError, Envelope, Header, decode, encode, headers_for, wrap
from events.kit.producer import make_producer
from events.kit.runtime import ServiceRuntime
from events.kit.settings import DEV_SIGNING_KEY
from events.messages import Message, Money
from events.topics import PAYMENT_COMMANDS, PAYMENT_EVENTS, spec
from payment_service.app import build
from payment_service.gateway import SimulatedGateway
from payment_service.settings import Settings
from tests.integration.kit_support import eventually
from tests.integration.platform_support import admin_headers
from tests.ports import free_port as free_port

pytestmark = pytest.mark.integration

USD_25 = Money(amount=2500, currency="USD")
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def gateway() -> SimulatedGateway:
    return SimulatedGateway(timeout_ms=200, seed=3)


@pytest.fixture(scope="module")
async def service(stack: Any, gateway: SimulatedGateway) -> AsyncIterator[ServiceRuntime]:
    settings = Settings(
        kafka_bootstrap_servers=stack.kafka_bootstrap,
        database_url=SecretStr(stack.database_url(f"payment_kafka_{uuid.uuid4().hex[:8]}")),
        http_port=free_port(),
        consumer_poll_ms=50,
        outbox_poll_ms=50,
        log_json=False,
    )
    runtime = build(settings, gateway=gateway)
    await runtime.start(http=False)
    # The shared payment.commands topic may hold other tests' commands; let the service apply
    # that backlog first, so the tests' counts of gateway charges see only their own orders.
    await eventually(lambda: caught_up(runtime), timeout=60)
    yield runtime
    await runtime.stop()


async def caught_up(runtime: ServiceRuntime) -> bool:
    consumer = runtime.consumers[0].kafka
    assigned = consumer.assignment()
    if not assigned:
        return False
    ends = await consumer.end_offsets(list(assigned))
    for tp, end in ends.items():
        if end and (await consumer.committed(tp) or 0) < end:
            return False
    return True


@pytest.fixture(scope="module")
async def producer(stack: Any) -> AsyncIterator[AIOKafkaProducer]:
    p = make_producer(stack.kafka_bootstrap, client_id="payment-tests")
    await p.start()
    yield p
    await p.stop()


@pytest.fixture(scope="module")
async def replies(stack: Any) -> AsyncIterator[AIOKafkaConsumer]:
    """Reads payment.events from its end as the tests start, with no consumer group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    partitions = [TopicPartition(PAYMENT_EVENTS, p) for p in range(spec(PAYMENT_EVENTS).partitions)]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)
    yield consumer
    await consumer.stop()


async def send(producer: AIOKafkaProducer, envelope: Envelope, message: Message) -> None:
    await producer.send_and_wait(
        PAYMENT_COMMANDS,
        value=encode(envelope),
        key=message.partition_key().encode(),
        headers=headers_for(envelope),
    )


async def replies_for(
    consumer: AIOKafkaConsumer, order_id: uuid.UUID, *, count: int
) -> list[tuple[Header, Message]]:
    """Read payment.events until `count` replies about the order have arrived, or fail."""
    found: list[tuple[Header, Message]] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(found) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"wanted {count} replies for {order_id}, got {found}")
        batch = await consumer.getmany(timeout_ms=200)
        for records in batch.values():
            for record in records:
                try:  # other tests put corrupt records on the shared topics to fuzz consumers
                    envelope, message = decode(record.value, REGISTRY)
                except DecodeError:
                    continue
                if getattr(message, "order_id", None) == order_id:
                    found.append((envelope, message))
    return found


def authorize(order_id: uuid.UUID, token: str) -> AuthorizePayment:
    return AuthorizePayment(
        order_id=order_id,
        customer_id="c1",
        amount=USD_25,
        payment_token=token,
        idempotency_key=f"{order_id}:authorize",
    )


async def test_authorize_over_kafka_is_answered_with_payment_authorized(
    service: ServiceRuntime,
    producer: AIOKafkaProducer,
    replies: AIOKafkaConsumer,
    gateway: SimulatedGateway,
) -> None:
    order_id = uuid.uuid4()
    command = authorize(order_id, "tok_approve")
    envelope = wrap(command, producer="order")
    await send(producer, envelope, command)

    [(reply_envelope, reply)] = await replies_for(replies, order_id, count=1)

    assert isinstance(reply, PaymentAuthorized)
    assert reply.amount == USD_25
    assert reply_envelope.correlation_id == str(order_id)
    assert reply_envelope.causation_id == envelope.event_id
    assert reply_envelope.producer == "payment"
    assert gateway.state_of(reply.authorization_code) == "authorized"


async def test_the_same_authorize_delivered_twice_over_kafka_charges_once(
    service: ServiceRuntime,
    producer: AIOKafkaProducer,
    replies: AIOKafkaConsumer,
    gateway: SimulatedGateway,
) -> None:
    order_id = uuid.uuid4()
    command = authorize(order_id, "tok_approve")
    first = wrap(command, producer="order")
    resent = wrap(command, producer="order")  # the saga asking again: new event id, same key
    charges_before = gateway.charges
    await send(producer, first, command)
    await send(producer, first, command)  # a redelivery of the very same record
    await send(producer, resent, command)

    # One partition keeps their order, so when the resend is answered the duplicate was handled.
    found = await replies_for(replies, order_id, count=2)

    assert [env.causation_id for env, _ in found] == [first.event_id, resent.event_id]
    assert found[0][1] == found[1][1]
    assert isinstance(found[0][1], PaymentAuthorized)
    assert gateway.charges == charges_before + 1
    async with service.pool.acquire() as conn:
        kinds = await conn.fetch("SELECT kind FROM ledger WHERE order_id = $1", order_id)
    assert [r["kind"] for r in kinds] == ["authorize"]


async def test_a_declined_token_over_kafka_is_answered_and_visible_to_operators(
    service: ServiceRuntime, producer: AIOKafkaProducer, replies: AIOKafkaConsumer
) -> None:
    order_id = uuid.uuid4()
    command = authorize(order_id, "tok_insufficient_funds")
    await send(producer, wrap(command, producer="order"), command)

    [(_, reply)] = await replies_for(replies, order_id, count=1)

    assert isinstance(reply, PaymentDeclined)
    assert reply.code == "insufficient_funds"
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://payment", headers=admin_headers(key=DEV_SIGNING_KEY)
    ) as client:
        view = (await client.get(f"/payments/{order_id}")).json()
    assert view["status"] == "DECLINED"
    assert [(e["kind"], e["code"]) for e in view["ledger"]] == [("decline", "insufficient_funds")]


async def test_a_gateway_call_that_does_not_answer_holds_up_only_its_own_batch(
    service: ServiceRuntime,
    producer: AIOKafkaProducer,
    replies: AIOKafkaConsumer,
    gateway: SimulatedGateway,
) -> None:
    """tok_timeout is never answered before the gateway's timeout. The batch waiting for it is
    overtaken, and an order authorized after it is answered meanwhile, not seconds later."""
    consumer = service.consumers[0]
    overtaken_before = consumer.stats.overtaken
    silent, later = uuid.uuid4(), uuid.uuid4()
    gateway.timeout_ms = 5_000
    try:
        command = authorize(silent, "tok_timeout")
        await send(producer, wrap(command, producer="order"), command)
        await eventually(lambda: _more_than(consumer.stats.overtaken, overtaken_before))
        command = authorize(later, "tok_approve")
        await send(producer, wrap(command, producer="order"), command)

        [(_, reply)] = await replies_for(replies, later, count=1)
        assert isinstance(reply, PaymentAuthorized)
        async with service.pool.acquire() as conn:
            # answered while the silent order's call was still out: nothing recorded for it yet
            assert await conn.fetch("SELECT kind FROM ledger WHERE order_id = $1", silent) == []
        [(_, declined)] = await replies_for(replies, silent, count=1)
    finally:
        gateway.timeout_ms = 200
    assert isinstance(declined, PaymentDeclined)
    assert declined.code == "gateway_timeout"


async def _more_than(value: int, floor: int) -> bool:
    return value > floor
