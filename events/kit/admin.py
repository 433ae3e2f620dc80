"""Topics are declared in events.topics and created idempotently at start (auto-creation is off)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from events.topics import TopicSpec, all_topics, min_insync_for, replication_for


class TopicError(RuntimeError):
    """The broker cannot be reached, or refused to create a declared topic."""


@dataclass(frozen=True)
class TopicsReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    leaders_ready: bool
    replicas: int = 0  # the replication factor (of the first partition)
    under_replicated: int = 0  # partitions with fewer in-sync replicas than replicas


async def ensure_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec] | None = None,
    *,
    replication_factor: int | None = None,
    wait_s: float = 60,
    client: Mapping[str, Any] | None = None,
) -> TopicsReport:
    """Create the topics that are missing, with their configs, and wait until they have leaders.

    The replication factor is min(3, brokers in the cluster) unless given; with three replicas
    or more a topic also gets min.insync.replicas 2.
    `client` holds the security options of events.kit.kafkaconf.client_options.
    """
    wanted = {s.name: s for s in (all_topics() if specs is None else specs)}
    admin = await _admin(bootstrap, client)
    try:
        existing = set(await admin.list_topics())
        missing = [wanted[name] for name in sorted(wanted) if name not in existing]
        if missing:
            rf = replication_factor or replication_for(await _broker_count(admin))[0]
            isr = {"min.insync.replicas": str(min_insync_for(rf))} if rf > 1 else {}
            new = [
                NewTopic(s.name, s.partitions, rf, topic_configs=s.config() | isr) for s in missing
            ]
            response = await admin.create_topics(new, timeout_ms=int(wait_s * 1000))
            for topic, code, *rest in response.topic_errors:
                if code not in (0, TopicAlreadyExistsError.errno):
                    reason = rest[0] if rest and rest[0] else f"error code {code}"
                    raise TopicError(f"could not create topic {topic}: {reason}")
            await _wait_for_leaders(admin, [s.name for s in missing], wait_s)
        return TopicsReport(
            created=[s.name for s in missing],
            existing=sorted(n for n in wanted if n in existing),
        )
    finally:
        await admin.close()


async def cluster_replication_factor(
    bootstrap: str, client: Mapping[str, Any] | None = None
) -> int:
    """The replication factor ensure_topics gives new topics on this cluster: min(3, brokers)."""
    admin = await _admin(bootstrap, client)
    try:
        return replication_for(await _broker_count(admin))[0]
    finally:
        await admin.close()


async def _broker_count(admin: AIOKafkaAdminClient) -> int:
    """Brokers the cluster's metadata lists (those registered and not fenced)."""
    cluster = await admin.describe_cluster()
    return max(1, len(cluster.get("brokers", [])))


async def list_topics(
    bootstrap: str, *, internal: bool = False, client: Mapping[str, Any] | None = None
) -> list[TopicInfo]:
    """Every topic on the broker with its partition count, sorted by name."""
    admin = await _admin(bootstrap, client)
    try:
        described = await admin.describe_topics()
    finally:
        await admin.close()
    infos = [
        TopicInfo(
            t["topic"],
            len(t["partitions"]),
            _leaders_ready(t),
            len(t["partitions"][0]["replicas"]) if t["partitions"] else 0,
            sum(1 for p in t["partitions"] if len(p["isr"]) < len(p["replicas"])),
        )
        for t in described
        if internal or not t.get("is_internal", False)
    ]
    return sorted(infos, key=lambda t: t.name)


async def _admin(bootstrap: str, client: Mapping[str, Any] | None) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=30_000, **(client or {})
    )
    try:
        await admin.start()
    except (KafkaError, OSError) as e:
        await admin.close()
        raise TopicError(f"cannot reach Kafka at {bootstrap}: {e}") from None
    return admin


def _leaders_ready(topic: dict[str, Any]) -> bool:
    parts = topic["partitions"]
    return bool(parts) and all(p["leader"] >= 0 and p["error_code"] == 0 for p in parts)


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        described = await admin.describe_topics(names)
        if all(t["error_code"] == 0 and _leaders_ready(t) for t in described):
            return
        if time.monotonic() >= deadline:
            raise TopicError(f"topics {', '.join(names)} have no leaders after {wait_s:.0f}s")
        await asyncio.sleep(0.1)
