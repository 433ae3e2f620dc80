"""The bench's monolith baseline on the session's real PostgreSQL: one transaction per order, and
the gateway simulator's books in SQLite as the platform's payment service keeps them."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import httpx
import pytest

from bench.monolith import build, prepare
from events.kit import db
from events.kit.auth import TokenPolicy
from payment_service.gateway import SimulatedGateway
from tests.stack import Stack

pytestmark = pytest.mark.integration

KEY = "monolith-test-signing-key-of-enough-bytes"


async def test_an_order_reserves_its_stock_and_authorizes_in_the_gateways_sqlite_books(
    stack: Stack, tmp_path: Path
) -> None:
    url = stack.database_url(f"monolith_{uuid.uuid4().hex[:8]}")
    await db.ensure_database(url)
    await prepare(url, {"SKU-A": (250, 5), "SKU-B": (100, 1)})
    policy = TokenPolicy(KEY, issuer="shop", audience="shop-api")
    books = tmp_path / "gateway.sqlite3"
    gateway = SimulatedGateway(state_path=books)
    pool = await db.create_pool(url, min_size=1, max_size=2)
    try:
        app = build(pool, gateway, policy)
        headers = {"authorization": f"Bearer {policy.mint('cust-1')}"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://monolith"
        ) as client:

            async def order(*lines: tuple[str, int]) -> dict[str, object]:
                body = {
                    "lines": [{"sku": s, "quantity": q} for s, q in lines],
                    "currency": "USD",
                    "payment_token": "tok_approve",
                }
                response = await client.post("/orders", json=body, headers=headers)
                assert response.status_code == 201, response.text
                answer: dict[str, object] = response.json()
                return answer

            confirmed = await order(("SKU-A", 2), ("SKU-B", 1))
            sold_out = await order(("SKU-B", 1))
        assert confirmed["status"] == "CONFIRMED"
        assert sold_out == {"order_id": None, "status": "REJECTED"}
        row = await pool.fetchrow(
            "SELECT customer_id, total, authorization_ref FROM orders WHERE order_id = $1",
            uuid.UUID(str(confirmed["order_id"])),
        )
        assert row is not None
        assert (row["customer_id"], row["total"]) == ("cust-1", 600)
        rows = await pool.fetch("SELECT sku, available FROM stock ORDER BY sku")
        stock = {r["sku"]: r["available"] for r in rows}
        assert stock == {"SKU-A": 3, "SKU-B": 0}
    finally:
        await pool.close()
        gateway.close()
    with sqlite3.connect(books) as books_db:
        holds = books_db.execute("SELECT reference, amount, state FROM holds").fetchall()
    assert holds == [(row["authorization_ref"], 600, "authorized")]
