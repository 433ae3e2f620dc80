"""Dead letters: a record that cannot be applied goes to `<topic>.dlq` with headers saying why."""

from __future__ import annotations

from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from events.topics import dlq_name

ERROR_HEADER_MAX = 2000
DLQ_HEADER_PREFIX = "dlq."


def dead_letter_headers(
    record: ConsumerRecord, *, consumer: str, reason: str, error: str, attempts: int
) -> list[tuple[str, bytes]]:
    original = [(k, v) for k, v in (record.headers or ()) if not k.startswith(DLQ_HEADER_PREFIX)]
    return [
        *original,
        ("dlq.reason", reason.encode()),
        ("dlq.error", error[:ERROR_HEADER_MAX].encode(errors="replace")),
        ("dlq.source_topic", record.topic.encode()),
        ("dlq.source_partition", str(record.partition).encode()),
        ("dlq.source_offset", str(record.offset).encode()),
        ("dlq.consumer", consumer.encode()),
        ("dlq.attempts", str(attempts).encode()),
        ("dlq.failed_at", datetime.now(UTC).isoformat().encode()),
    ]


async def send_to_dlq(
    producer: AIOKafkaProducer,
    record: ConsumerRecord,
    *,
    consumer: str,
    reason: str,
    error: str,
    attempts: int = 1,
) -> None:
    """Publish and wait for the acknowledgement, so the source offset may then be committed."""
    await producer.send_and_wait(
        dlq_name(record.topic),
        value=record.value,
        key=record.key,
        headers=dead_letter_headers(
            record, consumer=consumer, reason=reason, error=error, attempts=attempts
        ),
    )
