"""The audit passes on a real run's log and names the order or SKU of each injected violation."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta
from typing import Any

from deploy.eventlog.audit import AuditReport, audit
from deploy.eventlog.records import LogEvent, LogRecord, decode_records
from events.contracts import (
    CapturePayment,
    OrderPlaced,
    PaymentCaptured,
    PricedLine,
    StockLine,
    StockReserved,
)
from events.envelope import encode, headers_for, wrap
from events.messages import Message, Money
from tests.fixtures.eventlog import orders, recorded


def log() -> list[LogEvent]:
    events, _ = decode_records(list(recorded()))
    return events


def end_of(events: list[LogEvent]) -> datetime:
    return max(e.occurred_at for e in events)


def event(
    message: Message,
    *,
    topic: str,
    partition: int = 5,
    offset: int = 10_000,
    causation: LogEvent | None = None,
    at: datetime | None = None,
) -> LogEvent:
    env = wrap(message, producer="test", occurred_at=at)
    if causation is not None:
        env = env.model_copy(update={"causation_id": causation.event_id})
    record = LogRecord(
        topic,
        partition,
        offset,
        0,
        message.partition_key().encode(),
        encode(env),
        tuple(headers_for(env)),
    )
    return LogEvent(record, env)


def check(events: list[LogEvent], **kw: Any) -> AuditReport:
    return audit(events, now=end_of(events) + timedelta(seconds=1), **kw)


def test_the_recorded_run_passes_every_invariant() -> None:
    report = check(log())
    assert report.ok, report.violations
    assert report.outcomes["CONFIRMED"] == 7
    assert report.outcomes["REJECTED"] == 8
    assert report.outcomes["CANCELLED"] == 2
    assert report.skus == 2


def test_a_capture_without_a_confirmation_is_a_stray_charge_naming_the_order() -> None:
    events = log()
    order_id = uuid.uuid4()
    at = end_of(events) - timedelta(minutes=10)
    stray = event(
        PaymentCaptured(
            order_id=order_id, payment_id=uuid.uuid4(), amount=Money(amount=5, currency="USD")
        ),
        topic="payment.events",
        at=at,
    )
    report = check([*events, stray])
    assert not report.ok
    assert [(v.invariant, v.subject) for v in report.violations] == [
        ("no-stray-charge", str(order_id))
    ]


def test_a_capture_of_a_rejected_order_is_a_stray_charge() -> None:
    events = log()
    rejected = orders()["rejected"]
    captured = PaymentCaptured(
        order_id=uuid.UUID(rejected),
        payment_id=uuid.uuid4(),
        amount=Money(amount=1, currency="USD"),
    )
    report = check(
        [*events, event(captured, topic="payment.events", at=end_of(events) - timedelta(hours=1))]
    )
    assert report.subjects == [rejected]
    assert "Rejected" in report.violations[0].detail


def test_an_order_without_an_end_is_stuck_after_its_deadline_and_in_flight_before() -> None:
    events = log()
    now = end_of(events)
    order_id = uuid.uuid4()
    placed = OrderPlaced(
        order_id=order_id,
        customer_id="c",
        lines=(PricedLine(sku="X-1", quantity=1, unit_price=Money(amount=1, currency="USD")),),
        total=Money(amount=1, currency="USD"),
        placed_at=now - timedelta(seconds=60),
    )
    with_it = [*events, event(placed, topic="order.events", at=now - timedelta(seconds=60))]
    assert audit(with_it, now=now, deadline=timedelta(seconds=120)).outcomes["IN FLIGHT"] == 1
    late = audit(with_it, now=now, deadline=timedelta(seconds=30))
    assert [(v.invariant, v.subject) for v in late.violations] == [("terminal", str(order_id))]


def test_reserving_more_than_is_on_hand_is_an_oversell_naming_the_sku() -> None:
    events = log()
    sku = orders()["sku"]
    greedy = StockReserved(
        order_id=uuid.uuid4(), lines=(StockLine(sku=sku, quantity=500),), expires_at=end_of(events)
    )
    report = check([*events, event(greedy, topic="inventory.events", at=end_of(events))])
    assert [(v.invariant, v.subject) for v in report.violations] == [("no-oversell", sku)]
    assert "oversold" in report.violations[0].detail


def test_an_effect_before_its_cause_on_the_same_partition_breaks_per_order_order() -> None:
    events = log()
    placed = next(e for e in events if e.type == "OrderPlaced")
    p = placed.record
    early = dataclasses.replace(
        placed,
        record=dataclasses.replace(p, offset=p.offset - 1 if p.offset else 0),
    )
    cause = event(
        CapturePayment(
            order_id=uuid.UUID(placed.order_id or ""),
            amount=Money(amount=1, currency="USD"),
            idempotency_key="k",
        ),
        topic=p.topic,
        partition=p.partition,
        offset=p.offset + 50,
        at=placed.occurred_at - timedelta(seconds=1),
    )
    moved = [e for e in events if e is not placed] + [
        dataclasses.replace(
            early, envelope=early.envelope.model_copy(update={"causation_id": cause.event_id})
        ),
        cause,
    ]
    report = check(moved)
    assert ("per-order-order", placed.order_id) in [
        (v.invariant, v.subject) for v in report.violations
    ]


def test_an_event_whose_cause_is_missing_from_the_log_is_a_lost_event() -> None:
    events = log()
    reserved = next(e for e in events if e.type == "StockReserved")
    orphan = [e for e in events if e.event_id != reserved.envelope.causation_id]
    report = check(orphan)
    assert ("no-lost-events", reserved.order_id) in [
        (v.invariant, v.subject) for v in report.violations
    ]


def test_one_cause_producing_the_same_effect_twice_is_reported() -> None:
    events = log()
    captured = next(e for e in events if e.type == "PaymentCaptured")
    twin_env = captured.envelope.model_copy(update={"event_id": uuid.uuid4()})
    twin = LogEvent(
        dataclasses.replace(captured.record, offset=captured.record.offset + 100), twin_env
    )
    report = check([*events, twin])
    assert [(v.invariant, v.subject) for v in report.violations] == [
        ("applied-once", captured.order_id)
    ]


def test_a_republished_copy_of_one_event_is_not_a_violation() -> None:
    events = log()
    confirmed = next(e for e in events if e.type == "OrderConfirmed")
    copy = LogEvent(
        dataclasses.replace(confirmed.record, offset=confirmed.record.offset + 100),
        confirmed.envelope,
    )
    assert check([*events, copy]).ok
