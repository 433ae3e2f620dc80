"""The invariants of the design brief, checked over the log itself: pure functions of its events.

- no-oversell: per SKU, replaying the inventory events (anchored at each restock's
  StockLevelChanged) never takes reserved or available below zero, and each restock snapshot agrees
  with the replay (reserved equal; on hand grown by the restock's quantity).
- no-stray-charge: every PaymentCaptured belongs to an order with OrderConfirmed or PaymentRefunded.
- terminal: every OrderPlaced reaches OrderConfirmed, OrderRejected or OrderCancelled, or is still
  within its deadline.
- per-order-order: an order's records on one topic share a partition, and along every causal
  chain the offsets on that partition increase.
- no-lost-events: every causation id refers to an event in the log (causes older than the command
  topics' retention excepted); applied-once: no cause produced the same effect twice.

Orders still in flight (younger than the deadline) are not judged for a missing confirmation.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson

from deploy.eventlog.records import LogEvent
from events.contracts import (
    REGISTRY,
    OrderPlaced,
    OrderRestocked,
    ReservationCommitted,
    ReservationExpired,
    ReservationReleased,
    Restock,
    StockLevelChanged,
    StockReserved,
)
from events.envelope import DecodeError, open_envelope
from events.messages import Message
from events.topics import WEEK_MS

TERMINAL_TYPES = frozenset({"OrderConfirmed", "OrderRejected", "OrderCancelled"})
COMMAND_RETENTION = timedelta(milliseconds=WEEK_MS)


@dataclass(frozen=True, order=True)
class Violation:
    invariant: str
    subject: str  # the order id, or the SKU for stock
    detail: str


@dataclass
class AuditReport:
    events: int = 0
    dead_letters: int = 0
    undecodable: int = 0
    skus: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def subjects(self) -> list[str]:
        return sorted({v.subject for v in self.violations})

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "events": self.events,
            "dead_letters": self.dead_letters,
            "undecodable": self.undecodable,
            "skus": self.skus,
            "orders": dict(sorted(self.outcomes.items())),
            "violations": [v.__dict__ for v in sorted(self.violations)],
        }


@dataclass(frozen=True)
class _Typed:
    event: LogEvent
    message: Message


def audit(
    events: list[LogEvent],
    *,
    now: datetime,
    deadline: timedelta = timedelta(seconds=120),
) -> AuditReport:
    report = AuditReport()
    live = [e for e in events if not e.record.is_dead_letter]
    report.dead_letters = len(events) - len(live)
    first: dict[uuid.UUID, LogEvent] = {}
    for e in sorted(live, key=lambda e: (e.occurred_at, e.record.offset)):
        first.setdefault(e.event_id, e)
    typed: list[_Typed] = []
    for e in first.values():
        try:
            typed.append(_Typed(e, open_envelope(e.envelope, REGISTRY)))
        except DecodeError:
            report.undecodable += 1
    report.events = len(typed)
    stock_violations, report.skus = _stock(typed)
    found = [
        *stock_violations,
        *_orders(typed, report, now=now, deadline=deadline),
        *_per_order_order(live, first),
        *_lost_and_twice(first, now=now),
    ]
    report.violations = sorted(set(found))
    return report


def _is_stock(m: Message) -> bool:
    return isinstance(
        m,
        StockReserved
        | ReservationCommitted
        | ReservationReleased
        | ReservationExpired
        | OrderRestocked
        | StockLevelChanged,
    )


@dataclass
class _Level:
    on_hand: int
    reserved: int


def _stock(typed: list[_Typed]) -> tuple[list[Violation], int]:
    levels: dict[str, _Level] = {}
    broken: set[str] = set()
    out: list[Violation] = []

    def fail(sku: str, detail: str) -> None:
        if sku not in broken:
            broken.add(sku)
            out.append(Violation("no-oversell", sku, detail))

    restocks = {
        t.event.event_id: t.message.quantity for t in typed if isinstance(t.message, Restock)
    }
    ordered = sorted(typed, key=lambda t: (t.event.occurred_at, t.event.record.offset))
    for t in ordered:
        m = t.message
        if isinstance(m, StockLevelChanged):
            level = levels.get(m.sku)
            if level is not None:
                if m.reserved != level.reserved:
                    fail(
                        m.sku,
                        f"restock shows {m.reserved} reserved; the log gives {level.reserved}",
                    )
                cause = t.event.envelope.causation_id
                grew = m.on_hand - level.on_hand
                if cause in restocks and grew != restocks[cause]:
                    fail(m.sku, f"restock of {restocks[cause]} moved on hand by {grew}")
                elif grew < 0:
                    fail(m.sku, f"on hand fell by {-grew} without a sale in the log")
            levels[m.sku] = _Level(m.on_hand, m.reserved)
            continue
        if not _is_stock(m):
            continue
        sign = {StockReserved: (0, 1), ReservationCommitted: (-1, -1), OrderRestocked: (1, 0)}.get(
            type(m), (0, -1)
        )
        for line in m.lines:  # type: ignore[attr-defined]
            level = levels.get(line.sku)
            if level is None:
                continue  # the log starts after this SKU's first restock: nothing to anchor on
            level.on_hand += sign[0] * line.quantity
            level.reserved += sign[1] * line.quantity
            order = getattr(m, "order_id", "?")
            if level.reserved < 0:
                fail(line.sku, f"reserved went to {level.reserved} at {m.type_name()} of {order}")
            elif level.on_hand - level.reserved < 0:
                fail(
                    line.sku,
                    f"oversold: available went to {level.on_hand - level.reserved} at "
                    f"{m.type_name()} of order {order}",
                )
    return out, len(levels)


def _orders(
    typed: list[_Typed], report: AuditReport, *, now: datetime, deadline: timedelta
) -> list[Violation]:
    placed: dict[str, OrderPlaced] = {}
    ends: dict[str, str] = {}
    captured: dict[str, datetime] = {}
    refunded: set[str] = set()
    for t in typed:
        order = t.event.order_id
        if order is None:
            continue
        kind = t.event.type
        if isinstance(t.message, OrderPlaced):
            placed[order] = t.message
        elif kind in TERMINAL_TYPES:
            ends.setdefault(order, kind)
        elif kind == "PaymentCaptured":
            captured.setdefault(order, t.event.occurred_at)
        elif kind == "PaymentRefunded":
            refunded.add(order)
    out: list[Violation] = []
    for order, msg in placed.items():
        end = ends.get(order)
        if end is not None:
            report.outcomes[end.removeprefix("Order").upper()] += 1
        elif now - msg.placed_at <= deadline:
            report.outcomes["IN FLIGHT"] += 1
        else:
            report.outcomes["STUCK"] += 1
            age = (now - msg.placed_at).total_seconds()
            out.append(
                Violation("terminal", order, f"placed {age:.0f}s ago and never reached an end")
            )
    for order, at in captured.items():
        if ends.get(order) == "OrderConfirmed" or order in refunded:
            continue
        if now - at <= deadline:
            continue
        status = ends.get(order, "no end").removeprefix("Order")
        out.append(Violation("no-stray-charge", order, f"captured, not refunded, order {status}"))
    return out


def _per_order_order(live: list[LogEvent], first: dict[uuid.UUID, LogEvent]) -> list[Violation]:
    out: list[Violation] = []
    partitions: dict[tuple[str, str], set[int]] = defaultdict(set)
    for e in live:
        if e.order_id is not None:
            partitions[(e.order_id, e.record.topic)].add(e.record.partition)
    for (order, topic), parts in partitions.items():
        if len(parts) > 1:
            out.append(
                Violation("per-order-order", order, f"on {len(parts)} partitions of {topic}")
            )
    for e in first.values():
        if e.order_id is None:
            continue
        cause_id = e.envelope.causation_id
        hops = 0
        while cause_id is not None and cause_id in first and hops < 100:
            cause = first[cause_id]
            if (
                cause.record.topic == e.record.topic
                and cause.record.partition == e.record.partition
                and cause.record.offset >= e.record.offset
            ):
                out.append(
                    Violation(
                        "per-order-order",
                        e.order_id,
                        f"{e.type} at {e.record.topic}[{e.record.partition}]@{e.record.offset} "
                        f"precedes its cause {cause.type} at offset {cause.record.offset}",
                    )
                )
                break
            cause_id = cause.envelope.causation_id
            hops += 1
    return out


def _lost_and_twice(first: dict[uuid.UUID, LogEvent], *, now: datetime) -> list[Violation]:
    out: list[Violation] = []
    effects: dict[tuple[uuid.UUID, str, bytes], list[LogEvent]] = defaultdict(list)
    for e in first.values():
        cause = e.envelope.causation_id
        if cause is None:
            continue
        subject = e.order_id or e.envelope.correlation_id
        if cause not in first and now - e.occurred_at < COMMAND_RETENTION:
            out.append(
                Violation(
                    "no-lost-events",
                    subject,
                    f"{e.type} {e.event_id} names a cause {cause} not in the log",
                )
            )
        payload = orjson.dumps(e.envelope.payload, option=orjson.OPT_SORT_KEYS)
        effects[(cause, e.type, payload)].append(e)
    for (cause, kind, _), same in effects.items():
        if len(same) > 1:
            subject = same[0].order_id or same[0].envelope.correlation_id
            out.append(
                Violation(
                    "applied-once", subject, f"{kind} emitted {len(same)} times for cause {cause}"
                )
            )
    return out
