"""Random (v4) against time-ordered (v7) UUIDs as an inbox's key, on a local PostgreSQL.

    python -m bench.ids --rows 3000000          # both orders: v4 first, then v7 first

Inserts --rows rows in batches of 200 into a table shaped like the kit's inbox, PRIMARY KEY
(consumer, event_id), once with uuid4 ids and once with events.ids.new_id, each on a fresh table
after a CHECKPOINT, and prints rows/s, WAL bytes per row and the key's index size. With random
ids each insert lands on a random page of the whole index, which slows down once the index
outgrows shared_buffers; time-ordered ids append to its right-hand end. The second table of a run
pays full-page images the first does not, so the two are compared in the same position.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg

from bench.pgstats import WAL_BYTES
from deploy.local.postgres import LocalPostgres
from events.ids import new_id

BATCH = 200
WAL_POSITION = f"SELECT {WAL_BYTES}"
KINDS: dict[str, Callable[[], uuid.UUID]] = {"v4": uuid.uuid4, "v7": new_id}
CREATE = """CREATE TABLE inbox_{k} (
    consumer text, event_id uuid, topic text, partition int, "offset" bigint,
    processed_at timestamptz DEFAULT now(), PRIMARY KEY (consumer, event_id))"""
INSERT = """INSERT INTO inbox_{k} (consumer, event_id, topic, partition, "offset")
SELECT 'order-saga', * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::bigint[])"""


async def insert_rows(conn: asyncpg.Connection, kind: str, rows: int) -> dict[str, float]:
    await conn.execute(CREATE.format(k=kind))
    wal_before = await conn.fetchval(WAL_POSITION)
    started = time.perf_counter()
    new = KINDS[kind]
    for i in range(0, rows, BATCH):
        ids = [new() for _ in range(BATCH)]
        offsets = list(range(i, i + BATCH))
        await conn.execute(INSERT.format(k=kind), ids, ["t"] * BATCH, [0] * BATCH, offsets)
    seconds = time.perf_counter() - started
    wal = await conn.fetchval(WAL_POSITION) - wal_before
    size = await conn.fetchval(f"SELECT pg_relation_size('inbox_{kind}_pkey')")
    await conn.execute("CHECKPOINT")
    return {
        "rows_per_s": round(rows / seconds),
        "wal_bytes_per_row": round(float(wal) / rows),
        "index_mib": round(size / 2**20),
    }


async def compare(rows: int, port: int) -> None:
    for order in (("v4", "v7"), ("v7", "v4")):
        with tempfile.TemporaryDirectory(prefix="bench-ids-") as data:
            pg = LocalPostgres(data_dir=Path(data) / "pg", port=port)
            pg.start()
            try:
                conn = await asyncpg.connect(pg.admin_url)
                try:
                    for position, kind in enumerate(order, 1):
                        got = await insert_rows(conn, kind, rows)
                        print(f"{kind} ({'first' if position == 1 else 'second'}): {got}")
                finally:
                    await conn.close()
            finally:
                pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--port", type=int, default=27190)
    args = parser.parse_args()
    asyncio.run(compare(args.rows, args.port))


if __name__ == "__main__":
    main()
