"""The chaos run's own platform: a Kafka broker behind a fault proxy, a PostgreSQL server, and the
five services (inventory and order twice over), all in one fresh folder and on ports of its own.

It never touches the session test stack: the harness kills and pauses what it runs here.
"""

from __future__ import annotations

import shutil
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.common import run_sync
from deploy.local.kafka import KafkaBroker
from deploy.local.postgres import LocalPostgres, create_databases, with_database
from deploy.local.services import SERVICES, ServiceDef, ServiceSupervisor
from deploy.local.topics import ensure_topics
from events.topics import all_topics
from tests.faults.proxy import FaultProxy
from tests.ports import free_port as free_port

REPLICAS = {"inventory_service": 2, "order_service": 2}
DATABASE_PREFIX = "chaos_"


@dataclass(frozen=True)
class Ports:
    kafka: int
    controller: int
    proxy: int
    postgres: int

    @classmethod
    def from_base(cls, base: int | None) -> Ports:
        """Four consecutive ports from base, or four free ones chosen by the kernel."""
        if base is None:
            return cls(free_port(), free_port(), free_port(), free_port())
        return cls(base, base + 1, base + 2, base + 3)


def service_env(group_prefix: str) -> dict[str, str]:
    """Short saga deadlines so a stalled order ends soon after healing; gateway timeouts short."""
    env = {
        "ORDER_STOCK_DEADLINE_S": "20",
        "ORDER_PAYMENT_DEADLINE_S": "20",
        "ORDER_CONFIRM_DEADLINE_S": "20",
        "ORDER_DEADLINE_SCAN_MS": "500",
        "INVENTORY_RESERVATION_TTL_S": "25",
        "INVENTORY_EXPIRY_SCAN_MS": "500",
        "PAYMENT_GATEWAY_TIMEOUT_MS": "800",
        "PAYMENT_GATEWAY_SEED": "7",
    }
    for svc in SERVICES:
        env[f"{svc.prefix}CONSUMER_GROUP_PREFIX"] = group_prefix
        env[f"{svc.prefix}LOG_LEVEL"] = "INFO"
        # One client posts every order; rate limits have their own tests.
        env[f"{svc.prefix}RATE_LIMIT"] = "100000/second"
    return env


@dataclass
class ChaosPlatform:
    root: Path
    ports: Ports
    group_prefix: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:6]}-")
    broker: KafkaBroker = field(init=False)
    postgres: LocalPostgres = field(init=False)
    proxy: FaultProxy = field(init=False)
    services: ServiceSupervisor = field(init=False)
    # The services' environment: the harness changes it (the gateway's settings) between starts.
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.broker = KafkaBroker(
            data_dir=self.root / "kafka",
            port=self.ports.kafka,
            controller_port=self.ports.controller,
            advertised_port=self.ports.proxy,
        )
        self.postgres = LocalPostgres(data_dir=self.root / "postgres", port=self.ports.postgres)
        self.proxy = FaultProxy(self.ports.proxy, self.ports.kafka)
        self.env = service_env(self.group_prefix)
        self.services = ServiceSupervisor(
            kafka_bootstrap=self.bootstrap,
            database_url=self.database_url,
            data_dir=self.root / "services",
            ports={
                s.package: [free_port() for _ in range(REPLICAS.get(s.package, 1))]
                for s in SERVICES
            },
            env=self.env,
            replicas=REPLICAS,
        )

    @property
    def bootstrap(self) -> str:
        """Where every client connects: the proxy, which the broker also advertises."""
        return self.proxy.address

    def database_url(self, name: str) -> str:
        return with_database(self.postgres.admin_url, DATABASE_PREFIX + name)

    def group(self, consumer: str) -> str:
        return self.group_prefix + consumer

    def replicas(self, svc: ServiceDef) -> list[int]:
        return list(range(self.services.replica_count(svc)))

    def start(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        self.proxy.start()
        self.broker.launch()
        self.postgres.start()
        run_sync(
            create_databases(
                self.postgres.admin_url, [DATABASE_PREFIX + s.database for s in SERVICES]
            )
        )
        self.broker.wait_ready(timeout=180)
        run_sync(ensure_topics(self.bootstrap, all_topics()))
        self.services.start_all(timeout=240)

    def stop(self) -> None:
        """Stop everything this platform started; safe to call more than once."""
        self.proxy.heal()
        for svc in SERVICES:
            for k in self.services.replica_ids(svc):
                pid = self.services.pid(svc.package, k)
                if pid is not None:
                    # A paused process would ignore SIGTERM until its deadline.
                    self.services.send_signal(svc.package, signal.SIGCONT, k)
        for svc in reversed(SERVICES):
            self.services.stop(svc.package, timeout=5)
        self.broker.stop()
        self.postgres.stop()
        self.proxy.stop()
