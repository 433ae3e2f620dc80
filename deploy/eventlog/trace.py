"""One order's messages across every topic, in causal order, with the time each step took."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from deploy.eventlog.records import LogEvent

# Commands and events the saga sends to undo an earlier step.
COMPENSATIONS = frozenset(
    {
        "ReleaseReservation",
        "RestockOrder",
        "VoidPayment",
        "RefundPayment",
        "ReservationReleased",
        "OrderRestocked",
        "PaymentVoided",
        "PaymentRefunded",
    }
)


@dataclass(frozen=True)
class Step:
    event: LogEvent
    depth: int
    took: timedelta | None  # since the cause (or, for a copy, since the first copy)
    copy: str | None = None  # "dead-lettered" or "duplicate" for repeated records of one event

    @property
    def compensation(self) -> bool:
        return self.event.type in COMPENSATIONS


def _key(e: LogEvent) -> tuple[datetime, str, int, int]:
    return (e.occurred_at, e.record.topic, e.record.partition, e.record.offset)


def causal_order(events: list[LogEvent]) -> list[Step]:
    """Depth-first from the roots (no cause, or a cause outside the set), siblings by time.

    One event may appear more than once: republished after a crash, or copied into a DLQ. The
    first copy takes its place in the chain; the others follow it, marked.
    """
    first: dict[uuid.UUID, LogEvent] = {}
    copies: dict[uuid.UUID, list[LogEvent]] = defaultdict(list)
    for e in sorted(events, key=lambda e: (e.record.is_dead_letter, _key(e))):
        if e.event_id in first:
            copies[e.event_id].append(e)
        else:
            first[e.event_id] = e
    children: dict[uuid.UUID | None, list[LogEvent]] = defaultdict(list)
    for e in first.values():
        cause = e.envelope.causation_id
        children[cause if cause in first else None].append(e)
    steps: list[Step] = []
    seen: set[uuid.UUID] = set()

    def visit(e: LogEvent, depth: int, parent: LogEvent | None) -> None:
        if e.event_id in seen:  # a cycle would be a corrupt log; show each event once
            return
        seen.add(e.event_id)
        took = e.occurred_at - parent.occurred_at if parent else None
        steps.append(Step(e, depth, took))
        for c in copies.get(e.event_id, []):
            kind = "dead-lettered" if c.record.is_dead_letter else "duplicate"
            steps.append(Step(c, depth, _copy_delay(e, c), kind))
        for child in sorted(children.get(e.event_id, []), key=_key):
            visit(child, depth + 1, e)

    for root in sorted(children.get(None, []), key=_key):
        visit(root, 0, None)
    return steps


def _copy_delay(original: LogEvent, copy: LogEvent) -> timedelta | None:
    failed_at = copy.record.header("dlq.failed_at")
    if failed_at:
        try:
            return datetime.fromisoformat(failed_at) - original.occurred_at
        except ValueError:
            return None
    return timedelta(milliseconds=copy.record.timestamp - original.record.timestamp)


def step_dict(step: Step) -> dict[str, object]:
    e = step.event
    out: dict[str, object] = {
        "depth": step.depth,
        "type": e.type,
        "event_id": str(e.event_id),
        "causation_id": str(e.envelope.causation_id) if e.envelope.causation_id else None,
        "occurred_at": e.occurred_at.isoformat(),
        "took_ms": round(step.took.total_seconds() * 1000, 1) if step.took is not None else None,
        "producer": e.envelope.producer,
        "topic": e.record.topic,
        "partition": e.record.partition,
        "offset": e.record.offset,
        "compensation": step.compensation,
        "copy": step.copy,
        "payload": e.envelope.payload,
    }
    if e.record.is_dead_letter:
        out["dlq"] = {
            k[4:]: v.decode(errors="replace") for k, v in e.record.headers if k.startswith("dlq.")
        }
    return out
