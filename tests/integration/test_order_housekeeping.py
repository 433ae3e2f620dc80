"""order_service's housekeeping against the real database: old idempotency keys are purged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from events.kit import db
from order_service import handlers
from order_service.app import MIGRATIONS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def pool(stack: Any) -> AsyncIterator[asyncpg.Pool]:
    url = stack.database_url("order_housekeeping")
    await db.ensure_database(url)
    pool = await db.create_pool(url, min_size=1, max_size=2)
    await db.apply_migrations(pool, MIGRATIONS)
    yield pool
    await pool.close()


async def test_idempotency_keys_older_than_their_ttl_are_purged_in_batches(
    pool: asyncpg.Pool,
) -> None:
    now = datetime.now(UTC)
    old = [(f"c{i % 7}", f"old-{i}", now - timedelta(hours=30)) for i in range(6_000)]
    fresh = [("c1", "fresh-1", now - timedelta(hours=1)), ("c2", "fresh-2", now)]
    await pool.executemany(
        "INSERT INTO idempotency_keys (customer_id, key, request_hash, status_code, response,"
        " created_at) VALUES ($1, $2, 'h', 202, '{}'::jsonb, $3)",
        old + fresh,
    )
    async with pool.acquire() as conn:
        first = await handlers.purge_idempotency_keys(conn, now - timedelta(hours=24))
        second = await handlers.purge_idempotency_keys(conn, now - timedelta(hours=24))
        third = await handlers.purge_idempotency_keys(conn, now - timedelta(hours=24))
    assert (first, second, third) == (handlers.PURGE_BATCH, 6_000 - handlers.PURGE_BATCH, 0)
    left = await pool.fetch("SELECT key FROM idempotency_keys ORDER BY key")
    assert [r["key"] for r in left] == ["fresh-1", "fresh-2"]
