"""The whole platform end to end: five service processes, the real broker and database, over HTTP."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from deploy.local.services import ServiceSupervisor
from events.kit.auth import mint_token
from tests.integration.platform_support import (
    TERMINAL,
    customer_headers,
    running_platform,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def platform(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceSupervisor]:
    with running_platform(stack, tmp_path_factory.mktemp("platform")) as supervisor:
        yield supervisor


async def product(http: dict[str, httpx.AsyncClient], stock: int, price: int = 1250) -> str:
    """A fresh SKU with a price in the catalog and stock in inventory, known to the order service."""
    sku = f"E2E-{uuid.uuid4().hex[:10].upper()}"
    r = await http["catalog"].put(
        f"/admin/products/{sku}",
        json={
            "name": f"Test product {sku}",
            "description": "made by a test",
            "category": "tests",
            "price": price,
            "currency": "USD",
            "active": True,
        },
    )
    assert r.status_code in (200, 201), r.text
    if stock:
        r = await http["inventory"].post(f"/admin/stock/{sku}/restock", json={"quantity": stock})
        assert r.status_code in (200, 202), r.text

    await wait_until(known_to_orders(http, sku), timeout=30)
    return sku


def known_to_orders(http: dict[str, httpx.AsyncClient], sku: str) -> Any:
    async def check() -> bool:
        r = await http["order"].get(f"/catalog/{sku}")
        return r.status_code == 200

    return check


async def stock_of(http: dict[str, httpx.AsyncClient], sku: str) -> dict[str, int]:
    r = await http["inventory"].get(f"/stock/{sku}")
    assert r.status_code == 200, r.text
    body: dict[str, int] = r.json()
    return body


async def place(
    http: dict[str, httpx.AsyncClient],
    lines: list[tuple[str, int]],
    token: str = "tok_approve",
    customer: str | None = None,
    key: str | None = None,
) -> httpx.Response:
    """Place an order as `customer` (a new one each time by default: the cap on open orders is
    per customer)."""
    return await http["order"].post(
        "/orders",
        json={
            "lines": [{"sku": s, "quantity": q} for s, q in lines],
            "currency": "USD",
            "payment_token": token,
        },
        headers=customer_headers(customer or f"c-{uuid.uuid4().hex[:12]}")
        | ({"Idempotency-Key": key} if key else {}),
    )


async def final(
    http: dict[str, httpx.AsyncClient], order_id: str, timeout: float = 40
) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        body: dict[str, Any] = (await http["order"].get(f"/orders/{order_id}")).json()
        return body if body["status"] in TERMINAL else None

    result: dict[str, Any] = await wait_until(done, timeout=timeout, interval=0.2)
    return result


async def payment_of(http: dict[str, httpx.AsyncClient], order_id: str) -> dict[str, Any] | None:
    r = await http["payment"].get(f"/payments/{order_id}")
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def order_id_of(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "PENDING"
    assert response.headers["location"] == f"/orders/{body['order_id']}"
    return str(body["order_id"])


async def test_an_order_paid_with_an_approving_token_is_confirmed_and_stock_is_taken(
    http: dict[str, httpx.AsyncClient],
) -> None:
    sku = await product(http, stock=10, price=1999)
    order_id = await order_id_of(await place(http, [(sku, 3)]))
    order = await final(http, order_id)
    assert order["status"] == "CONFIRMED", order
    assert order["total"] == {"amount": 3 * 1999, "currency": "USD"}
    steps = [t["status"] for t in order["timeline"]]
    assert steps[0] == "PENDING"
    assert steps[-1] == "CONFIRMED"
    assert "STOCK_RESERVED" in steps
    assert "PAYMENT_AUTHORIZED" in steps
    stock = await stock_of(http, sku)
    assert (stock["on_hand"], stock["reserved"], stock["available"]) == (7, 0, 7)
    payment = await payment_of(http, order_id)
    assert payment is not None
    assert payment["status"] == "CAPTURED"


async def test_an_order_for_more_than_is_in_stock_is_rejected_and_names_the_sku(
    http: dict[str, httpx.AsyncClient],
) -> None:
    sku = await product(http, stock=2)
    order = await final(http, await order_id_of(await place(http, [(sku, 3)])))
    assert order["status"] == "REJECTED"
    assert sku in order["reason"]
    assert (await stock_of(http, sku))["available"] == 2
    assert await payment_of(http, order["order_id"]) is None


@pytest.mark.parametrize(
    ("token", "words"),
    [
        ("tok_decline", "declined"),
        ("tok_insufficient_funds", "insufficient"),
        ("tok_timeout", "timeout"),
    ],
)
async def test_a_failed_payment_cancels_the_order_and_releases_the_stock(
    http: dict[str, httpx.AsyncClient], token: str, words: str
) -> None:
    sku = await product(http, stock=5)
    order = await final(http, await order_id_of(await place(http, [(sku, 2)], token=token)))
    assert order["status"] == "CANCELLED"
    assert words in order["reason"]

    async def released() -> bool:
        s = await stock_of(http, sku)
        return s["available"] == 5 and s["reserved"] == 0 and s["on_hand"] == 5

    await wait_until(released, timeout=20)
    payment = await payment_of(http, order["order_id"])
    assert payment is None or payment["status"] in ("DECLINED", "VOIDED")


async def test_a_reservation_that_expires_before_payment_answers_cancels_the_order(
    http: dict[str, httpx.AsyncClient], platform: ServiceSupervisor
) -> None:
    sku = await product(http, stock=4)
    platform.send_signal("payment", signal.SIGSTOP)
    try:
        order_id = await order_id_of(await place(http, [(sku, 1)]))
        order = await final(http, order_id, timeout=40)
    finally:
        platform.send_signal("payment", signal.SIGCONT)
    assert order["status"] == "CANCELLED"
    assert "expired" in order["reason"]

    async def voided_late_authorization() -> bool:
        payment = await payment_of(http, order_id)
        return payment is not None and payment["status"] == "VOIDED"

    await wait_until(voided_late_authorization, timeout=30)
    assert (await stock_of(http, sku))["available"] == 4


async def test_cancel_before_confirmation_releases_stock_and_after_it_refunds_and_restocks(
    http: dict[str, httpx.AsyncClient], platform: ServiceSupervisor
) -> None:
    sku = await product(http, stock=6)
    platform.send_signal("payment", signal.SIGSTOP)
    try:
        early = await order_id_of(await place(http, [(sku, 2)]))

        async def reserved() -> bool:
            body = (await http["order"].get(f"/orders/{early}")).json()
            return bool(body["status"] == "STOCK_RESERVED")

        await wait_until(reserved, timeout=20)
        r = await http["order"].post(f"/orders/{early}/cancel", json={"reason": "changed my mind"})
        assert r.status_code == 202, r.text
    finally:
        platform.send_signal("payment", signal.SIGCONT)
    assert (await final(http, early))["status"] == "CANCELLED"

    late = await order_id_of(await place(http, [(sku, 3)]))
    assert (await final(http, late))["status"] == "CONFIRMED"
    r = await http["order"].post(f"/orders/{late}/cancel", json={})
    assert r.status_code == 202, r.text

    async def settled() -> bool:
        s = await stock_of(http, sku)
        early_pay = await payment_of(http, early)
        late_pay = await payment_of(http, late)
        return (
            s == s | {"on_hand": 6, "reserved": 0, "available": 6}
            and (early_pay is None or early_pay["status"] == "VOIDED")
            and late_pay is not None
            and late_pay["status"] == "REFUNDED"
        )

    await wait_until(settled, timeout=30)
    cancelled = (await http["order"].get(f"/orders/{late}")).json()
    assert cancelled["status"] == "CANCELLED"
    assert cancelled["refunded"] is True
    again = await http["order"].post(f"/orders/{late}/cancel", json={})
    assert again.status_code == 409


async def test_a_capture_that_lands_before_the_stock_commit_is_refunded_when_the_order_ends(
    http: dict[str, httpx.AsyncClient], platform: ServiceSupervisor
) -> None:
    """The commit and the capture go out together: with inventory stopped, the capture lands
    first; the customer's cancel must then refund it (a void would be refused), and the stock must
    come back whether the commit lands before the release or the reservation expires first."""
    sku = await product(http, stock=5)
    stopped: list[str] = []

    def stop(service: str) -> None:
        platform.send_signal(service, signal.SIGSTOP)
        stopped.append(service)

    def resume(service: str) -> None:
        platform.send_signal(service, signal.SIGCONT)
        stopped.remove(service)

    async def notes(order_id: str) -> list[str]:
        body = (await http["order"].get(f"/orders/{order_id}")).json()
        return [t["note"] for t in body["timeline"]]

    try:
        stop("payment")  # the order waits at STOCK_RESERVED ...
        order_id = await order_id_of(await place(http, [(sku, 2)]))

        async def reserved() -> bool:
            body = (await http["order"].get(f"/orders/{order_id}")).json()
            return bool(body["status"] == "STOCK_RESERVED")

        await wait_until(reserved, timeout=20)
        stop("inventory")  # ... until inventory can no longer commit; then payment answers
        resume("payment")

        async def captured_first() -> bool:
            return "payment captured; waiting for the stock commit" in await notes(order_id)

        await wait_until(captured_first, timeout=20)
        r = await http["order"].post(f"/orders/{order_id}/cancel", json={"reason": "changed"})
        assert r.status_code == 202, r.text
        cancelled = (await http["order"].get(f"/orders/{order_id}")).json()
        assert cancelled["status"] == "CANCELLED"
        assert cancelled["refunded"] is True
    finally:
        for service in list(stopped):
            resume(service)

    async def settled() -> bool:
        s = await stock_of(http, sku)
        pay = await payment_of(http, order_id)
        return (
            s == s | {"on_hand": 5, "reserved": 0, "available": 5}
            and pay is not None
            and pay["status"] == "REFUNDED"
        )

    await wait_until(settled, timeout=40)
    assert (await http["order"].get(f"/orders/{order_id}")).json()["status"] == "CANCELLED"


async def test_a_hundred_concurrent_orders_for_ten_units_confirm_exactly_ten(
    http: dict[str, httpx.AsyncClient],
) -> None:
    sku = await product(http, stock=10)
    responses = await asyncio.gather(
        *(place(http, [(sku, 1)], customer=f"c{i}") for i in range(100))
    )
    ids = [await order_id_of(r) for r in responses]
    orders = await asyncio.gather(*(final(http, i, timeout=90) for i in ids))
    statuses = [o["status"] for o in orders]
    assert statuses.count("CONFIRMED") == 10
    assert statuses.count("REJECTED") == 90
    stock = await stock_of(http, sku)
    assert (stock["on_hand"], stock["reserved"], stock["available"]) == (0, 0, 0)


async def test_concurrent_multi_line_orders_in_opposite_sku_order_neither_deadlock_nor_oversell(
    http: dict[str, httpx.AsyncClient],
) -> None:
    a = await product(http, stock=15)
    b = await product(http, stock=15)
    requests = [
        place(http, [(a, 1), (b, 1)] if i % 2 else [(b, 1), (a, 1)], customer=f"m{i}")
        for i in range(40)
    ]
    ids = [await order_id_of(r) for r in await asyncio.gather(*requests)]
    orders = await asyncio.gather(*(final(http, i, timeout=90) for i in ids))
    confirmed = [o for o in orders if o["status"] == "CONFIRMED"]
    assert len(confirmed) == 15
    assert all(o["status"] in ("CONFIRMED", "REJECTED") for o in orders)
    for sku in (a, b):
        stock = await stock_of(http, sku)
        assert (stock["on_hand"], stock["reserved"], stock["available"]) == (0, 0, 0)


async def test_the_same_order_posted_twice_with_one_idempotency_key_makes_one_order(
    http: dict[str, httpx.AsyncClient],
) -> None:
    sku = await product(http, stock=5)
    key = f"key-{uuid.uuid4()}"
    first = await place(http, [(sku, 1)], customer="idem", key=key)
    second = await place(http, [(sku, 1)], customer="idem", key=key)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert second.headers.get("idempotent-replayed") == "true"
    different = await place(http, [(sku, 2)], customer="idem", key=key)
    assert different.status_code == 422
    listed = (await http["order"].get("/orders", headers=customer_headers("idem"))).json()
    assert [o["order_id"] for o in listed["items"]].count(first.json()["order_id"]) == 1
    assert listed["total"] == 1
    await final(http, first.json()["order_id"])
    concurrent_key = f"key-{uuid.uuid4()}"
    burst = await asyncio.gather(
        *(place(http, [(sku, 1)], customer="idem2", key=concurrent_key) for _ in range(8))
    )
    codes = sorted(r.status_code for r in burst)
    assert set(codes) <= {202, 409}
    assert len({r.json()["order_id"] for r in burst if r.status_code == 202}) == 1


async def test_bad_orders_get_clear_client_errors(http: dict[str, httpx.AsyncClient]) -> None:
    sku = await product(http, stock=1)
    base = {"lines": [{"sku": sku, "quantity": 1}], "currency": "USD"}
    cases = [
        (base | {"payment_token": "4242 4242 4242 4242"}, "card numbers are refused"),
        (base | {"payment_token": "tok_approve", "extra": 1}, "extra"),
        (base | {"payment_token": "tok_approve", "customer_id": "someone-else"}, "customer_id"),
        (
            base | {"payment_token": "tok_approve", "lines": [{"sku": sku, "quantity": 0}]},
            "quantity",
        ),
        (
            base | {"payment_token": "tok_approve", "lines": [{"sku": sku, "quantity": 1001}]},
            "quantity",
        ),
        (
            base | {"payment_token": "tok_approve", "lines": [{"sku": "NOPE-1", "quantity": 1}]},
            "unknown SKU NOPE-1",
        ),
        (base | {"payment_token": "tok_approve", "currency": "EUR"}, "priced in USD"),
        (
            base | {"payment_token": "tok_approve", "lines": [{"sku": sku, "quantity": 1}] * 101},
            "lines",
        ),
    ]
    for body, words in cases:
        r = await http["order"].post("/orders", json=body, headers=customer_headers("x"))
        assert r.status_code == 422, (body, r.text)
        assert words in r.text, (words, r.text)
        assert "4242 4242" not in r.text
    huge = await http["order"].post(
        "/orders",
        content=b'{"currency": "' + b"x" * 200_000 + b'"}',
        headers={"content-type": "application/json"} | customer_headers("x"),
    )
    assert huge.status_code == 413


async def test_order_status_changes_stream_as_server_sent_events_and_resume(
    http: dict[str, httpx.AsyncClient],
) -> None:
    sku = await product(http, stock=3)
    order_id = await order_id_of(await place(http, [(sku, 1)]))
    await final(http, order_id)
    seen: list[tuple[str, str]] = []
    async with http["order"].stream("GET", f"/orders/{order_id}/events") as stream:
        event_id = ""
        async for line in stream.aiter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                seen.append((event_id, line[6:]))
    assert '"PENDING"' in seen[0][1]
    assert '"CONFIRMED"' in seen[-1][1]
    async with http["order"].stream(
        "GET", f"/orders/{order_id}/events", headers={"Last-Event-ID": seen[0][0]}
    ) as stream:
        resumed = [line async for line in stream.aiter_lines() if line.startswith("data: ")]
    assert len(resumed) == len(seen) - 1


async def test_services_killed_mid_saga_still_bring_every_order_to_a_terminal_state(
    http: dict[str, httpx.AsyncClient], platform: ServiceSupervisor
) -> None:
    skus = [await product(http, stock=30) for _ in range(3)]
    tokens = ["tok_approve"] * 6 + ["tok_decline", "tok_insufficient_funds"]
    ids: list[str] = []

    async def burst(n: int, offset: int) -> None:
        responses = await asyncio.gather(
            *(
                place(http, [(skus[(offset + i) % 3], 1)], token=tokens[(offset + i) % len(tokens)])
                for i in range(n)
            )
        )
        ids.extend([await order_id_of(r) for r in responses])

    for round_, victim in enumerate(["inventory", "payment", "order"]):
        await burst(15, round_ * 15)
        platform.kill(victim)
        platform.start(victim)
        platform.wait_ready(victim, timeout=60)
    await burst(10, 45)
    orders = await asyncio.gather(*(final(http, i, timeout=120) for i in ids))
    assert all(o["status"] in TERMINAL for o in orders)
    for order in orders:
        payment = await payment_of(http, order["order_id"])
        if payment is not None and payment["status"] == "CAPTURED":
            assert order["status"] == "CONFIRMED", order
        if order["status"] == "CONFIRMED":
            assert payment is not None
            assert payment["status"] == "CAPTURED"
    confirmed = sum(1 for o in orders if o["status"] == "CONFIRMED")

    async def stock_settled() -> bool:
        levels = [await stock_of(http, s) for s in skus]
        sold = sum(30 - s["on_hand"] for s in levels)
        return all(s["reserved"] == 0 for s in levels) and sold == confirmed

    await wait_until(stock_settled, timeout=60)


# --- who may do what (issue 6) -------------------------------------------------------------------


async def test_a_customer_sees_and_cancels_only_their_own_orders(
    http: dict[str, httpx.AsyncClient],
) -> None:
    sku = await product(http, stock=5)
    alice, mallory = customer_headers("sec-alice"), customer_headers("sec-mallory")
    order_id = await order_id_of(await place(http, [(sku, 1)], customer="sec-alice"))
    order = http["order"]

    assert (await order.get(f"/orders/{order_id}", headers=alice)).status_code == 200
    for method, path in (
        ("GET", f"/orders/{order_id}"),
        ("GET", f"/orders/{order_id}/events"),
        ("POST", f"/orders/{order_id}/cancel"),
    ):
        r = await order.request(method, path, headers=mallory)
        assert r.status_code == 404, (method, path, r.text)
    mine = (await order.get("/orders", headers=mallory)).json()
    assert mine["total"] == 0
    spying = await order.get("/orders", params={"customer_id": "sec-alice"}, headers=mallory)
    assert spying.status_code == 403
    listed = (await order.get("/orders", params={"customer_id": "sec-alice"})).json()  # admin
    assert [o["order_id"] for o in listed["items"]] == [order_id]
    assert (await final(http, order_id))["customer_id"] == "sec-alice"


async def test_routes_refuse_missing_bad_and_foreign_tokens(
    http: dict[str, httpx.AsyncClient], platform: ServiceSupervisor
) -> None:
    body = {"lines": [{"sku": "X-1", "quantity": 1}], "currency": "USD", "payment_token": "tok_x"}
    async with httpx.AsyncClient(base_url=platform.url("order"), timeout=10) as anonymous:
        missing = await anonymous.post("/orders", json=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        forged = mint_token("not-the-platform-key-0123456789abcdef", "eve", ["admin"])
        r = await anonymous.get("/orders", headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 401
        assert forged not in r.text
        assert (await anonymous.get("/health/ready")).status_code == 200
    customer = customer_headers("sec-carol")
    for service, method, path, json in (
        ("catalog", "PUT", "/admin/products/SEC-1", {"name": "x"}),
        ("catalog", "POST", "/admin/products/SEC-1/deactivate", None),
        ("inventory", "POST", "/admin/stock/SEC-1/restock", {"quantity": 5}),
        ("payment", "GET", f"/payments/{uuid.uuid4()}", None),
    ):
        as_customer = await http[service].request(method, path, json=json, headers=customer)
        assert as_customer.status_code == 403, (service, path, as_customer.text)
        async with httpx.AsyncClient(base_url=platform.url(service), timeout=10) as anonymous:
            assert (await anonymous.request(method, path, json=json)).status_code == 401


async def test_a_customer_cannot_hold_more_than_the_cap_of_orders_in_progress(
    http: dict[str, httpx.AsyncClient], platform: ServiceSupervisor
) -> None:
    sku = await product(http, stock=50)
    customer = "sec-hoarder"
    first = await order_id_of(await place(http, [(sku, 1)], customer=customer))
    await final(http, first)
    conn = await asyncpg.connect(platform.database_url("order"))
    try:
        # given ten orders of this customer still holding stock (no deadline: the sweep skips them)
        await conn.execute(
            "INSERT INTO orders (order_id, customer_id, status, lines, total_amount, currency,"
            " payment_token, deadline) SELECT gen_random_uuid(), customer_id, 'STOCK_RESERVED',"
            " lines, total_amount, currency, payment_token, NULL FROM orders, generate_series(1, 10)"
            " WHERE order_id = $1",
            uuid.UUID(first),
        )
        refused = await place(http, [(sku, 1)], customer=customer)
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1"
        assert (await place(http, [(sku, 1)], customer="sec-someone-else")).status_code == 202
        await conn.execute(
            "UPDATE orders SET status = 'CANCELLED' WHERE customer_id = $1"
            " AND status = 'STOCK_RESERVED'",
            customer,
        )
        assert (await place(http, [(sku, 1)], customer=customer)).status_code == 202
    finally:
        await conn.close()
