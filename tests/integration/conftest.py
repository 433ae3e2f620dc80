"""Fixtures the integration tests share: for kit-style tests a migrated database with the
`applied` table, a producer and message types on a fresh topic of the test's own; for whole-platform
tests, HTTP clients to each service of the module's `platform` fixture."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from deploy.local.services import SERVICES, ServiceSupervisor
from events.kit import db
from events.kit.admin import ensure_topics
from events.kit.producer import make_producer
from order_service.app import MIGRATIONS as ORDER_MIGRATIONS
from tests.integration.kit_support import CREATE_APPLIED, KitTypes, kit_types
from tests.integration.platform_support import admin_headers


def _module_name(request: pytest.FixtureRequest) -> str:
    name: str = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    return name


@pytest.fixture(scope="module")
async def kit_pool(stack: Any, request: pytest.FixtureRequest) -> AsyncIterator[asyncpg.Pool]:
    """A database of the test module's own, migrated, with the `applied` table."""
    url = stack.database_url(f"kit_{_module_name(request)}")
    await db.ensure_database(url)
    pool = await db.create_pool(url, min_size=1, max_size=6)
    await db.apply_migrations(pool)
    await pool.execute(CREATE_APPLIED)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def order_pool(stack: Any, request: pytest.FixtureRequest) -> AsyncIterator[asyncpg.Pool]:
    """A database of the test module's own with the order service's migrations."""
    url = stack.database_url(f"order_{_module_name(request)}")
    await db.ensure_database(url)
    pool = await db.create_pool(url, min_size=1, max_size=2)
    await db.apply_migrations(pool, ORDER_MIGRATIONS)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def producer(stack: Any) -> AsyncIterator[AIOKafkaProducer]:
    p = make_producer(stack.kafka_bootstrap, client_id="kit-tests")
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def types(stack: Any) -> KitTypes:
    t = kit_types(f"kit.{uuid.uuid4().hex[:10]}")
    await ensure_topics(stack.kafka_bootstrap, t.specs)
    return t


@pytest.fixture
async def http(platform: ServiceSupervisor) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """A client per service of the module's platform, by short name (order, catalog, ...).

    They carry an admin token, so tests can read any order and administer the catalog and stock;
    place orders with `customer_headers(...)` so that they belong to a customer."""
    clients = {
        s.database: httpx.AsyncClient(
            base_url=platform.url(s.database), timeout=10.0, headers=admin_headers()
        )
        for s in SERVICES
    }
    try:
        yield clients
    finally:
        for c in clients.values():
            await c.aclose()
