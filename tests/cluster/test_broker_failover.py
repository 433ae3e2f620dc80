"""A broker of the three-node cluster dies (SIGKILL) under load: nothing acknowledged is lost.

The whole platform runs as separate processes against the cluster (every topic on three brokers,
min.insync.replicas 2, producers acks=all and idempotent). Orders are posted over HTTP at a steady
pace; once some are accepted, the broker leading the most saga partitions is killed. Every order
the API accepted must still end as its payment token says, the stock must add up, and
`shop events audit` must find the log clean. Then the broker is started again and must catch up:
every partition's in-sync replicas are back to three.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from deploy.local.kafka import KafkaBroker
from deploy.local.services import SERVICES, ServiceSupervisor
from events.topics import BASE_TOPICS, all_topics
from tests.cluster.conftest import BROKERS, Cluster
from tests.integration.platform_support import (
    TERMINAL,
    admin_headers,
    customer_headers,
    e2e_env,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.integration

STOCK = 10_000
ORDERS = 160
RATE = 8.0  # orders per second: about 20 s of load
KILL_AFTER = 40  # accepted orders before the broker dies
TOKENS = ["tok_approve"] * 7 + ["tok_decline"]
EXPECTED = {"tok_approve": "CONFIRMED", "tok_decline": "CANCELLED"}
# A failover (session timeout, new leaders, coordinator moves) takes seconds; steps get minutes so
# that an order cancelled by a deadline is a failure of the test, not of a slow machine.
SLOW_STEPS = {
    "ORDER_STOCK_DEADLINE_S": "120",
    "ORDER_PAYMENT_DEADLINE_S": "120",
    "ORDER_CONFIRM_DEADLINE_S": "120",
    "INVENTORY_RESERVATION_TTL_S": "240",
}


@pytest.fixture(scope="module")
def platform(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceSupervisor]:
    run = uuid.uuid4().hex[:8]
    supervisor = ServiceSupervisor(
        kafka_bootstrap=cluster.stack.kafka_bootstrap,
        database_url=lambda name: cluster.stack.database_url(f"cl_{run}_{name}"),
        data_dir=tmp_path_factory.mktemp("cluster-platform"),
        ports={svc.package: free_port() for svc in SERVICES},
        env=e2e_env(f"cl-{run}-") | SLOW_STEPS,
    )
    try:
        supervisor.start_all(timeout=240)
        yield supervisor
    finally:
        supervisor.stop_all()


@pytest.fixture
async def http(platform: ServiceSupervisor) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    clients = {
        s.database: httpx.AsyncClient(
            base_url=platform.url(s.database), timeout=30.0, headers=admin_headers()
        )
        for s in SERVICES
    }
    try:
        yield clients
    finally:
        for c in clients.values():
            await c.aclose()


async def describe(bootstrap: str) -> list[dict[str, Any]]:
    """Every topic, internal ones included, with its partitions' leader, replicas and ISR.

    While a broker is down the client may pick it for the request: that try is repeated."""

    async def attempt() -> list[dict[str, Any]] | None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        try:
            await admin.start()
            topics: list[dict[str, Any]] = await admin.describe_topics()
            return topics
        except KafkaError:
            return None
        finally:
            await admin.close()

    found: list[dict[str, Any]] = await wait_until(attempt, timeout=60, interval=0.5)
    return found


async def topic_configs(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        responses = await admin.describe_configs(resources)
    finally:
        await admin.close()
    out: dict[str, dict[str, str]] = {}
    for response in responses:
        for _code, _msg, _type, name, entries in response.resources:
            out[name] = {e[0]: e[1] for e in entries}
    return out


def leaders(topics: list[dict[str, Any]]) -> Counter[int]:
    """Saga partitions led by each broker."""
    saga = {t.name for t in BASE_TOPICS}
    return Counter(p["leader"] for t in topics if t["topic"] in saga for p in t["partitions"])


def lagging(topics: list[dict[str, Any]]) -> list[str]:
    """Partitions whose in-sync replicas are fewer than their replicas (or than the brokers)."""
    return [
        f"{t['topic']}/{p['partition']} isr={sorted(p['isr'])}"
        for t in topics
        for p in t["partitions"]
        if len(p["isr"]) < max(len(p["replicas"]), BROKERS)
    ]


async def product(http: dict[str, httpx.AsyncClient]) -> str:
    sku = f"CL-{uuid.uuid4().hex[:10].upper()}"
    r = await http["catalog"].put(
        f"/admin/products/{sku}",
        json={
            "name": f"Cluster test {sku}",
            "description": "made by a test",
            "category": "tests",
            "price": 1250,
            "currency": "USD",
            "active": True,
        },
    )
    assert r.status_code in (200, 201), r.text
    r = await http["inventory"].post(f"/admin/stock/{sku}/restock", json={"quantity": STOCK})
    assert r.status_code in (200, 202), r.text

    async def known() -> bool:
        return (await http["order"].get(f"/catalog/{sku}")).status_code == 200

    await wait_until(known, timeout=60, interval=0.5)
    return sku


def sigkill(node: KafkaBroker) -> None:
    pid = node.running_pid()
    assert pid is not None, f"{node.name} is not running"
    os.kill(pid, signal.SIGKILL)
    psutil.Process(pid).wait(30)


def audit(bootstrap: str) -> dict[str, Any]:
    """`shop events audit --json`, the operator's own check, over the whole log."""
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "events", "audit", "--bootstrap", bootstrap, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.stdout.strip(), done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == (0 if report["ok"] else 1), done.stderr
    return report


