"""Wiring only: the catalog view and saga consumers, the deadline timer, the HTTP routes and the
intake that places their orders in shared transactions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from events.contracts import REGISTRY
from events.kit import outbox
from events.kit.http import NO_TELEMETRY
from events.kit.runtime import ConsumerSpec, ServiceRuntime, periodically
from events.topics import CATALOG_PRODUCTS, INVENTORY_EVENTS, PAYMENT_EVENTS
from order_service import api, handlers, intake
from order_service.domain import Deadlines
from order_service.settings import Settings

MIGRATIONS = Path(__file__).with_name("migrations")
PURGE_INTERVAL_S = 600.0
PURGE_BATCH = handlers.PURGE_BATCH


def build(settings: Settings) -> ServiceRuntime:
    deadlines = Deadlines(
        stock=timedelta(seconds=settings.stock_deadline_s),
        payment=timedelta(seconds=settings.payment_deadline_s),
        confirm=timedelta(seconds=settings.confirm_deadline_s),
    )
    app = FastAPI(
        telemetry=NO_TELEMETRY,
        title="Orders",
        description="Place orders and follow them to CONFIRMED, REJECTED or CANCELLED.",
    )
    placements = intake.Intake(
        lambda: runtime.pool,
        deadlines=deadlines,
        max_open=settings.max_open_orders,
        service=settings.service_name,
        batch_max=settings.intake_batch_max,
        concurrency=settings.intake_concurrency,
        wakeup=lambda: runtime.wakeup,
    )
    api.install(app, placements, settings.max_body_bytes, fast_path=settings.place_fast_path)

    async def saga_deadlines(runtime: ServiceRuntime) -> None:
        async def sweep() -> None:
            async with runtime.pool.acquire() as conn, conn.transaction():
                messages = await handlers.expire_overdue(conn, handlers.utcnow())
                await outbox.emit(conn, messages, service=settings.service_name)

        await periodically(runtime, settings.deadline_scan_ms / 1000, sweep, "saga-deadlines")

    async def idempotency_purge(runtime: ServiceRuntime) -> None:
        """Forget idempotency keys older than their TTL (the table would grow without bound)."""
        ttl = timedelta(hours=settings.idempotency_ttl_h)

        async def purge() -> None:
            # in bounded batches, so a long backlog never holds one long transaction
            while True:
                async with runtime.pool.acquire() as conn:
                    purged = await handlers.purge_idempotency_keys(conn, handlers.utcnow() - ttl)
                if purged < PURGE_BATCH:
                    return

        await periodically(runtime, PURGE_INTERVAL_S, purge, "idempotency-purge")

    runtime = ServiceRuntime(
        settings,
        registry=REGISTRY,
        migrations=MIGRATIONS,
        app=app,
        consumers=[
            ConsumerSpec("order-catalog-view", [CATALOG_PRODUCTS], handlers.CATALOG_HANDLERS),
            ConsumerSpec(
                "order-saga",
                [INVENTORY_EVENTS, PAYMENT_EVENTS],
                handlers.saga_handlers(deadlines),
                unit=handlers.SagaUnit.for_replies,
            ),
        ],
        background=[saga_deadlines, idempotency_purge],
    )
    app.state.runtime = runtime
    return runtime
