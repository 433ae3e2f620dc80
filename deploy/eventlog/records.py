"""One Kafka record as the tools see it, and its envelope decoded when it has one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events.envelope import DecodeError, Envelope, decode_envelope
from events.kit.dlq import DLQ_HEADER_PREFIX

Headers = tuple[tuple[str, bytes], ...]


class EventLogError(RuntimeError):
    """A failure worth one line to the user: unknown topic, unreachable broker, bad file."""


@dataclass(frozen=True, slots=True)
class LogRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()

    @classmethod
    def from_consumer(cls, record: Any) -> LogRecord:
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value,
            tuple(record.headers or ()),
        )

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode(errors="replace")
        return None

    @property
    def is_dead_letter(self) -> bool:
        return any(k.startswith(DLQ_HEADER_PREFIX) for k, _ in self.headers)

    def without_dlq_headers(self) -> Headers:
        return tuple((k, v) for k, v in self.headers if not k.startswith(DLQ_HEADER_PREFIX))


@dataclass(frozen=True, slots=True)
class LogEvent:
    """A record whose value is a valid envelope."""

    record: LogRecord
    envelope: Envelope

    @property
    def event_id(self) -> uuid.UUID:
        return self.envelope.event_id

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def occurred_at(self) -> datetime:
        return self.envelope.occurred_at

    @property
    def order_id(self) -> str | None:
        value = self.envelope.payload.get("order_id")
        return str(value) if value is not None else None


def decode_records(records: list[LogRecord]) -> tuple[list[LogEvent], list[LogRecord]]:
    """The records that carry an envelope, and the ones that do not (poison, foreign data)."""
    events: list[LogEvent] = []
    undecodable: list[LogRecord] = []
    for record in records:
        try:
            events.append(LogEvent(record, decode_envelope(record.value)))
        except DecodeError:
            undecodable.append(record)
    return events, undecodable


def matches(record: LogRecord, *, types: set[str], correlation: str | None) -> bool:
    """Filter on the routing headers, so records are not parsed just to be skipped."""
    if types and record.header("event_type") not in types:
        return False
    return correlation is None or record.header("correlation_id") == correlation
