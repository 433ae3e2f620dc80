"""The services the fuzz tests drive over HTTP and Kafka, started once for the package: catalog,
inventory, payment and order as their own processes on the session's broker and database (the
analytics worker is left out: nothing here reads it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from deploy.local.services import SERVICES, ServiceSupervisor
from tests.integration import platform_support
from tests.integration.platform_support import e2e_env, free_port

FUZZED = tuple(s for s in SERVICES if s.database != "analytics")


@dataclass(frozen=True)
class FuzzPlatform:
    supervisor: ServiceSupervisor
    run: str
    group_prefix: str
    database_urls: dict[str, str]

    def url(self, service: str) -> str:
        return self.supervisor.url(service)


@pytest.fixture(scope="package")
def fuzz_platform(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzPlatform]:
    run = uuid.uuid4().hex[:8]
    prefix = f"fuzz-{run}-"
    urls = {s.database: stack.database_url(f"fuzz_{run}_{s.database}") for s in FUZZED}
    supervisor = ServiceSupervisor(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=lambda name: urls[name],
        data_dir=tmp_path_factory.mktemp("fuzz-platform"),
        ports={s.package: free_port() for s in FUZZED},
        env=e2e_env(prefix),
        services=FUZZED,
    )
    try:
        supervisor.start_all(timeout=120)
        yield FuzzPlatform(supervisor, run, prefix, urls)
    finally:
        supervisor.stop_all()


def auth_headers(role: str, customer: str = "fuzz-customer") -> dict[str, str]:
    """A bearer token for a customer (order routes) or an admin (admin routes), once the
    platform has authentication; until then, no header."""
    helper = getattr(platform_support, f"{role}_headers", None)
    if helper is None:
        return {}
    headers: dict[str, str] = helper(customer) if role == "customer" else helper()
    return headers


async def place_order(
    client: httpx.AsyncClient,
    lines: list[tuple[str, int]],
    *,
    customer: str = "fuzz-customer",
    token: str = "tok_approve",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST /orders as a customer: the one place that knows how an order is posted."""
    body: dict[str, Any] = {
        "lines": [{"sku": s, "quantity": q} for s, q in lines],
        "currency": "USD",
        "payment_token": token,
    }
    auth = auth_headers("customer", customer)
    if not auth:
        body["customer_id"] = customer
    return await client.post("/orders", json=body, headers={**auth, **(headers or {})})
