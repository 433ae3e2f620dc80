"""Topics are declared in events.topics and created idempotently at start (auto-creation is off)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from events.topics import TopicSpec, all_topics


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


async def ensure_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec] | None = None,
    *,
    replication_factor: int = 1,
    wait_s: float = 60,
) -> TopicsReport:
    """Create the topics that are missing, with their configs, and wait until they have leaders."""
    wanted = {s.name: s for s in (all_topics() if specs is None else specs)}
    admin = await _admin(bootstrap)
    try:
        existing = set(await admin.list_topics())
        missing = [wanted[name] for name in sorted(wanted) if name not in existing]
        if missing:
            new = [
                NewTopic(s.name, s.partitions, replication_factor, topic_configs=s.config())
                for s in missing
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


async def list_topics(bootstrap: str, *, internal: bool = False) -> list[TopicInfo]:
    """Every topic on the broker with its partition count, sorted by name."""
    admin = await _admin(bootstrap)
    try:
        described = await admin.describe_topics()
    finally:
        await admin.close()
    infos = [
        TopicInfo(t["topic"], len(t["partitions"]), _leaders_ready(t))
        for t in described
        if internal or not t.get("is_internal", False)
    ]
    return sorted(infos, key=lambda t: t.name)


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
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
