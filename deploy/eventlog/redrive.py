"""Send dead letters back to the topic they came from, each once.

Progress lives in a consumer group of our own (`shop-redrive` by default) on the DLQ topic: a run
sends the records after the group's committed offset, waits for every acknowledgement, then
commits. A second run therefore sends nothing new. A crash between the acknowledgements and the
commit sends those records again on the next run; they keep their event ids, so the consumers'
inbox applies them once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from deploy.eventlog import reader
from deploy.eventlog.records import EventLogError, Headers, LogRecord

DEFAULT_GROUP = "shop-redrive"


@dataclass(frozen=True)
class Redrive:
    record: LogRecord
    topic: str
    partition: int | None
    headers: Headers

    def as_dict(self) -> dict[str, object]:
        return {
            "dlq_offset": self.record.offset,
            "to_topic": self.topic,
            "to_partition": self.partition,
            "event_id": self.record.header("event_id"),
            "event_type": self.record.header("event_type"),
            "reason": self.record.header("dlq.reason"),
            "error": self.record.header("dlq.error"),
        }


@dataclass
class RedriveReport:
    planned: list[Redrive] = field(default_factory=list)
    skipped: list[LogRecord] = field(default_factory=list)  # no dlq.source_topic header
    sent: int = 0


def plan_redrive(records: list[LogRecord], dlq_topic: str) -> tuple[list[Redrive], list[LogRecord]]:
    """Where each dead letter goes back to, with its dlq.* headers stripped."""
    plans: list[Redrive] = []
    skipped: list[LogRecord] = []
    for r in records:
        source = r.header("dlq.source_topic")
        if not source or source == dlq_topic:
            skipped.append(r)
            continue
        part = r.header("dlq.source_partition")
        plans.append(
            Redrive(
                r, source, int(part) if part and part.isdigit() else None, r.without_dlq_headers()
            )
        )
    return plans, skipped


async def redrive(
    bootstrap: str, dlq_topic: str, *, group: str = DEFAULT_GROUP, dry_run: bool = False
) -> RedriveReport:
    report = RedriveReport()
    async with reader.consumer(bootstrap, group_id=group) as kafka:
        tps = await reader.partitions_of(kafka, [dlq_topic])
        first = await kafka.beginning_offsets(tps)
        last = await kafka.end_offsets(tps)
        ranges: dict[TopicPartition, tuple[int, int]] = {}
        for tp in tps:
            done = await kafka.committed(tp)
            start = max(first[tp], done if done is not None else 0)
            if last[tp] > start:
                ranges[tp] = (start, last[tp])
        records = [r async for batch in reader.read_ranges(kafka, ranges) for r in batch]
        report.planned, report.skipped = plan_redrive(records, dlq_topic)
        if dry_run or not ranges:
            return report
        if report.planned:
            await _send(bootstrap, report.planned)
        report.sent = len(report.planned)
        await kafka.commit({tp: OffsetAndMetadata(hi, "") for tp, (_, hi) in ranges.items()})
    return report


async def _send(bootstrap: str, plans: list[Redrive]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    try:
        await producer.start()
    except (KafkaError, OSError) as exc:
        await producer.stop()
        raise EventLogError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    try:
        futures = [
            await producer.send(
                p.topic,
                value=p.record.value,
                key=p.record.key,
                headers=list(p.headers),
                partition=p.partition,
            )
            for p in plans
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
