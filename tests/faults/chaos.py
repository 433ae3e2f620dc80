"""The fault-injection run: `make chaos-short` (a couple of minutes, in `make test`) and `make chaos`
(at least ten minutes and fifty faults). `python -m tests.faults.chaos --help` for the options.

It starts a platform of its own (tests/faults/platform.py), seeds a small catalog with scarce
stock, posts orders at a steady rate while faults are injected at random times on random targets
(tests/faults/faults.py), restocks now and then, heals everything, waits for the platform to
settle and checks the invariants (tests/faults/checks.py). The seed fixes every random choice, so
a failing run can be repeated (timings still vary). The last line printed is the violation count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from deploy.local.services import BY_NAME, SERVICES
from deploy.seed import demo_catalog, produce_stock, put_products
from events.contracts import Restock
from events.envelope import encode, headers_for, wrap
from events.kit.producer import make_producer
from events.topics import INVENTORY_COMMANDS
from tests.faults.checks import Findings, check_all
from tests.faults.faults import KIND_OF, LANES, FaultInjector
from tests.faults.load import LoadGenerator
from tests.faults.platform import ChaosPlatform, Ports


@dataclass(frozen=True)
class Profile:
    """How long, how hard, and which faults: a count per kind, or random ones until `load_s`."""

    name: str
    rate: float
    load_s: float
    settle_s: float
    counts: dict[str, int] | None = None
    skus: int = 6
    stock: int = 40
    restock_every_s: float = 12.0
    min_faults: int = 0


SHORT = Profile(
    "short",
    rate=3.0,
    load_s=60,
    settle_s=180,
    counts={
        "kill-service": 2,
        "pause-consumer": 1,
        "kill-broker": 1,
        "reset-postgres": 2,
        "proxy-latency": 1,
        "proxy-blackhole": 1,
        "proxy-reset": 1,
        "re-produce": 1,
        "rewind-group": 1,
        "gateway-slow": 1,
        "gateway-failing": 1,
    },
)
LONG = Profile("long", rate=3.0, load_s=660, settle_s=300, min_faults=50)
PROFILES = {p.name: p for p in (SHORT, LONG)}


@dataclass
class Run:
    profile: Profile
    seed: int
    platform: ChaosPlatform
    say: Callable[[str], None]
    stock_in: Counter[str] = field(default_factory=Counter)
    restocks: int = 0
    figures: dict[str, object] = field(default_factory=dict)

    async def execute(self) -> Findings:
        rng = random.Random(self.seed)
        p, platform = self.profile, self.platform
        skus = await self.seed_catalog()
        orders = [
            f"http://127.0.0.1:{platform.services.port(BY_NAME['order_service'], k)}"
            for k in platform.replicas(BY_NAME["order_service"])
        ]
        load = LoadGenerator(orders, skus, random.Random(rng.random()), p.rate, f"{self.seed}")
        faults = FaultInjector(
            platform, random.Random(rng.random()), self.say, min_faults=p.min_faults
        )
        stop_load, stop_watch = asyncio.Event(), asyncio.Event()
        started = time.monotonic()
        load_task = asyncio.create_task(load.run(stop_load))
        watch_task = asyncio.create_task(faults.watch(stop_watch))
        restock_task = asyncio.create_task(
            self.restock(random.Random(rng.random()), skus, stop_load)
        )
        await asyncio.sleep(5)  # warm up: orders in every saga step before the first fault
        until = None if p.counts else started + p.load_s
        await asyncio.gather(
            *(
                faults.lane(self._lane_plan(rng, kinds), until=until, gap_s=(1.0, 4.0))
                for kinds in LANES.values()
            )
        )
        remaining = started + p.load_s - time.monotonic()
        await asyncio.sleep(max(3.0, remaining))
        stop_load.set()
        load_s = time.monotonic() - started
        self.say(f"healing after {load_s:.0f}s of load and {len(faults.injected)} faults")
        await faults.heal()
        healed = time.monotonic()
        await restock_task
        load.give_up_at(healed + p.settle_s)
        findings, settled = await self.settle(load, faults, healed)
        stop_watch.set()
        await watch_task
        await load_task
        (platform.root / "requests.jsonl").write_bytes(load.journal())
        self.figures = {
            "seed": self.seed,
            "profile": p.name,
            "load_seconds": round(load_s),
            "rate_per_s": p.rate,
            "orders_attempted": len(load.requests),
            "orders_acknowledged": load.outcomes["ok"],
            "requests_failed": load.outcomes["failed"],
            "requests_unresolved": load.outcomes["unknown"],
            "attempts": dict(load.attempts),
            "orders_terminal": sum(
                findings.statuses[s] for s in ("CONFIRMED", "REJECTED", "CANCELLED")
            ),
            "order_statuses": dict(findings.statuses),
            "restocks": self.restocks,
            "faults": len(faults.injected),
            "faults_by_kind": {
                f"{KIND_OF[k]}. {k}": n
                for k, n in sorted(faults.by_kind.items(), key=lambda kv: KIND_OF[kv[0]])
            },
            "faults_failed": faults.errors,
            "service_start_retries": faults.failed_starts,
            "dead_letters": findings.audit.get("dead_letters"),
            "log_events": findings.audit.get("events"),
            "settle_seconds": None if settled is None else round(settled, 1),
            "violations": len(findings.violations),
        }
        return findings

    def _lane_plan(self, rng: random.Random, kinds: tuple[str, ...]) -> list[str]:
        if self.profile.counts is None:
            return list(kinds)
        plan = [k for k in kinds for _ in range(self.profile.counts.get(k, 0))]
        rng.shuffle(plan)
        return plan

    async def seed_catalog(self) -> list[str]:
        platform = self.platform
        products = demo_catalog(self.profile.skus)
        catalog = f"http://127.0.0.1:{platform.services.port(BY_NAME['catalog_service'])}"
        await put_products(catalog, products)
        stock = {p.sku: self.profile.stock for p in products}
        await produce_stock(platform.bootstrap, stock)
        self.stock_in.update(stock)
        skus = sorted(stock)

        async def known() -> bool:
            order = await _count(platform.database_url("order"), "catalog_view", skus)
            inventory = await _count(platform.database_url("inventory"), "stock", skus)
            return order == inventory == len(skus)

        deadline = time.monotonic() + 120
        while not await known():
            if time.monotonic() > deadline:
                raise RuntimeError("the seeded catalog and stock did not reach the services")
            await asyncio.sleep(0.5)
        return skus

    async def restock(self, rng: random.Random, skus: list[str], stop: asyncio.Event) -> None:
        """Now and then a Restock command, sent until acknowledged (the same envelope each time,
        so a retry that duplicates it is applied once)."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.profile.restock_every_s)
                return
            except TimeoutError:
                pass
            sku, quantity = rng.choice(skus), rng.randint(10, 30)
            command = Restock(sku=sku, quantity=quantity, reason="chaos restock")
            envelope = wrap(command, producer="chaos")
            attempt = 0
            while True:
                attempt += 1
                producer = make_producer(self.platform.bootstrap, client_id="chaos-restock")
                try:
                    await asyncio.wait_for(producer.start(), 30)
                    await asyncio.wait_for(
                        producer.send_and_wait(
                            INVENTORY_COMMANDS,
                            value=encode(envelope),
                            key=command.partition_key().encode(),
                            headers=headers_for(envelope),
                        ),
                        30,
                    )
                    break
                except Exception as exc:
                    if attempt == 1:
                        self.say(f"restock of {sku} not acknowledged ({exc!r:.80}); retrying")
                    await asyncio.sleep(1.0)
                finally:
                    await producer.stop()
            self.stock_in[sku] += quantity
            self.restocks += 1

    async def settle(
        self, load: LoadGenerator, faults: FaultInjector, healed: float
    ) -> tuple[Findings, float | None]:
        """Check every few seconds until everything holds; the last findings if it never does."""
        urls = {s.database: self.platform.database_url(s.database) for s in SERVICES}
        deadline = healed + self.profile.settle_s
        while True:
            findings = await check_all(
                bootstrap=self.platform.bootstrap,
                database_url=urls,
                requests=load.requests,
                stock_in=self.stock_in,
                unanswered=load.in_flight,
                crashes=faults.crashes,
            )
            if not findings.violations:
                return findings, time.monotonic() - healed
            if time.monotonic() > deadline:
                return findings, None
            first = sorted(findings.violations)[0]
            self.say(f"not settled: {len(findings.violations)} open, e.g. {first}"[:200])
            await asyncio.sleep(3.0)


