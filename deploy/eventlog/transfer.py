"""Export a topic range to a file, and import a file into (prefixed) topics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from deploy.eventlog import fileformat, reader
from deploy.eventlog.fileformat import TopicLayout
from deploy.eventlog.reader import Bound
from deploy.eventlog.records import EventLogError, LogRecord

Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class TransferStats:
    records: int = 0
    seconds: float = 0.0
    per_topic: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def count(self, batch: list[LogRecord]) -> None:
        self.records += len(batch)
        for r in batch:
            self.per_topic[r.topic] = self.per_topic.get(r.topic, 0) + 1


async def export(
    bootstrap: str,
    topics: Iterable[str],
    out: Path,
    *,
    start: Bound = reader.EARLIEST,
    end: Bound = reader.LATEST,
    progress: Progress | None = None,
) -> TransferStats:
    names = list(dict.fromkeys(topics))
    started = time.perf_counter()
    stats = TransferStats()
    layouts = await reader.topic_layouts(bootstrap, names)
    async with reader.consumer(bootstrap) as kafka:
        ranges = await reader.resolve(kafka, names, start, end)
        total = sum(hi - lo for lo, hi in ranges.values())
        with fileformat.open_for_writing(out) as f:
            f.write(fileformat.header_line(layouts))
            async for batch in reader.read_ranges(kafka, ranges):
                f.write(fileformat.encode_lines(batch))
                stats.count(batch)
                if progress:
                    progress(stats.records, total)
    stats.seconds = time.perf_counter() - started
    return stats


def prefixed(prefix: str, topic: str) -> str:
    return prefix + topic


async def create_topics(bootstrap: str, layouts: dict[str, TopicLayout]) -> list[str]:
    """Create the topics that are missing, with the same partitions and configs; wait for leaders.

    An existing topic with fewer partitions than the file needs is refused: records could not
    keep their partition numbers.
    """
    async with reader.admin(bootstrap) as client:
        existing = {t["topic"]: t for t in await client.describe_topics(list(layouts))}
        created: list[str] = []
        new: list[NewTopic] = []
        for name, layout in layouts.items():
            found = existing.get(name)
            if found is not None and found["error_code"] == 0:
                if len(found["partitions"]) < layout.partitions:
                    raise EventLogError(
                        f"topic {name} has {len(found['partitions'])} partitions; "
                        f"the file needs {layout.partitions}"
                    )
                continue
            new.append(NewTopic(name, layout.partitions, 1, topic_configs=dict(layout.config)))
        if new:
            response = await client.create_topics(new, timeout_ms=30_000)
            for topic, code, *rest in response.topic_errors:
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise EventLogError(
                        f"could not create topic {topic}: {rest[0] if rest else code}"
                    )
                created.append(topic)
            deadline = time.monotonic() + 30
            while True:
                described = await client.describe_topics([t.name for t in new])
                if all(
                    t["error_code"] == 0
                    and t["partitions"]
                    and all(p["leader"] >= 0 for p in t["partitions"])
                    for t in described
                ):
                    break
                if time.monotonic() > deadline:
                    raise EventLogError("created topics have no leaders after 30s")
                await asyncio.sleep(0.1)
    return created


async def import_file(
    bootstrap: str,
    path: Path,
    *,
    topic_prefix: str = "",
    progress: Progress | None = None,
) -> tuple[TransferStats, list[str]]:
    """Write every record of the file to `prefix + topic`, same partition, in file order."""
    export_file = fileformat.read_export(path)
    layouts = {prefixed(topic_prefix, n): t for n, t in export_file.layouts.items()}
    created = await create_topics(bootstrap, layouts)
    started = time.perf_counter()
    stats = TransferStats()
    # One in-flight request per partition keeps each partition's order even on retries.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    try:
        await producer.start()
    except (KafkaError, OSError) as exc:
        await producer.stop()
        raise EventLogError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    total = fileformat.count_records(path)
    try:
        for batch in export_file.records():
            futures = [
                await producer.send(
                    prefixed(topic_prefix, r.topic),
                    value=r.value,
                    key=r.key,
                    headers=list(r.headers),
                    partition=r.partition,
                    timestamp_ms=r.timestamp,
                )
                for r in batch
            ]
            await asyncio.gather(*futures)
            stats.count(batch)
            if progress:
                progress(stats.records, total)
    finally:
        await producer.stop()
    stats.seconds = time.perf_counter() - started
    return stats, created
