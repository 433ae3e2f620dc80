"""Topics are declared in events.topics and created idempotently at start."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from events.kit.logging import get_logger
from events.topics import TopicSpec, all_topics

log = get_logger(__name__)


async def ensure_topics(
    bootstrap_servers: str,
    specs: Sequence[TopicSpec] | None = None,
    *,
    replication_factor: int = 1,
) -> list[str]:
    """Create the declared topics that are missing; return the names created."""
    specs = list(specs if specs is not None else all_topics())
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="shop-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        new = [
            NewTopic(s.name, s.partitions, replication_factor, topic_configs=s.config())
            for s in missing
        ]
        try:
            response = await admin.create_topics(new)
        except TopicAlreadyExistsError:
            return []
        created = []
        for topic, code, *_ in getattr(response, "topic_errors", ()):
            if code == 0:
                created.append(topic)
            elif code != TopicAlreadyExistsError.errno:
                raise RuntimeError(f"could not create topic {topic}: error code {code}")
        if created:
            log.info("topics created", topics=created)
        return created
    finally:
        await admin.close()
