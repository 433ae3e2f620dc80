"""The secured broker against real clients: SCRAM refuses a wrong password and a plaintext client,
the ACLs keep each service to its own topics, and the whole platform still works on it: an order
placed over HTTP is confirmed by five service processes that each connect as their own principal
(so the ACL set derived from the code is complete). The same platform then proves that no secret
it was given reaches its logs or its error bodies, even with its database gone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from deploy.local.common import wait_for
from deploy.local.postgres import LocalPostgres, with_database
from deploy.local.services import SERVICES, ServiceSupervisor
from events.kit.auth import ADMIN, CUSTOMER, mint_token
from events.topics import ORDER_EVENTS, PAYMENT_EVENTS
from tests.integration.platform_support import (
    TERMINAL,
    TEST_SIGNING_KEY,
    e2e_env,
    free_port,
    wait_until,
)
from tests.security.conftest import SecuredKafka

pytestmark = pytest.mark.integration

DB_PASSWORD = "db-pw-7Hq2xV9mZp4Lw8Rt"


# -- the broker refuses what it should ----------------------------------------------------------


async def test_a_wrong_password_is_refused(secured_kafka: SecuredKafka) -> None:
    options = secured_kafka.security.client_options("payment")
    options["sasl_plain_password"] = "not-the-password"
    admin = AIOKafkaAdminClient(
        bootstrap_servers=secured_kafka.bootstrap, request_timeout_ms=5000, **options
    )
    with pytest.raises(KafkaConnectionError):
        await admin.start()
    await admin.close()


async def test_a_plaintext_client_cannot_connect_to_the_sasl_listener(
    secured_kafka: SecuredKafka,
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=secured_kafka.bootstrap, request_timeout_ms=5000)
    with pytest.raises(KafkaConnectionError):
        await admin.start()
    await admin.close()


async def test_the_right_password_connects(secured_kafka: SecuredKafka) -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=secured_kafka.bootstrap,
        request_timeout_ms=5000,
        **secured_kafka.security.client_options("payment"),
    )
    await admin.start()
    try:
        # Describe is granted on the declared topics only: the metadata shows them, nothing else.
        assert PAYMENT_EVENTS in await admin.list_topics()
    finally:
        await admin.close()


@pytest.fixture
async def payment_producer(secured_kafka: SecuredKafka) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(
        bootstrap_servers=secured_kafka.bootstrap,
        enable_idempotence=True,
        acks="all",
        request_timeout_ms=10_000,
        **secured_kafka.security.client_options("payment"),
    )
    await producer.start()
    yield producer
    await producer.stop()


async def test_the_payment_principal_cannot_produce_to_an_order_topic(
    payment_producer: AIOKafkaProducer,
) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await asyncio.wait_for(payment_producer.send_and_wait(ORDER_EVENTS, b"forged"), 30)


async def test_the_payment_principal_produces_to_its_own_topic(
    payment_producer: AIOKafkaProducer,
) -> None:
    # The topic's consumers skip what they cannot decode; this record says what it is.
    meta = await payment_producer.send_and_wait(PAYMENT_EVENTS, b"acl test record", key=b"acl")
    assert meta.offset >= 0


async def test_the_payment_principal_cannot_read_order_events_in_its_own_group(
    secured_kafka: SecuredKafka,
) -> None:
    consumer = AIOKafkaConsumer(
        ORDER_EVENTS,
        bootstrap_servers=secured_kafka.bootstrap,
        group_id=f"{secured_kafka.group_prefix}payment",
        auto_offset_reset="earliest",
        request_timeout_ms=10_000,
        **secured_kafka.security.client_options("payment"),
    )
    await consumer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(consumer.getmany(timeout_ms=5000), 30)
    finally:
        await consumer.stop()


# -- the whole platform on the secured broker -----------------------------------------------------


@pytest.fixture(scope="module")
def secure_platform(
    secured_kafka: SecuredKafka,
    secure_postgres: LocalPostgres,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceSupervisor]:
    # Trust authentication ignores the password, but every service is handed one to leak.
    server = secure_postgres.admin_url.replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)
    supervisor = ServiceSupervisor(
        kafka_bootstrap=secured_kafka.bootstrap,
        database_url=lambda name: with_database(server, f"secure_{name}"),
        data_dir=tmp_path_factory.mktemp("secure-platform"),
        ports={svc.package: free_port() for svc in SERVICES},
        env=e2e_env(secured_kafka.group_prefix),
        kafka_security=secured_kafka.security,
    )
    try:
        supervisor.start_all(timeout=180)
        yield supervisor
    finally:
        supervisor.stop_all()


def bearer(subject: str, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(TEST_SIGNING_KEY, subject, [role])}"}


@pytest.fixture
async def clients(
    secure_platform: ServiceSupervisor,
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    made = {
        s.database: httpx.AsyncClient(
            base_url=secure_platform.url(s.database),
            timeout=10.0,
            headers=bearer("security-admin", ADMIN),
        )
        for s in SERVICES
    }
    try:
        yield made
    finally:
        for c in made.values():
            await c.aclose()


async def test_an_order_is_confirmed_end_to_end_with_every_service_on_its_own_principal(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    sku = f"SEC-{uuid.uuid4().hex[:8].upper()}"
    r = await clients["catalog"].put(
        f"/admin/products/{sku}",
        json={
            "name": "secured",
            "description": "made by the broker security test",
            "category": "tests",
            "price": 990,
            "currency": "USD",
            "active": True,
        },
    )
    assert r.status_code in (200, 201), r.text
    r = await clients["inventory"].post(f"/admin/stock/{sku}/restock", json={"quantity": 5})
    assert r.status_code in (200, 202), r.text

    async def priced() -> bool:
        return (await clients["order"].get(f"/catalog/{sku}")).status_code == 200

    await wait_until(priced, timeout=60)
    customer = f"c-{uuid.uuid4().hex[:8]}"
    r = await clients["order"].post(
        "/orders",
        json={
            "lines": [{"sku": sku, "quantity": 2}],
            "currency": "USD",
            "payment_token": "tok_approve",
        },
        headers=bearer(customer, CUSTOMER),
    )
    assert r.status_code == 202, r.text
    order_id = r.json()["order_id"]

    async def done() -> dict[str, Any] | None:
        body: dict[str, Any] = (await clients["order"].get(f"/orders/{order_id}")).json()
        return body if body["status"] in TERMINAL else None

    final = await wait_until(done, timeout=90, interval=0.3)
    assert final["status"] == "CONFIRMED", final
    stock = (await clients["inventory"].get(f"/stock/{sku}")).json()
    assert stock["available"] == 3, stock

    async def counted() -> bool:
        r = await clients["analytics"].get("/api/totals")
        return r.status_code == 200 and r.json()["confirmed"] >= 1

    # analytics (faust) folds the events on its own principal, group and changelog topics
    await wait_until(counted, timeout=90, interval=0.5)


# -- no secret in logs or error bodies ------------------------------------------------------------


def secrets_given(secured_kafka: SecuredKafka) -> dict[str, str]:
    """Every secret the platform under test was configured with, by what it is."""
    given = {f"kafka password of {u}": p for u, p in secured_kafka.security.passwords.items()}
    return given | {"database password": DB_PASSWORD, "token signing key": TEST_SIGNING_KEY}


def leaked(text: str, secrets: dict[str, str]) -> list[str]:
    return [what for what, value in secrets.items() if value in text]


async def error_bodies(clients: dict[str, httpx.AsyncClient]) -> list[httpx.Response]:
    """Answers to bad requests: malformed and invalid bodies, bad or forged tokens, unknown ids."""
    order, catalog, inventory = clients["order"], clients["catalog"], clients["inventory"]
    forged = {"Authorization": f"Bearer {mint_token('x' * 40, 'mallory', [ADMIN])}"}
    return [
        await order.post("/orders", content=b"{not json", headers={"content-type": "x"}),
        await order.post("/orders", json={"lines": "nope", "payment_token": 7}),
        await order.get("/orders/not-a-uuid"),
        await order.get(f"/orders/{uuid.uuid4()}"),
        await order.get("/orders", headers={"Authorization": "Bearer garbage"}),
        await order.get("/orders", headers=forged),
        await catalog.put("/admin/products/BAD", json={"price": -1}),
        await inventory.post("/admin/stock/NOPE/restock", json={"quantity": "many"}),
    ]


def test_a_service_with_a_wrong_kafka_password_exits_without_logging_it(
    secured_kafka: SecuredKafka, secure_postgres: LocalPostgres, tmp_path: Path
) -> None:
    wrong = "wrong-kafka-pw-Zq81Lm3Xv"
    payment = next(s for s in SERVICES if s.database == "payment")
    supervisor = ServiceSupervisor(
        kafka_bootstrap=secured_kafka.bootstrap,
        database_url=lambda name: with_database(secure_postgres.admin_url, "secure_payment"),
        data_dir=tmp_path,
        ports={payment.package: free_port()},
        env={"PAYMENT_KAFKA_PASSWORD": wrong},
        services=(payment,),
        kafka_security=secured_kafka.security,
    )
    supervisor.start(payment.package)
    try:
        wait_for(lambda: supervisor.pid(payment.package) is None, timeout=90, what="payment exit")
    finally:
        supervisor.stop_all()
    log = supervisor.log_file(payment).read_text(errors="replace")
    assert log
    assert wrong not in log
    assert not leaked(log, secrets_given(secured_kafka))


async def test_no_secret_reaches_an_error_body_or_a_log_even_with_the_database_down(
    clients: dict[str, httpx.AsyncClient],
    secure_platform: ServiceSupervisor,
    secured_kafka: SecuredKafka,
    secure_postgres: LocalPostgres,
) -> None:
    secrets = secrets_given(secured_kafka)
    responses = await error_bodies(clients)
    assert all(r.status_code >= 400 for r in responses), [r.status_code for r in responses]

    secure_postgres.stop()  # the platform loses its database: readiness and reads fail
    down: list[httpx.Response] = []

    async def all_unready() -> bool:
        down.clear()
        for c in clients.values():
            down.append(await c.get("/health/ready"))
        return all(r.status_code == 503 for r in down)

    await wait_until(all_unready, timeout=60, interval=0.5)
    down.append(await clients["order"].get(f"/orders/{uuid.uuid4()}"))
    down.append(await clients["inventory"].get("/stock/ANY"))

    for r in responses + down:
        text = r.text + "".join(f"{k}: {v}\n" for k, v in r.headers.items())
        assert not leaked(text, secrets), (r.request.url, r.status_code, r.text)

    logs = sorted((secure_platform.data_dir / "logs").glob("*.log"))
    assert len(logs) == len(SERVICES)
    assert sum(p.stat().st_size for p in logs) > 0
    for path in logs:
        assert not leaked(path.read_text(errors="replace"), secrets), path
