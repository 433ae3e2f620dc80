"""Wiring only: the catalog view and saga consumers, the deadline timer and the HTTP routes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from events.contracts import REGISTRY
from events.kit import outbox
from events.kit.runtime import ConsumerSpec, ServiceRuntime, periodically
from events.topics import CATALOG_PRODUCTS, INVENTORY_EVENTS, PAYMENT_EVENTS
from order_service import api, handlers
from order_service.domain import Deadlines
from order_service.settings import Settings

MIGRATIONS = Path(__file__).with_name("migrations")


def build(settings: Settings) -> ServiceRuntime:
    deadlines = Deadlines(
        stock=timedelta(seconds=settings.stock_deadline_s),
        payment=timedelta(seconds=settings.payment_deadline_s),
        confirm=timedelta(seconds=settings.confirm_deadline_s),
    )
    app = FastAPI(
        title="Orders",
        description="Place orders and follow them to CONFIRMED, REJECTED or CANCELLED.",
    )
    api.install(app, deadlines, settings.max_body_bytes, settings.max_open_orders)

    async def saga_deadlines(runtime: ServiceRuntime) -> None:
        async def sweep() -> None:
            async with runtime.pool.acquire() as conn, conn.transaction():
                messages = await handlers.expire_overdue(conn, handlers.utcnow())
                await outbox.emit(conn, messages, service=settings.service_name)

        await periodically(runtime, settings.deadline_scan_ms / 1000, sweep, "saga-deadlines")

    runtime = ServiceRuntime(
        settings,
        registry=REGISTRY,
        migrations=MIGRATIONS,
        app=app,
        consumers=[
            ConsumerSpec("order-catalog-view", [CATALOG_PRODUCTS], handlers.CATALOG_HANDLERS),
            ConsumerSpec(
                "order-saga", [INVENTORY_EVENTS, PAYMENT_EVENTS], handlers.saga_handlers(deadlines)
            ),
        ],
        background=[saga_deadlines],
    )
    app.state.runtime = runtime
    return runtime
