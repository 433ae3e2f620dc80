"""Wiring only: the HTTP routes on the runtime's app; catalog consumes no topics."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from catalog_service import api
from catalog_service.settings import Settings
from events.contracts import REGISTRY
from events.kit.http import NO_TELEMETRY
from events.kit.runtime import ServiceRuntime

MIGRATIONS = Path(__file__).with_name("migrations")


def build(settings: Settings) -> ServiceRuntime:
    app = FastAPI(
        telemetry=NO_TELEMETRY,
        title="Catalog",
        description="Products and prices. Every change is published to the compacted "
        "catalog.products topic, keyed by SKU.",
    )
    app.include_router(api.router)
    runtime = ServiceRuntime(settings, registry=REGISTRY, migrations=MIGRATIONS, app=app)
    app.state.runtime = runtime
    return runtime
