"""Wiring only: which handlers consume which topics, the gateway they use, and the HTTP routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI

from events.contracts import REGISTRY
from events.kit.http import NO_TELEMETRY
from events.kit.inbox import Handler, HandlerContext, Handlers
from events.kit.runtime import ConsumerSpec, ServiceRuntime
from events.messages import Message
from events.topics import PAYMENT_COMMANDS
from payment_service import api
from payment_service.gateway import PaymentGateway, RetryPolicy, SimulatedGateway
from payment_service.handlers import HANDLERS, Deps, PaymentHandler, PaymentUnit
from payment_service.settings import Settings

MIGRATIONS = Path(__file__).with_name("migrations")


def simulated_gateway(settings: Settings) -> SimulatedGateway:
    return SimulatedGateway(
        latency_ms=settings.gateway_latency_ms,
        failure_rate=settings.gateway_failure_rate,
        timeout_ms=settings.gateway_timeout_ms,
        seed=settings.gateway_seed,
        state_path=settings.gateway_state_path,
    )


def bind(deps: Deps) -> Handlers:
    """The kit's two-argument handlers, each closed over the gateway."""

    def bound(handler: PaymentHandler) -> Handler:
        async def handle(msg: Any, ctx: HandlerContext) -> list[Message]:
            return await handler(msg, ctx, deps)

        return handle

    return {message_type: bound(handler) for message_type, handler in HANDLERS.items()}


def build(settings: Settings, gateway: PaymentGateway | None = None) -> ServiceRuntime:
    deps = Deps(
        gateway=gateway or simulated_gateway(settings),
        retry=RetryPolicy(settings.gateway_max_attempts, settings.gateway_retry_backoff_ms),
        settle_for_s=settings.gateway_settle_for_s,
    )
    app = FastAPI(title="payment_service", telemetry=NO_TELEMETRY)
    runtime = ServiceRuntime(
        settings,
        registry=REGISTRY,
        migrations=MIGRATIONS,
        consumers=[
            ConsumerSpec(
                name="payment",
                topics=[PAYMENT_COMMANDS],
                handlers=bind(deps),
                unit=PaymentUnit.for_commands,
            )
        ],
        app=app,
    )
    app.state.runtime = runtime
    app.include_router(api.router)
    return runtime