async def _count(url: str, table: str, skus: list[str]) -> int:
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError):
        return 0
    try:
        n: int = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE sku = ANY($1)", skus)
        return n
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.chaos", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="short")
    parser.add_argument("--seed", type=int, default=None, help="repeat a run's random choices")
    parser.add_argument(
        "--port-base",
        type=int,
        default=None,
        help="Kafka, its controller, the proxy and PostgreSQL on this port and the next three "
        "(default: free ports)",
    )
    parser.add_argument("--data", type=Path, default=None, help="run folder (default: in /tmp)")
    parser.add_argument("--report", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (logs, data)")
    args = parser.parse_args(argv)
    # The broker going away is the point here: the clients' connection errors are expected.
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    # make or a CI runner stops us with SIGTERM: unwind through the finally that stops the stack.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    profile = PROFILES[args.profile]
    root = args.data or Path(tempfile.gettempdir()) / f"shop-chaos-{seed}"
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {line}", flush=True)

    say(
        f"chaos {profile.name}: seed {seed} (repeat: make chaos{'-short' * (profile.name == 'short')} SEED={seed}); folder {root}"
    )
    platform = ChaosPlatform(root, Ports.from_base(args.port_base))
    run = Run(profile, seed, platform, say)
    findings: Findings | None = None
    try:
        say("starting Kafka (behind the fault proxy), PostgreSQL and the services")
        platform.start()
        say(
            f"platform up: Kafka via proxy {platform.bootstrap}, services {', '.join(s.database for s in SERVICES)}"
        )
        findings = asyncio.run(run.execute())
    finally:
        say("stopping the platform")
        platform.stop()
    for v in sorted(findings.violations)[:50]:
        print(f"VIOLATION {v}")
    figures = run.figures
    print(json.dumps(figures, indent=2))
    if args.report:
        args.report.write_text(json.dumps(figures, indent=2) + "\n")
    ok = not findings.violations
    if ok and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"run folder kept: {root} (service logs in services/logs, requests.jsonl)")
    print(f"violations: {len(findings.violations)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
