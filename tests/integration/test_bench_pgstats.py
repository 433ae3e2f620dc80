"""The bench's PostgreSQL counters, read from the session's real server."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from bench.pgstats import counters
from events.kit import db
from tests.integration.kit_support import eventually
from tests.stack import Stack

pytestmark = pytest.mark.integration


async def test_a_committed_write_shows_in_the_wal_and_commit_counters(stack: Stack) -> None:
    url = stack.database_url(f"pgstats_{uuid.uuid4().hex[:8]}")
    await db.ensure_database(url)
    before = await counters(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE t (v text)")
        await conn.execute("INSERT INTO t SELECT repeat('x', 100) FROM generate_series(1, 1000)")
    finally:
        await conn.close()  # a backend that exits flushes its statistics

    async def commits_counted() -> bool:
        return (await counters(url))["commits"] >= before["commits"] + 2

    await eventually(commits_counted, timeout=10)
    after = await counters(url)
    assert after["wal_bytes"] - before["wal_bytes"] > 100_000  # a thousand rows of 100 bytes
    assert after["commits"] >= before["commits"] + 2
    assert after["wal_fpi"] >= before["wal_fpi"]
