"""PostgreSQL over loopback TCP against its unix socket: CPU per round trip, client and server.

    python -m bench.pgsocket --transactions 10000 --rounds 3

The services reach PostgreSQL over TCP. This measures what its unix socket (which the local
server also listens on) would save per round trip; docs/performance.md says why the services were
not moved to it (the saving did not show in the platform's CPU per order).

Starts a local PostgreSQL (deploy/local/postgres.py), then runs the shape of a service's
transaction (BEGIN, a one-row INSERT with a parameter, COMMIT: three round trips) --transactions
times over each connection kind, alternating kinds for --rounds rounds on uvloop as the services
do. Prints, per round trip, this process's CPU (the client), the server backend's CPU (read from
/proc) and the wall time, then the unix socket's figures as a ratio of TCP's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import asyncpg
import psutil  # type: ignore[import-untyped]
import uvloop

from deploy.local.postgres import LocalPostgres

ROUND_TRIPS = 3  # BEGIN, INSERT, COMMIT
WARMUP = 500


async def per_round_trip(url: str, transactions: int) -> dict[str, float]:
    """Microseconds of client CPU, server CPU and wall time per round trip."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS trips (id bigserial PRIMARY KEY, v text)")
        backend = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))

        async def run(n: int) -> None:
            for _ in range(n):
                async with conn.transaction():
                    await conn.execute("INSERT INTO trips (v) VALUES ($1)", "x")

        await run(WARMUP)
        client0, server0 = time.process_time(), sum(backend.cpu_times()[:2])
        wall0 = time.perf_counter()
        await run(transactions)
        wall = time.perf_counter() - wall0
        client = time.process_time() - client0
        server = sum(backend.cpu_times()[:2]) - server0
    finally:
        await conn.close()
    trips = transactions * ROUND_TRIPS / 1e6
    return {"client_us": client / trips, "server_us": server / trips, "wall_us": wall / trips}


async def compare(transactions: int, rounds: int, port: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-pgsocket-") as data:
        pg = LocalPostgres(data_dir=Path(data) / "pg", port=port)
        pg.start()
        try:
            socket = pg.data_dir / f".s.PGSQL.{port}"
            if not socket.is_socket():
                raise SystemExit(f"no unix socket at {socket} (path too long?)")
            socket_url = f"postgresql://postgres@/postgres?host={pg.data_dir}&port={port}"
            urls = {"tcp": pg.database_url("postgres"), "unix": socket_url}
            totals = {kind: {"client_us": 0.0, "server_us": 0.0, "wall_us": 0.0} for kind in urls}
            for r in range(1, rounds + 1):
                for kind, url in urls.items():
                    got = await per_round_trip(url, transactions)
                    for key, value in got.items():
                        totals[kind][key] += value / rounds
                    shown = "  ".join(f"{k} {v:6.1f}" for k, v in got.items())
                    print(f"round {r} {kind:4s}  {shown}", flush=True)
        finally:
            pg.stop()
    tcp, unix = totals["tcp"], totals["unix"]
    for key in tcp:
        ratio = unix[key] / tcp[key]
        print(f"{key:10s} tcp {tcp[key]:6.1f}  unix {unix[key]:6.1f}  ratio {ratio:.3f}")
    both = (unix["client_us"] + unix["server_us"]) / (tcp["client_us"] + tcp["server_us"])
    print(f"client + server CPU per round trip, unix / tcp: {both:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=27191)
    args = parser.parse_args()
    uvloop.run(compare(args.transactions, args.rounds, args.port))


if __name__ == "__main__":
    main()
