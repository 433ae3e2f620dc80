"""The baseline a team might build without Kafka: one FastAPI process, one transaction per order.

Same work per order as the platform: price from the catalog table, reserve every line under row
locks in sorted SKU order, authorize with the same gateway simulator, save the order CONFIRMED.
The simulator keeps its books where the platform's payment service keeps them on the local stack,
in a SQLite file (--gateway-state), unless none is given (then in memory).

Run: python -m bench.monolith --port 8099 --database-url postgresql://... [--gateway-state F]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvicorn
import uvloop
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from events.ids import new_id
from events.kit import db, gcsettle
from events.kit.auth import AuthError, TokenPolicy
from events.kit.http import NO_TELEMETRY
from events.kit.settings import ServiceSettings
from events.messages import Money
from payment_service.gateway import SimulatedGateway

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    sku TEXT PRIMARY KEY, price BIGINT NOT NULL, currency TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT PRIMARY KEY, available BIGINT NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS orders (
    order_id UUID PRIMARY KEY, customer_id TEXT NOT NULL, status TEXT NOT NULL,
    lines JSONB NOT NULL, total BIGINT NOT NULL, currency TEXT NOT NULL, authorization_ref TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""
LOAD_PRODUCT = """
INSERT INTO products (sku, price, currency) VALUES ($1, $2, $3)
ON CONFLICT (sku) DO UPDATE SET price = EXCLUDED.price
"""
LOAD_STOCK = """
INSERT INTO stock (sku, available) VALUES ($1, $2)
ON CONFLICT (sku) DO UPDATE SET available = EXCLUDED.available
"""
PRICES = "SELECT sku, price, currency FROM products WHERE sku = ANY($1::text[])"
RESERVE = "UPDATE stock SET available = available - $2 WHERE sku = $1 AND available >= $2"
INSERT_ORDER = """
INSERT INTO orders (order_id, customer_id, status, lines, total, currency, authorization_ref)
VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7)
"""


def build(pool: asyncpg.Pool, gateway: SimulatedGateway, tokens: TokenPolicy) -> FastAPI:
    app = FastAPI(title="monolith baseline", telemetry=NO_TELEMETRY)

    @app.post("/orders")
    async def place(request: Request) -> JSONResponse:
        # the same token check as the platform's ingress: the customer comes from the token
        _, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            customer = tokens.verify(token).subject
        except AuthError as exc:
            return JSONResponse({"detail": str(exc)}, 401)
        body: dict[str, Any] = orjson.loads(await request.body())
        lines = sorted((ln["sku"], int(ln["quantity"])) for ln in body["lines"])
        order_id = new_id()  # as the platform's ingress does
        async with pool.acquire() as conn, conn.transaction():
            prices = {r["sku"]: r for r in await conn.fetch(PRICES, [s for s, _ in lines])}
            if len(prices) != len({s for s, _ in lines}):
                return JSONResponse({"detail": "unknown SKU"}, 422)
            total = sum(prices[s]["price"] * q for s, q in lines)
            for sku, qty in lines:
                if await conn.execute(RESERVE, sku, qty) != "UPDATE 1":
                    raise _Rejected
            auth = await gateway.authorize(
                body["payment_token"], Money(amount=total, currency=body["currency"]), str(order_id)
            )
            status = "CONFIRMED" if auth.approved else "CANCELLED"
            if not auth.approved:
                raise _Rejected
            await conn.execute(
                INSERT_ORDER,
                order_id,
                customer,
                status,
                orjson.dumps([{"sku": s, "quantity": q} for s, q in lines]).decode(),
                total,
                body["currency"],
                auth.reference,
            )
        return JSONResponse({"order_id": str(order_id), "status": status}, 201)

    @app.exception_handler(_Rejected)
    async def rejected(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"order_id": None, "status": "REJECTED"}, 201)

    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


class _Rejected(Exception):
    pass


async def prepare(url: str, stock: dict[str, tuple[int, int]]) -> None:
    """Create the schema and load prices and stock (sku -> (price, units))."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SCHEMA)
        await conn.executemany(LOAD_PRODUCT, [(s, p, "USD") for s, (p, _) in stock.items()])
        await conn.executemany(LOAD_STOCK, [(s, u) for s, (_, u) in stock.items()])
    finally:
        await conn.close()


async def serve(port: int, url: str, pool_size: int, gateway_state: Path | None = None) -> None:
    # the services' pool (no reset query on release), so both sides pay the same per transaction
    pool = await db.create_pool(url, min_size=pool_size, max_size=pool_size)
    settings = ServiceSettings()  # the signing key the services use: SHOP_AUTH_SIGNING_KEY or dev
    key = os.environ.get("SHOP_AUTH_SIGNING_KEY", settings.auth_signing_key.get_secret_value())
    policy = TokenPolicy(key, settings.auth_issuer, settings.auth_audience)
    app = build(pool, SimulatedGateway(state_path=gateway_state), policy)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    gcsettle.settle()  # as the platform's services do once started
    await uvicorn.Server(config).serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--pool-size", type=int, default=8)
    parser.add_argument(
        "--gateway-state",
        type=Path,
        help="the gateway simulator's books in this SQLite file (default: in memory)",
    )
    args = parser.parse_args()
    # uvloop, as `uvicorn app:app` picks when it is installed and as the platform's services run
    uvloop.run(serve(args.port, args.database_url, args.pool_size, args.gateway_state))


if __name__ == "__main__":
    main()
