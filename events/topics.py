"""Every Kafka topic the platform uses, declared once: name, partitions, cleanup and retention."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FOREVER = -1
WEEK_MS = 7 * 24 * 3600 * 1000

TopicKind = Literal["event", "command", "compacted", "dlq"]


@dataclass(frozen=True)
class TopicSpec:
    name: str
    kind: TopicKind
    partitions: int
    consumed: bool = True

    @property
    def cleanup_policy(self) -> str:
        return "compact" if self.kind == "compacted" else "delete"

    @property
    def retention_ms(self) -> int:
        return WEEK_MS if self.kind == "command" else FOREVER

    @property
    def dlq(self) -> str:
        return dlq_name(self.name)

    def config(self) -> dict[str, str]:
        cfg = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}
        if self.kind == "compacted":
            cfg["min.compaction.lag.ms"] = "0"
        return cfg


# A cluster of three or more brokers: every topic on three of them, and a write acknowledged
# (acks=all) once two hold it, so one broker may be lost without losing or refusing a write.
CLUSTER_REPLICATION_FACTOR = 3
CLUSTER_MIN_ISR = 2


def min_insync_for(replication_factor: int) -> int:
    return CLUSTER_MIN_ISR if replication_factor >= CLUSTER_REPLICATION_FACTOR else 1


def replication_for(brokers: int) -> tuple[int, int]:
    """Replication factor and min.insync.replicas of topics on a cluster of `brokers` nodes."""
    rf = max(1, min(CLUSTER_REPLICATION_FACTOR, brokers))
    return rf, min_insync_for(rf)


def dlq_name(topic: str) -> str:
    return f"{topic}.dlq"


SAGA_PARTITIONS = 6

CATALOG_PRODUCTS = "catalog.products"
ORDER_EVENTS = "order.events"
INVENTORY_COMMANDS = "inventory.commands"
INVENTORY_EVENTS = "inventory.events"
PAYMENT_COMMANDS = "payment.commands"
PAYMENT_EVENTS = "payment.events"

BASE_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(CATALOG_PRODUCTS, "compacted", 3),
    TopicSpec(ORDER_EVENTS, "event", SAGA_PARTITIONS),
    TopicSpec(INVENTORY_COMMANDS, "command", SAGA_PARTITIONS),
    TopicSpec(INVENTORY_EVENTS, "event", SAGA_PARTITIONS),
    TopicSpec(PAYMENT_COMMANDS, "command", SAGA_PARTITIONS),
    TopicSpec(PAYMENT_EVENTS, "event", SAGA_PARTITIONS),
)


def all_topics(base: tuple[TopicSpec, ...] = BASE_TOPICS) -> list[TopicSpec]:
    """The declared topics plus a dead-letter sibling for every consumed one."""
    specs = list(base)
    specs += [TopicSpec(t.dlq, "dlq", 1, consumed=False) for t in base if t.consumed]
    return specs


def spec(name: str) -> TopicSpec:
    for t in all_topics():
        if t.name == name:
            return t
    raise KeyError(f"topic {name!r} is not declared in events.topics")
