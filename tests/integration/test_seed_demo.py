"""`shop seed` against a running catalog and the real broker: seeding again changes nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from typer.testing import CliRunner

from deploy.cli import app
from deploy.seed import demo_catalog, initial_stock, restock_command, seed_platform
from events.contracts import REGISTRY, Restock
from events.envelope import decode
from events.topics import CATALOG_PRODUCTS, INVENTORY_COMMANDS, spec
from tests.integration.test_catalog_service import RunningCatalog, running_catalog, wait_until
from tests.stack import Stack

pytestmark = pytest.mark.integration

PRODUCTS = 48


async def end_offsets(bootstrap: str, topic: str = INVENTORY_COMMANDS) -> dict[TopicPartition, int]:
    partitions = [TopicPartition(topic, p) for p in range(spec(topic).partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        offsets: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return offsets
    finally:
        await consumer.stop()


async def records_between(
    bootstrap: str, start: dict[TopicPartition, int], end: dict[TopicPartition, int]
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record from one set of offsets up to (not including) another."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        consumer.assign(list(end))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        remaining = {tp for tp in end if start[tp] < end[tp]}
        async with asyncio.timeout(30):
            while remaining:
                for tp, records in (await consumer.getmany(*remaining, timeout_ms=200)).items():
                    found += [r for r in records if r.offset < end[tp]]
                    if records and records[-1].offset >= end[tp] - 1:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return found


async def seeded_restocks(
    bootstrap: str, start: dict[TopicPartition, int], end: dict[TopicPartition, int]
) -> list[tuple[uuid.UUID, Any, str, int]]:
    """The seed's Restock commands between two sets of offsets: (event id, time, sku, units)."""
    found = []
    for r in await records_between(bootstrap, start, end):
        envelope, command = decode(r.value, REGISTRY)
        if envelope.producer == "seed" and isinstance(command, Restock):
            found.append((envelope.event_id, envelope.occurred_at, command.sku, command.quantity))
    return sorted(found)


async def all_products(catalog: RunningCatalog) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        r = await catalog.http.get("/products", params={"page": page, "page_size": 200})
        body = r.json()
        items += body["items"]
        if len(items) >= body["total"]:
            return items
        page += 1


async def test_seeding_twice_gives_the_same_catalog_and_restocks_with_the_same_event_ids(
    stack: Stack,
) -> None:
    async with running_catalog(stack, f"seed_it_{uuid.uuid4().hex[:8]}") as catalog:
        url = str(catalog.http.base_url).rstrip("/")
        kafka = stack.kafka_bootstrap

        before = await end_offsets(kafka)
        products_before = await end_offsets(kafka, CATALOG_PRODUCTS)
        first = await seed_platform(catalog_url=url, kafka=kafka, products=PRODUCTS)
        between = await end_offsets(kafka)
        products_first = await all_products(catalog)

        second = await seed_platform(catalog_url=url, kafka=kafka, products=PRODUCTS)
        after = await end_offsets(kafka)
        products_second = await all_products(catalog)

        async def all_published() -> bool:  # the relay deletes each row Kafka acknowledged
            left: int = await catalog.pool.fetchval("SELECT count(*) FROM outbox")
            return left == 0

        await wait_until(all_published)
        published = await records_between(
            kafka, products_before, await end_offsets(kafka, CATALOG_PRODUCTS)
        )
        restocks_first = await seeded_restocks(kafka, before, between)
        restocks_second = await seeded_restocks(kafka, between, after)

    assert (first.products, first.created) == (PRODUCTS, PRODUCTS)
    assert (second.products, second.created) == (PRODUCTS, 0)

    expected = demo_catalog(PRODUCTS)
    assert [
        (p["sku"], p["name"], p["category"], p["price"], p["currency"]) for p in products_first
    ] == [(p.sku, p.name, p.category, p.price, p.currency) for p in expected]
    assert products_second == products_first
    # each product published once, by the first seeding; the second changed nothing
    assert sorted(r.key for r in published) == sorted(p.sku.encode() for p in expected)

    stock = initial_stock(expected, 100)
    want = sorted(
        (env.event_id, env.occurred_at, sku, units)
        for sku, units in stock.items()
        for _, env in [restock_command(sku, units)]
    )
    assert restocks_first == restocks_second == want
    assert any(units < 100 for *_, units in want)


async def test_shop_seed_prints_a_one_line_summary(stack: Stack) -> None:
    async with running_catalog(stack, f"seed_cli_{uuid.uuid4().hex[:8]}") as catalog:
        args = [
            "seed",
            "--catalog-url",
            str(catalog.http.base_url).rstrip("/"),
            "--kafka",
            stack.kafka_bootstrap,
            "--products",
            "16",
            "--stock",
            "0",
        ]
        # The catalog serves from this event loop, so the blocking CLI runs in a thread.
        result = await asyncio.to_thread(CliRunner().invoke, app, args)
        again = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code == 0, result.output
    assert "seeded 16 products in 8 categories (16 new" in result.output
    assert "(0 new, 16 already there)" in again.output
    assert "stock for 0 SKUs" in again.output


async def test_shop_seed_says_when_the_catalog_is_unreachable(stack: Stack) -> None:
    from tests.integration.test_catalog_service import free_port

    args = [
        "seed",
        "--catalog-url",
        f"http://127.0.0.1:{free_port()}",
        "--kafka",
        stack.kafka_bootstrap,
    ]
    result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code != 0
    assert "cannot reach the catalog" in str(result.exception)
