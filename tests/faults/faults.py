"""The faults, each injected at a random moment on a random target and healed by itself.

Faults run in three lanes at once, each lane one fault at a time: service processes (kill,
rewind a consumer group), the broker and the network to it (kill the broker, the proxy's latency,
blackhole and resets, re-produced events), and the rest (PostgreSQL connections reset mid-
transaction, a consumer paused past its session timeout, the payment gateway slow or failing).
A lock per service keeps two faults from fighting over the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg
import psutil  # type: ignore[import-untyped]
from aiokafka import AIOKafkaConsumer

from deploy.eventlog import groups, reader
from deploy.eventlog.groups import OffsetChange
from deploy.local.common import InfraError
from deploy.local.services import BY_NAME, SERVICES, ServiceDef
from events.kit.producer import make_producer
from events.topics import INVENTORY_COMMANDS, INVENTORY_EVENTS, PAYMENT_COMMANDS, PAYMENT_EVENTS
from tests.faults.platform import ChaosPlatform

T = TypeVar("T")

# Longer than the consumers' session timeout (10 s): the group rebalances without the paused one.
PAUSE_S = (12.0, 16.0)
# The consumer groups of the kit services, and which service runs each.
GROUPS = {
    "inventory_service": "inventory",
    "payment_service": "payment",
    "order_service": "order-saga",
}
DUPLICATED_TOPICS = (INVENTORY_COMMANDS, PAYMENT_COMMANDS, INVENTORY_EVENTS, PAYMENT_EVENTS)

LANES: dict[str, tuple[str, ...]] = {
    "processes": ("kill-service", "rewind-group"),
    "broker": ("kill-broker", "proxy-latency", "proxy-blackhole", "proxy-reset", "re-produce"),
    "other": ("reset-postgres", "pause-consumer", "gateway-slow", "gateway-failing"),
}
# The numbering of the fault kinds.
KIND_OF = {
    "kill-service": 1,
    "pause-consumer": 2,
    "kill-broker": 3,
    "reset-postgres": 4,
    "proxy-latency": 5,
    "proxy-blackhole": 5,
    "proxy-reset": 5,
    "re-produce": 6,
    "rewind-group": 6,
    "gateway-slow": 7,
    "gateway-failing": 7,
}


@dataclass
class Injected:
    kind: str
    target: str
    started: float
    seconds: float = 0.0
    detail: str = ""


@dataclass
class FaultInjector:
    platform: ChaosPlatform
    rng: random.Random
    log: Callable[[str], None]
    injected: list[Injected] = field(default_factory=list)
    # Processes the harness took down on purpose, so the watchdog does not count them as crashes.
    expected_down: set[tuple[str, int]] = field(default_factory=set)
    crashes: list[str] = field(default_factory=list)
    failed_starts: int = 0
    errors: list[str] = field(default_factory=list)
    # With `until`: the lanes go on past it until this many faults were injected in all.
    min_faults: int = 0
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock(self, package: str) -> asyncio.Lock:
        return self._locks.setdefault(package, asyncio.Lock())

    @property
    def by_kind(self) -> Counter[str]:
        return Counter(f.kind for f in self.injected)

    # -- lanes ---------------------------------------------------------------------------------

    async def lane(
        self, kinds: list[str], *, until: float | None, gap_s: tuple[float, float]
    ) -> None:
        """Run the given faults in order, or (until given) random ones of the lane until then
        and until `min_faults` were injected."""
        pool = list(kinds)
        while True:
            if until is None:
                if not pool:
                    return
                kind = pool.pop(0)
            else:
                if time.monotonic() >= until and len(self.injected) >= self.min_faults:
                    return
                kind = self.rng.choice(kinds)
            await asyncio.sleep(self.rng.uniform(*gap_s))
            await self.inject(kind)

    async def inject(self, kind: str) -> None:
        action: Callable[[Injected], Awaitable[None]] = getattr(self, "_" + kind.replace("-", "_"))
        fault = Injected(kind, "", time.monotonic())
        try:
            await action(fault)
        except Exception as exc:
            # The harness could not do its part (Kafka unreachable for minutes on a starved
            # machine, say): reported beside the faults, not as a violation; the run goes on to
            # heal and check, and whatever the platform did wrong meanwhile still shows there.
            fault.detail = f"FAILED: {exc!r:.300}"
            self.errors.append(f"{kind} on {fault.target or '?'}: {exc!r:.300}")
            return
        finally:
            fault.seconds = time.monotonic() - fault.started
            self.log(f"fault {kind:<16} {fault.target:<22} {fault.seconds:5.1f}s {fault.detail}")
        self.injected.append(fault)

    # -- 1. a service SIGKILLed mid-saga, then restarted -----------------------------------------

    def _pick_replica(self, packages: tuple[str, ...] | None = None) -> tuple[ServiceDef, int]:
        svc = self.rng.choice([s for s in SERVICES if packages is None or s.package in packages])
        return svc, self.rng.choice(self.platform.replicas(svc))

    async def _kill_service(self, fault: Injected) -> None:
        svc, k = self._pick_replica()
        fault.target = f"{svc.database}[{k}]"
        async with self.lock(svc.package):
            self.expected_down.add((svc.package, k))
            try:
                await asyncio.to_thread(self.platform.services.kill, svc.package, k)
                await asyncio.sleep(self.rng.uniform(0.5, 3.0))
                await self._start(svc, k)
            finally:
                self.expected_down.discard((svc.package, k))

    async def _start(self, svc: ServiceDef, replica: int) -> None:
        """Start a replica and wait until it is ready; a start that fails (the broker is down
        right now, say) is tried again, as a process supervisor would."""
        services = self.platform.services
        deadline = time.monotonic() + 300
        while True:
            await asyncio.to_thread(services.start, svc.package, replica)
            try:
                await asyncio.to_thread(services.wait_ready, svc.package, 240, replica)
                return
            except InfraError as exc:
                if time.monotonic() > deadline:
                    raise
                self.failed_starts += 1
                self.log(f"{svc.database}[{replica}] failed to start; again in 2s ({exc!s:.200})")
                await asyncio.sleep(2.0)

    # -- 2. a consumer paused (SIGSTOP) past its session timeout, then resumed -----------------

    async def _pause_consumer(self, fault: Injected) -> None:
        svc, k = self._pick_replica(tuple(GROUPS))
        fault.target = f"{svc.database}[{k}]"
        async with self.lock(svc.package):
            pause = self.rng.uniform(*PAUSE_S)
            services = self.platform.services
            await asyncio.to_thread(services.send_signal, svc.package, signal.SIGSTOP, k)
            try:
                await asyncio.sleep(pause)
            finally:
                await asyncio.to_thread(services.send_signal, svc.package, signal.SIGCONT, k)
            fault.detail = f"paused {pause:.0f}s"

    # -- 3. the broker SIGKILLed, restarted after a while ----------------------------------------

    async def _kill_broker(self, fault: Injected) -> None:
        broker = self.platform.broker
        fault.target = "kafka"
        pid = broker.running_pid()
        if pid is None:
            fault.detail = "not running"
            return
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            await asyncio.to_thread(psutil.Process(pid).wait, 30)
        down = self.rng.uniform(2.0, 8.0)
        await asyncio.sleep(down)
        started = time.monotonic()
        await self._start_broker()
        fault.detail = f"down {down:.0f}s, back in {time.monotonic() - started:.0f}s"

    async def _start_broker(self) -> None:
        """Launch the broker and wait until it answers; a launch that dies (its port still held
        by a socket of the killed one, say) is tried again."""
        broker = self.platform.broker
        for attempt in range(1, 6):
            try:
                await asyncio.to_thread(broker.launch)
                await asyncio.to_thread(broker.wait_ready, 240)
                return
            except InfraError as exc:
                if attempt == 5:
                    raise
                self.failed_starts += 1
                self.log(f"Kafka failed to start; again in 5s ({exc!s:.200})")
                await asyncio.sleep(5.0)

    # -- 4. PostgreSQL connections reset mid-transaction ---------------------------------------

    async def _reset_postgres(self, fault: Injected) -> None:
        svc = self.rng.choice(SERVICES)
        db = self.platform.database_url(svc.database).rsplit("/", 1)[1]
        fault.target = db
        conn = await asyncpg.connect(self.platform.postgres.admin_url, timeout=10)
        try:
            # Wait briefly for a backend inside a transaction, then cut every backend of the db.
            deadline = time.monotonic() + 3.0
            busy = 0
            while time.monotonic() < deadline:
                busy = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                    "AND state IN ('active', 'idle in transaction')",
                    db,
                )
                if busy:
                    break
                await asyncio.sleep(0.02)
            cut = await conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                db,
            )
        finally:
            await conn.close()
        fault.detail = f"{cut} backends cut, {busy} in a transaction"

    # -- 5. the network between the services and the broker -----------------------------------

    async def _proxy_latency(self, fault: Injected) -> None:
        ms, hold = self.rng.uniform(100, 600), self.rng.uniform(5, 12)
        fault.target, fault.detail = "proxy", f"+{ms:.0f} ms for {hold:.0f}s"
        self.platform.proxy.set_latency(ms)
        try:
            await asyncio.sleep(hold)
        finally:
            self.platform.proxy.heal()

    async def _proxy_blackhole(self, fault: Injected) -> None:
        hold = self.rng.uniform(4, 14)
        fault.target, fault.detail = "proxy", f"nothing through for {hold:.0f}s"
        self.platform.proxy.blackhole()
        try:
            await asyncio.sleep(hold)
        finally:
            self.platform.proxy.heal()

    async def _proxy_reset(self, fault: Injected) -> None:
        fault.target = "proxy"
        cut = await asyncio.to_thread(self.platform.proxy.reset)
        fault.detail = f"{cut} connections reset"

    # -- 6. duplicate deliveries ----------------------------------------------------------------

    async def _re_produce(self, fault: Injected) -> None:
        """Send again a share of the latest records of the saga topics, byte for byte."""
        fault.target = "saga topics"
        bootstrap = self.platform.bootstrap
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            request_timeout_ms=20_000,
        )
        producer = make_producer(bootstrap, client_id="chaos-duplicates")
        sent = 0
        try:
            await asyncio.wait_for(self._start_clients(consumer, producer), 60)
            tps = await reader.partitions_of(consumer, DUPLICATED_TOPICS)
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, max(0, ends[tp] - 10))
            picked = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    picked += [r for r in records if self.rng.random() < 0.4]
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    break
            futures = [
                await producer.send(
                    r.topic,
                    value=r.value,
                    key=r.key,
                    headers=list(r.headers),
                    partition=r.partition,
                )
                for r in picked
            ]
            await asyncio.gather(*futures)
            sent = len(picked)
        finally:
            await consumer.stop()
            await producer.stop()
            fault.detail = f"{sent} records sent again"

    @staticmethod
    async def _start_clients(consumer: AIOKafkaConsumer, producer: object) -> None:
        await consumer.start()
        await producer.start()  # type: ignore[attr-defined]

    async def _rewind_group(self, fault: Injected) -> None:
        """Stop a service, move its consumer group back, start it: it reads records again."""
        package = self.rng.choice(list(GROUPS))
        svc = BY_NAME[package]
        group = self.platform.group(GROUPS[package])
        fault.target = group.removeprefix(self.platform.group_prefix)
        bootstrap = self.platform.bootstrap
        async with self.lock(package):
            replicas = self.platform.replicas(svc)
            self.expected_down.update((package, k) for k in replicas)
            try:
                await asyncio.to_thread(self.platform.services.stop, package)
                changes = await _retrying(lambda: _rewind(bootstrap, group, self.rng), 120)
                fault.detail = f"{sum(-(c.delta or 0) for c in changes)} records back"
            finally:
                for k in replicas:
                    await self._start(svc, k)
                self.expected_down.difference_update((package, k) for k in replicas)

    # -- 7. the payment gateway slow or failing --------------------------------------------------

    async def _gateway_slow(self, fault: Injected) -> None:
        ms = self.rng.choice((300, 600, 1200))  # past the 800 ms timeout: no answer at all
        await self._gateway(fault, {"PAYMENT_GATEWAY_LATENCY_MS": str(ms)}, f"{ms} ms")

    async def _gateway_failing(self, fault: Injected) -> None:
        rate = self.rng.choice((0.3, 0.6, 0.9))
        await self._gateway(fault, {"PAYMENT_GATEWAY_FAILURE_RATE": str(rate)}, f"{rate:.0%} fail")

    async def _gateway(self, fault: Injected, settings: dict[str, str], what: str) -> None:
        svc = BY_NAME["payment_service"]
        hold = self.rng.uniform(6, 14)
        fault.target, fault.detail = "payment gateway", f"{what} for {hold:.0f}s"
        env = self.platform.env
        async with self.lock(svc.package):
            self.expected_down.add((svc.package, 0))
            try:
                env.update(settings)
                await self._restart(svc)
                await asyncio.sleep(hold)
            finally:
                for name in settings:
                    env.pop(name, None)
                await self._restart(svc)
                self.expected_down.discard((svc.package, 0))

    async def _restart(self, svc: ServiceDef) -> None:
        await asyncio.to_thread(self.platform.services.stop, svc.package)
        await self._start(svc, 0)

    # -- the watchdog ------------------------------------------------------------------------------

    async def watch(self, stop: asyncio.Event) -> None:
        """A process that exits on its own is a crash: recorded, then restarted so the run goes on.

        (Clients must ride out a broker or database outage without being restarted.)
        """
        while not stop.is_set():
            for svc in SERVICES:
                for k in self.platform.replicas(svc):
                    if (svc.package, k) in self.expected_down or self.lock(svc.package).locked():
                        continue
                    if self.platform.services.pid(svc.package, k) is not None:
                        continue
                    log = self.platform.services.log_file(svc, k)
                    self.crashes.append(f"{svc.database}[{k}] exited on its own (log: {log})")
                    self.log(f"CRASH {svc.database}[{k}] exited on its own; restarting it")
                    async with self.lock(svc.package):
                        await self._start(svc, k)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def heal(self) -> None:
        """Undo whatever may be left: the proxy clear, the broker and every service running."""
        self.platform.proxy.heal()
        await self._start_broker()
        for svc in SERVICES:
            async with self.lock(svc.package):
                for k in self.platform.replicas(svc):
                    services = self.platform.services
                    if services.pid(svc.package, k) is None:
                        await self._start(svc, k)
                    else:
                        with contextlib.suppress(Exception):
                            services.send_signal(svc.package, signal.SIGCONT, k)


async def _rewind(bootstrap: str, group: str, rng: random.Random) -> list[OffsetChange]:
    state = await groups.describe(bootstrap, group)
    if state.members:
        raise RuntimeError(f"group {group} still has {len(state.members)} member(s)")
    current = await groups.committed(bootstrap, group)
    changes = [
        OffsetChange(tp.topic, tp.partition, offset, max(0, offset - rng.randint(5, 60)))
        for tp, offset in current.items()
    ]
    await groups.apply(bootstrap, group, changes)
    return changes


async def _retrying(call: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await asyncio.wait_for(call(), 30)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)
