"""The whole platform as separate processes on the test stack, and helpers to drive it over HTTP."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deploy.local.services import SERVICES, ServiceSupervisor
from events.kit.auth import ADMIN, CUSTOMER, mint_token
from tests.ports import free_port as free_port

TERMINAL = {"CONFIRMED", "REJECTED", "CANCELLED"}
# The platform under test signs and checks tokens with this key (never the development default).
TEST_SIGNING_KEY = "test-signing-key-0d5c6f2e9b8a4f71a3c2d1e0f9b8a7c6"


def customer_headers(customer: str, key: str = TEST_SIGNING_KEY) -> dict[str, str]:
    """Authorization for `customer`: orders placed with it belong to that customer."""
    return {"Authorization": f"Bearer {mint_token(key, customer, [CUSTOMER])}"}


def admin_headers(subject: str = "test-admin", key: str = TEST_SIGNING_KEY) -> dict[str, str]:
    """Authorization with the admin role. Services run in the test process with default settings
    check tokens with the development key: pass `key=DEV_SIGNING_KEY` for those."""
    return {"Authorization": f"Bearer {mint_token(key, subject, [ADMIN])}"}


def e2e_env(prefix: str) -> dict[str, str]:
    env = {
        "ORDER_STOCK_DEADLINE_S": "30",
        "ORDER_PAYMENT_DEADLINE_S": "30",
        "ORDER_CONFIRM_DEADLINE_S": "30",
        "INVENTORY_RESERVATION_TTL_S": "12",
        "INVENTORY_EXPIRY_SCAN_MS": "200",
        "PAYMENT_GATEWAY_TIMEOUT_MS": "500",
    }
    for svc in SERVICES:
        env[f"{svc.prefix}CONSUMER_GROUP_PREFIX"] = prefix
        env[f"{svc.prefix}AUTH_SIGNING_KEY"] = TEST_SIGNING_KEY
        # the tests poll many orders at once with one admin token; rate limits have their own tests
        env[f"{svc.prefix}RATE_LIMIT"] = "100000/second"
        env[f"{svc.prefix}LOG_LEVEL"] = "INFO"
    return env


@contextmanager
def running_platform(stack: Any, data_dir: Path) -> Iterator[ServiceSupervisor]:
    run = uuid.uuid4().hex[:8]
    supervisor = ServiceSupervisor(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=lambda name: stack.database_url(f"e2e_{run}_{name}"),
        data_dir=data_dir,
        ports={svc.package: free_port() for svc in SERVICES},
        env=e2e_env(f"e2e-{run}-"),
    )
    try:
        supervisor.start_all(timeout=120)
        yield supervisor
    finally:
        supervisor.stop_all()


async def wait_until(condition: Any, *, timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll an async condition until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await condition()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")
