"""Wiring only: the faust stream, the HTTP routes, and the runtime that serves them."""

from __future__ import annotations

from pathlib import Path

from analytics_service.api import build_app
from analytics_service.settings import Settings
from analytics_service.stream import AnalyticsStream
from events.contracts import REGISTRY
from events.kit.runtime import ServiceRuntime

MIGRATIONS = Path(__file__).with_name("migrations")


def build(settings: Settings) -> ServiceRuntime:
    stream = AnalyticsStream(settings)

    async def analytics_stream(runtime: ServiceRuntime) -> None:
        await stream.run(runtime.stopping)

    return ServiceRuntime(
        settings,
        registry=REGISTRY,
        migrations=MIGRATIONS,
        app=build_app(stream),
        background=[analytics_stream],
    )
