"""Kafka and PostgreSQL together: what `shop infra up` and the test fixture start."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.common import DEFAULT_DATA_DIR, ServiceStatus, ensure_port_free, run_sync
from deploy.local.kafka import DEFAULT_PORT as KAFKA_PORT
from deploy.local.kafka import KafkaCluster
from deploy.local.postgres import DEFAULT_PORT as PG_PORT
from deploy.local.postgres import LocalPostgres
from deploy.local.topics import TopicsReport, ensure_topics
from events.topics import TopicSpec, all_topics, replication_for

SERVICE_DATABASES = ("order", "inventory", "payment", "catalog", "analytics")


def _quiet(_: str) -> None:
    pass


@dataclass
class LocalStack:
    data_dir: Path = DEFAULT_DATA_DIR
    kafka_port: int = KAFKA_PORT
    kafka_controller_port: int | None = None
    pg_port: int = PG_PORT
    # Kafka nodes; None: as many as were last started from data_dir (1 the first time).
    brokers: int | None = None
    kafka: KafkaCluster = field(init=False)
    postgres: LocalPostgres = field(init=False)

    def __post_init__(self) -> None:
        kafka_dir = self.data_dir / "kafka"
        self.kafka = KafkaCluster(
            data_dir=kafka_dir,
            brokers=self.brokers or KafkaCluster.recorded_size(kafka_dir),
            port=self.kafka_port,
            controller_port=self.kafka_controller_port,
        )
        self.postgres = LocalPostgres(data_dir=self.data_dir / "postgres", port=self.pg_port)

    def up(
        self,
        *,
        databases: Iterable[str] = SERVICE_DATABASES,
        topics: Iterable[TopicSpec] | None = None,
        timeout: float = 120,
        step: Callable[[str], None] = _quiet,
    ) -> TopicsReport:
        """Start both (or find them running), then create the missing databases and topics."""
        self.preflight()
        step("starting Kafka")
        self.kafka.launch()
        step("starting PostgreSQL")
        self.postgres.start(timeout=min(timeout, 60))
        step("creating databases")
        self.postgres.create_databases(databases)
        step(f"waiting for Kafka on {self.kafka.bootstrap}")
        self.kafka.wait_ready(timeout)
        step("creating topics")
        specs = all_topics() if topics is None else list(topics)
        rf = replication_for(self.kafka.brokers)[0]
        return run_sync(ensure_topics(self.kafka.bootstrap, specs, replication_factor=rf))

    def preflight(self) -> None:
        """Fail before starting anything when a port the stack needs is taken."""
        for node in self.kafka.nodes:
            if node.running_pid() is None:
                ensure_port_free(node.host, node.port, node.name)
                ensure_port_free(node.host, node.cport, f"{node.name} controller")
        if self.postgres.running_pid() is None:
            ensure_port_free(self.postgres.host, self.postgres.port, "PostgreSQL")

    def down(self) -> dict[str, bool]:
        """Stop Kafka's nodes and PostgreSQL; says which of them were running."""
        return self.kafka.stop() | {"postgres": self.postgres.stop()}

    def status(self) -> list[ServiceStatus]:
        return [*self.kafka.status(), self.postgres.status()]
