"""order_service's housekeeping against the real database: old idempotency keys are purged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from order_service import handlers

pytestmark = pytest.mark.integration


async def test_idempotency_keys_older_than_their_ttl_are_purged_in_batches(
    order_pool: asyncpg.Pool,
) -> None:
    now = datetime.now(UTC)
    old = [(f"c{i % 7}", f"old-{i}", now - timedelta(hours=30)) for i in range(6_000)]
    fresh = [("c1", "fresh-1", now - timedelta(hours=1)), ("c2", "fresh-2", now)]
    await order_pool.executemany(
        "INSERT INTO idempotency_keys (customer_id, key, request_hash, status_code, response,"
        " created_at) VALUES ($1, $2, 'h', 202, '{}'::jsonb, $3)",
        old + fresh,
    )
    async with order_pool.acquire() as conn:
        first = await handlers.purge_idempotency_keys(conn, now - timedelta(hours=24))
        second = await handlers.purge_idempotency_keys(conn, now - timedelta(hours=24))
        third = await handlers.purge_idempotency_keys(conn, now - timedelta(hours=24))
    assert (first, second, third) == (handlers.PURGE_BATCH, 6_000 - handlers.PURGE_BATCH, 0)
    left = await order_pool.fetch("SELECT key FROM idempotency_keys ORDER BY key")
    assert [r["key"] for r in left] == ["fresh-1", "fresh-2"]
