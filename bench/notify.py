"""What a NOTIFY costs the commits that send it: the same transactions with and without one.

    shop infra up        # or any PostgreSQL: --database-url
    python -m bench.notify --seconds 8 --rounds 4 --writers 2

PostgreSQL serialises the commits of transactions that sent a NOTIFY with one lock for the whole
server, held through each commit's WAL flush, so such commits cannot share a flush and queue
behind each other, whichever database they are in. Here `--writers` connections in each of four
databases (as the platform's four services with an outbox) commit an outbox-like insert of ten
700-byte rows as fast as they can, each database with a listener as the relay is; in one
variant every transaction also sends a NOTIFY on its database's channel (the kit before session
23), in the other none does (a process whose own relay leads: the kit now). The variants run in
turns on the same server, and the report gives each one's commits per second, commit latency
(p50, p99, from BEGIN to the end of COMMIT), CPU of the PostgreSQL server (all its processes)
and of this process per commit, and their ratios to the first variant.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
import uvloop

from bench.cycle import _cpu, _server
from events.kit import db
from events.kit.settings import local_database_url

DATABASES = ("bench_notify_a", "bench_notify_b", "bench_notify_c", "bench_notify_d")
ROWS = 10
VALUE = b"x" * 700
CREATE = "CREATE TABLE IF NOT EXISTS rows (id BIGSERIAL PRIMARY KEY, value BYTEA NOT NULL)"
# the kit's last statement in small: the rows, and a NOTIFY unless the channel is ''
WRITE = """
WITH inserted AS (INSERT INTO rows (value) SELECT unnest($1::bytea[]))
SELECT pg_notify($2, '') WHERE $2 <> ''
"""
CHANNEL = "bench_notify"


@dataclass
class Variant:
    name: str
    channel: str
    commits_per_s: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    client_ms: list[float] = field(default_factory=list)
    heard: int = 0


def _url(server_url: str, database: str) -> str:
    return server_url.rsplit("/", 1)[0] + "/" + database


async def run_round(variant: Variant, server_url: str, writers: int, seconds: float) -> str:
    conns = [await asyncpg.connect(_url(server_url, d)) for d in DATABASES for _ in range(writers)]
    listeners = [await asyncpg.connect(_url(server_url, d)) for d in DATABASES]

    def heard(*_: object) -> None:
        variant.heard += 1

    for listener in listeners:
        await listener.add_listener(CHANNEL, heard)
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def write(conn: asyncpg.Connection) -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            async with conn.transaction():
                await conn.execute(WRITE, [VALUE] * ROWS, variant.channel)
            latencies.append(time.perf_counter() - started)

    server = _server(server_url)
    server_before, cpu_before = _cpu(server), time.process_time()
    started = time.perf_counter()
    try:
        await asyncio.gather(*(write(c) for c in conns))
    finally:
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        server_after = _cpu(server)
        for c in conns + listeners:
            await c.close()
    server_cpu = sum(t - server_before.get(pid, 0.0) for pid, t in server_after.items())
    latencies.sort()
    n = len(latencies)
    variant.commits_per_s.append(n / elapsed)
    variant.p50_ms.append(latencies[n // 2] * 1000)
    variant.p99_ms.append(latencies[int(n * 0.99)] * 1000)
    variant.server_ms.append(server_cpu / n * 1000)
    variant.client_ms.append(cpu / n * 1000)
    return (
        f"{variant.name} {n / elapsed:,.0f} commits/s, p99 {latencies[int(n * 0.99)] * 1000:.2f}"
        f" ms, server {server_cpu / n * 1000:.3f} ms/commit"
    )


async def main(args: argparse.Namespace) -> None:
    for database in DATABASES:
        url = _url(args.database_url, database)
        await db.ensure_database(url)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(CREATE)
            await conn.execute("TRUNCATE rows")
        finally:
            await conn.close()
    variants = [Variant("NOTIFY", CHANNEL), Variant("no NOTIFY", "")]
    await run_round(Variant("warm-up", CHANNEL), args.database_url, args.writers, 2.0)
    for r in range(args.rounds):
        figures = [
            await run_round(v, args.database_url, args.writers, args.seconds)
            for v in (variants if r % 2 == 0 else reversed(variants))
        ]
        print(f"round {r + 1} of {args.rounds}: {'; '.join(figures)}", flush=True)
    base = variants[0]
    print(
        f"\n{len(DATABASES)} databases, {args.writers} writer(s) each, {ROWS} rows a commit;"
        f" medians of {args.rounds} rounds of {args.seconds:g} s:"
    )
    print(
        f"{'':10} {'commits/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'server':>7} {'client':>7}"
        f" {'ratio':>6} {'heard':>7}"
    )
    for v in variants:
        rate = statistics.median(v.commits_per_s)
        print(
            f"{v.name:10} {rate:10,.0f} {statistics.median(v.p50_ms):7.2f} "
            f"{statistics.median(v.p99_ms):7.2f} {statistics.median(v.server_ms):7.3f} "
            f"{statistics.median(v.client_ms):7.3f} "
            f"{rate / statistics.median(base.commits_per_s):6.2f} {v.heard:7,}"
        )
    print("(server, client: CPU ms per commit; ratio: commits/s against the first; heard:")
    print(" notifications the listeners received)")


def cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per variant per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--writers", type=int, default=2, help="connections per database")
    parser.add_argument(
        "--database-url",
        default=local_database_url("postgres"),
        help="any database of the server (the bench makes its own four)",
    )
    uvloop.run(main(parser.parse_args(argv)))


if __name__ == "__main__":
    cli()
