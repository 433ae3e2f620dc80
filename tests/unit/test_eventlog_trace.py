"""Trace order: causal chains depth first, siblings by time, copies after their original."""

from __future__ import annotations

import dataclasses
import random

from deploy.eventlog.records import LogEvent, decode_records
from deploy.eventlog.trace import causal_order, step_dict
from tests.fixtures.eventlog import orders, recorded


def of_order(order_id: str) -> list[LogEvent]:
    events, _ = decode_records(list(recorded()))
    return [e for e in events if e.envelope.correlation_id == order_id]


def test_a_declined_order_shows_its_compensations_after_the_decline() -> None:
    steps = causal_order(of_order(orders()["declined"]))
    types = [s.event.type for s in steps]
    assert types[:2] == ["OrderPlaced", "ReserveStock"]
    declined = types.index("PaymentDeclined")
    after = types[declined + 1 :]
    assert {"VoidPayment", "ReleaseReservation", "ReservationReleased", "OrderCancelled"} <= set(
        after
    )
    assert [s.event.type for s in steps if s.compensation] == [
        t
        for t in after
        if t in {"VoidPayment", "PaymentVoided", "ReleaseReservation", "ReservationReleased"}
    ]


def test_every_step_follows_its_cause_and_says_how_long_it_took() -> None:
    events = of_order(orders()["confirmed"])
    random.Random(4).shuffle(events)
    steps = causal_order(events)
    assert len(steps) == len(events)
    seen: set[object] = set()
    for step in steps:
        cause = step.event.envelope.causation_id
        if step.took is not None:
            assert cause in seen
            assert step.took.total_seconds() >= 0
        seen.add(step.event.event_id)
    assert steps[-1].event.type == "OrderConfirmed"


def test_a_dead_lettered_copy_follows_its_original_marked_with_the_reason() -> None:
    events = of_order(orders()["confirmed"])
    capture = next(e for e in events if e.type == "CapturePayment")
    r = capture.record
    dead = LogEvent(
        dataclasses.replace(
            r,
            topic=r.topic + ".dlq",
            partition=0,
            offset=0,
            headers=(
                *r.headers,
                ("dlq.reason", b"handler_failed"),
                ("dlq.failed_at", b"2030-01-01T00:00:00+00:00"),
            ),
        ),
        capture.envelope,
    )
    steps = causal_order([dead, *events])
    i = next(n for n, s in enumerate(steps) if s.event is capture)
    assert steps[i + 1].event is dead
    assert steps[i + 1].copy == "dead-lettered"
    assert step_dict(steps[i + 1])["dlq"] == {
        "reason": "handler_failed",
        "failed_at": "2030-01-01T00:00:00+00:00",
    }
