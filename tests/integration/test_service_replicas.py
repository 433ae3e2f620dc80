"""Several replicas of a service in one consumer group, one killed mid-load (SIGKILL).

The platform runs as separate processes with inventory_service three times over; the partitions
of inventory.commands spread over the three, and when one dies the others take its partitions:
every order still ends, and the stock adds up (nothing lost, nothing applied twice).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.local.services import SERVICES, ServiceSupervisor
from events.topics import INVENTORY_COMMANDS, spec
from tests.integration.platform_support import (
    TERMINAL,
    customer_headers,
    e2e_env,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.integration

INVENTORY_REPLICAS = 3
PARTITIONS = spec(INVENTORY_COMMANDS).partitions
STOCK = 25


@pytest.fixture(scope="module")
def platform(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceSupervisor]:
    run = uuid.uuid4().hex[:8]
    replicas = {"inventory_service": INVENTORY_REPLICAS}
    supervisor = ServiceSupervisor(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=lambda name: stack.database_url(f"rep_{run}_{name}"),
        data_dir=tmp_path_factory.mktemp("replicas"),
        ports={
            s.package: [free_port() for _ in range(replicas.get(s.package, 1))] for s in SERVICES
        },
        env=e2e_env(f"rep-{run}-"),
        replicas=replicas,
    )
    try:
        supervisor.start_all(timeout=180)
        yield supervisor
    finally:
        supervisor.stop_all()


def assigned_partitions(log: Path) -> int | None:
    """The size of the inventory consumer's latest assignment, from the replica's JSON log."""
    last = None
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            if '"partitions assigned"' not in line:
                continue
            record = json.loads(line)
            if str(record.get("consumer", "")).endswith("inventory"):
                last = int(record["partitions"])
    return last


async def spread_over(platform: ServiceSupervisor, replicas: list[int]) -> dict[int, int | None]:
    """Wait until the given replicas share all partitions, each holding some."""
    inventory = next(s for s in SERVICES if s.package == "inventory_service")

    async def balanced() -> dict[int, int | None] | None:
        counts = {k: assigned_partitions(platform.log_file(inventory, k)) for k in replicas}
        ok = all(counts.values()) and sum(c or 0 for c in counts.values()) == PARTITIONS
        return counts if ok else None

    result: dict[int, int | None] = await wait_until(balanced, timeout=60, interval=0.5)
    return result


async def product(http: dict[str, httpx.AsyncClient], stock: int) -> str:
    sku = f"REP-{uuid.uuid4().hex[:10].upper()}"
    r = await http["catalog"].put(
        f"/admin/products/{sku}",
        json={
            "name": f"Replica test {sku}",
            "description": "made by a test",
            "category": "tests",
            "price": 990,
            "currency": "USD",
            "active": True,
        },
    )
    assert r.status_code in (200, 201), r.text
    r = await http["inventory"].post(f"/admin/stock/{sku}/restock", json={"quantity": stock})
    assert r.status_code in (200, 202), r.text

    async def known() -> bool:
        return (await http["order"].get(f"/catalog/{sku}")).status_code == 200

    await wait_until(known, timeout=30)
    return sku


async def test_killing_an_inventory_replica_mid_load_loses_no_order_and_no_stock(
    http: dict[str, httpx.AsyncClient], platform: ServiceSupervisor
) -> None:
    before = await spread_over(platform, list(range(INVENTORY_REPLICAS)))
    assert len(before) == INVENTORY_REPLICAS
    skus = [await product(http, STOCK) for _ in range(3)]
    tokens = ["tok_approve"] * 5 + ["tok_decline"]
    placed: dict[str, tuple[str, int]] = {}

    async def place(i: int) -> None:
        sku, quantity = skus[i % 3], 1 + i % 3
        r = await http["order"].post(
            "/orders",
            json={
                "lines": [{"sku": sku, "quantity": quantity}],
                "currency": "USD",
                "payment_token": tokens[i % len(tokens)],
            },
            headers=customer_headers(f"rep-{i}"),
        )
        assert r.status_code == 202, r.text
        placed[r.json()["order_id"]] = (sku, quantity)

    first = asyncio.gather(*(place(i) for i in range(30)))

    async def load_under_way() -> bool:
        return len(placed) >= 5

    await wait_until(load_under_way, timeout=30, interval=0.02)
    victim = 1
    platform.kill("inventory", replica=victim)
    await first
    for round_ in range(2):
        await asyncio.gather(*(place(i) for i in range(30 + 15 * round_, 45 + 15 * round_)))
    assert len(placed) == 60

    survivors = [k for k in range(INVENTORY_REPLICAS) if k != victim]
    after = await spread_over(platform, survivors)
    assert sum(c or 0 for c in after.values()) == PARTITIONS

    async def all_final() -> dict[str, str] | None:
        statuses = {}
        for order_id in placed:
            body = (await http["order"].get(f"/orders/{order_id}")).json()
            if body["status"] not in TERMINAL:
                return None
            statuses[order_id] = body["status"]
        return statuses

    statuses: dict[str, str] = await wait_until(all_final, timeout=150, interval=1.0)
    sold: Counter[str] = Counter()
    for order_id, status in statuses.items():
        sku, quantity = placed[order_id]
        if status == "CONFIRMED":
            sold[sku] += quantity
    assert sum(sold.values()) > 0

    async def stock_conserved() -> bool:
        for sku in skus:
            s = (await http["inventory"].get(f"/stock/{sku}")).json()
            expected = STOCK - sold[sku]
            if (s["on_hand"], s["reserved"], s["available"]) != (expected, 0, expected):
                return False
        return True

    await wait_until(stock_conserved, timeout=60, interval=0.5)
    for order_id, status in statuses.items():
        payment = (await http["payment"].get(f"/payments/{order_id}")).json()
        if status == "CONFIRMED":
            assert payment["status"] == "CAPTURED", (order_id, payment)
        elif isinstance(payment, dict) and payment.get("status") == "CAPTURED":
            pytest.fail(f"{order_id} is {status} but its payment was captured")
