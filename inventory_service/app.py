"""Wiring only: which handlers consume which topics, the HTTP routes, and the expiry timer."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from events.contracts import REGISTRY
from events.kit.runtime import ConsumerSpec, ServiceRuntime, periodically
from events.topics import INVENTORY_COMMANDS
from inventory_service import api, handlers
from inventory_service.domain import Policy
from inventory_service.settings import Settings

MIGRATIONS = Path(__file__).with_name("migrations")


def policy_of(settings: Settings) -> Policy:
    return Policy(
        reservation_ttl=timedelta(seconds=settings.reservation_ttl_s),
        low_stock_threshold=settings.low_stock_threshold,
    )


def build(settings: Settings) -> ServiceRuntime:
    policy = policy_of(settings)
    service = settings.service_name

    async def reservation_expiry(runtime: ServiceRuntime) -> None:
        async def scan() -> int:
            return await handlers.expire_reservations(runtime.pool, service=service)

        await periodically(runtime, settings.expiry_scan_ms / 1000, scan, "reservation-expiry")

    runtime = ServiceRuntime(
        settings,
        registry=REGISTRY,
        migrations=MIGRATIONS,
        consumers=[
            ConsumerSpec(
                name="inventory",
                topics=[INVENTORY_COMMANDS],
                handlers=handlers.bind(policy),
                unit=handlers.StockUnit.for_commands,
            )
        ],
        background=[reservation_expiry],
    )
    runtime.app.include_router(api.router(lambda: runtime.pool, policy, service=service))
    return runtime