@dataclass
class Load:
    """Orders posted at a steady pace over HTTP, and what the API answered."""

    http: dict[str, httpx.AsyncClient]
    skus: list[str]
    token: dict[str, str] = field(default_factory=dict)  # accepted order id -> payment token
    line: dict[str, tuple[str, int]] = field(default_factory=dict)  # order id -> (sku, qty)
    refused: list[str] = field(default_factory=list)

    async def place(self, i: int) -> None:
        token = TOKENS[i % len(TOKENS)]
        sku, quantity = self.skus[i % len(self.skus)], 1 + i % 2
        r = await self.http["order"].post(
            "/orders",
            json={
                "lines": [{"sku": sku, "quantity": quantity}],
                "currency": "USD",
                "payment_token": token,
            },
            headers=customer_headers(f"cl-{i % 20}"),
        )
        if r.status_code == 202:
            self.token[r.json()["order_id"]] = token
            self.line[r.json()["order_id"]] = (sku, quantity)
        else:
            self.refused.append(f"{r.status_code} {r.text[:200]}")

    async def run(self) -> None:
        posts = []
        for i in range(ORDERS):
            posts.append(asyncio.create_task(self.place(i)))
            await asyncio.sleep(1 / RATE)  # the load's pace, not a wait for a condition
        await asyncio.gather(*posts)


@pytest.fixture
async def load(http: dict[str, httpx.AsyncClient]) -> Load:
    skus = [await product(http) for _ in range(4)]
    return Load(http, skus)


async def test_a_killed_broker_loses_no_acknowledged_order_and_catches_up_after_restart(
    cluster: Cluster, http: dict[str, httpx.AsyncClient], load: Load
) -> None:
    bootstrap = cluster.stack.kafka_bootstrap
    names = [t.name for t in all_topics()]
    configs = await topic_configs(bootstrap, names)
    for t in await describe(bootstrap):
        if t["topic"] in names:
            assert {len(p["replicas"]) for p in t["partitions"]} == {3}, t["topic"]
            assert configs[t["topic"]]["min.insync.replicas"] == "2", t["topic"]

    loading = asyncio.create_task(load.run())
    try:

        async def under_way() -> bool:
            return len(load.token) >= KILL_AFTER

        await wait_until(under_way, timeout=120, interval=0.05)
        led = leaders(await describe(bootstrap))
        victim = cluster.kafka.node(led.most_common(1)[0][0])
        sigkill(victim)

        async def fenced() -> list[str]:
            return lagging(await describe(bootstrap))

        # The controller notices the dead broker and shrinks the ISR of what it held.
        assert await wait_until(fenced, timeout=90, interval=0.5)
        await loading
    finally:
        loading.cancel()
    assert not load.refused, load.refused[:5]
    assert len(load.token) == ORDERS
    placed = load.token

    async def all_final() -> dict[str, str] | None:
        statuses = {}
        for order_id in placed:
            body = (await http["order"].get(f"/orders/{order_id}")).json()
            if body["status"] not in TERMINAL:
                return None
            statuses[order_id] = body["status"]
        return statuses

    statuses: dict[str, str] = await wait_until(all_final, timeout=300, interval=2.0)
    wrong = {o: (placed[o], s) for o, s in statuses.items() if s != EXPECTED[placed[o]]}
    assert not wrong, wrong

    sold: Counter[str] = Counter()
    for order_id, status in statuses.items():
        payment = (await http["payment"].get(f"/payments/{order_id}")).json()
        if status == "CONFIRMED":
            assert payment["status"] == "CAPTURED", (order_id, payment)
            sku, quantity = load.line[order_id]
            sold[sku] += quantity

    async def stock_adds_up() -> bool:
        for sku in load.skus:
            s = (await http["inventory"].get(f"/stock/{sku}")).json()
            left = STOCK - sold[sku]
            if (s["on_hand"], s["reserved"], s["available"]) != (left, 0, left):
                return False
        return True

    await wait_until(stock_adds_up, timeout=60, interval=0.5)

    report = audit(bootstrap)
    assert report["ok"], report["violations"][:5]
    assert sum(report["orders"].values()) == ORDERS, report["orders"]
    assert report["orders"].get("CONFIRMED") == sum(
        1 for t in placed.values() if t == "tok_approve"
    ), report["orders"]
    assert report["dead_letters"] == 0, report

    victim.start(timeout=180)

    behind: list[str] = []

    async def caught_up() -> bool:
        behind[:] = lagging(await describe(bootstrap))
        return not behind

    try:
        await wait_until(caught_up, timeout=240, interval=1.0)
    except AssertionError:
        pytest.fail(f"{victim.name} did not catch up: {len(behind)} partitions {behind[:10]}")
    restarted = [t for t in await describe(bootstrap) if t["topic"] in names]
    assert all(victim.node_id in p["isr"] for t in restarted for p in t["partitions"]), (
        "the restarted broker is not in every ISR"
    )
