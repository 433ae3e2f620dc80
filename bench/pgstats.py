"""PostgreSQL's own counters around a bench step: WAL written and transactions committed.

The server's CPU per order says how much it worked; these say on what. WAL bytes and full-page
images per order grow with every row written twice, every index a row lands in and every page
touched for the first time after a checkpoint; commits per order say how well the services batch.
The counters are server-wide (every database of the stack): WAL bytes from the WAL's insert
position (exact), full-page images and commits from `pg_stat_wal` and `pg_stat_database`, which
backends update at most about once a second: over a step of tens of seconds that is well inside
the noise.
"""

from __future__ import annotations

import asyncpg

# Bytes of WAL the server has written so far, exactly (the WAL's insert position).
WAL_BYTES = "pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')"
COUNTERS = f"""
SELECT {WAL_BYTES}::float8 AS wal_bytes,
       w.wal_fpi::float8 AS wal_fpi,
       (SELECT sum(xact_commit) FROM pg_stat_database)::float8 AS commits
FROM pg_stat_wal w
"""


async def counters(url: str) -> dict[str, float]:
    """The server's WAL bytes, full-page images and commits so far."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(COUNTERS)
    finally:
        await conn.close()
    assert row is not None
    return {k: float(v or 0) for k, v in row.items()}


def per_order(before: dict[str, float], after: dict[str, float], orders: int) -> dict[str, float]:
    """What a step's orders cost the server each: KiB of WAL, full-page images, commits."""
    n = max(orders, 1)
    return {
        "wal_kib": round((after["wal_bytes"] - before["wal_bytes"]) / 1024 / n, 2),
        "wal_full_page_images": round((after["wal_fpi"] - before["wal_fpi"]) / n, 3),
        "commits": round((after["commits"] - before["commits"]) / n, 2),
    }
