"""The events the analytics fold has no figure for: passed over unread by the fold, and dropped
by the worker's consumer thread before faust sees them; the rest handed to faust in bundles."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from analytics_service.fold import FOLDED, Fold, passed_over
from analytics_service.settings import Settings
from analytics_service.stream import AnalyticsStream
from analytics_service.transport import BUFFERED_BUNDLES, Bundle, bundled, committable
from events.contracts import (
    OrderPlaced,
    OrderStatusChanged,
    PaymentCaptured,
    PricedLine,
    ReservationCommitted,
    StockReserved,
)
from events.envelope import encode, headers_for, wrap
from events.messages import Message, Money
from events.topics import ORDER_EVENTS

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
ORDER = uuid.UUID("00000000-0000-7000-8000-000000000001")


def placed(at: datetime) -> OrderPlaced:
    price = Money(amount=500, currency="USD")
    return OrderPlaced(
        order_id=ORDER,
        customer_id="c-1",
        lines=(PricedLine(sku="A-1", quantity=1, unit_price=price),),
        total=price,
        placed_at=at,
    )


def status_changed() -> OrderStatusChanged:
    return OrderStatusChanged(order_id=ORDER, status="STOCK_RESERVED", previous_status="PENDING")


def wire(message: Message, at: datetime) -> tuple[bytes, list[tuple[str, bytes]]]:
    envelope = wrap(message, producer="unit", occurred_at=at)
    return encode(envelope), headers_for(envelope)


def record(offset: int, headers: list[tuple[str, bytes]]) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(
        topic=ORDER_EVENTS,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=b"{}",
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=2,
        headers=tuple(headers),
    )


def test_the_fold_reads_the_types_it_has_figures_for_and_passes_over_the_saga_steps() -> None:
    assert {"OrderPlaced", "OrderConfirmed", "PaymentAuthorized", "StockRejected"} <= FOLDED
    for step in (status_changed(), ReservationCommitted(order_id=ORDER, lines=())):
        assert passed_over(wire(step, T0)[1])
    assert not passed_over(wire(placed(T0), T0)[1])
    assert not passed_over([("origin", b"test")])  # no type header: read to find out


def test_a_passed_over_record_counts_as_read_but_moves_neither_the_watermark_nor_a_table() -> None:
    fold = Fold(grace_ms=60_000)
    raw, headers = wire(status_changed(), T0 + timedelta(hours=1))
    assert fold.apply(ORDER_EVENTS, 0, 7, raw, headers) == "OrderStatusChanged"
    assert fold.positions == {f"{ORDER_EVENTS}/0": 8}
    assert dict(fold.watermarks) == {}
    assert fold.undecodable == 0
    # a record of such a type without headers is decoded, and passed over all the same
    assert fold.apply(ORDER_EVENTS, 0, 8, raw) == "OrderStatusChanged"
    assert dict(fold.watermarks) == {}
    assert dict(fold.orders) == {}
    # so an order placed at T0 is on time, however far ahead the passed-over events were
    assert fold.apply(ORDER_EVENTS, 0, 9, *wire(placed(T0), T0)) == "OrderPlaced"
    assert fold.late == 0
    assert fold.watermarks[f"{ORDER_EVENTS}/0"] == int(T0.timestamp() * 1000)
    assert str(ORDER) in fold.orders


def test_a_header_is_trusted_only_to_pass_over_a_record_a_folded_type_is_decoded() -> None:
    fold = Fold(grace_ms=60_000)
    raw, _ = wire(placed(T0), T0)
    assert fold.apply(ORDER_EVENTS, 0, 0, b"not json", [("event_type", b"OrderPlaced")]) is None
    assert fold.undecodable == 1
    assert fold.apply(ORDER_EVENTS, 0, 1, raw, [("event_type", b"OrderPlaced")]) == "OrderPlaced"
    assert str(ORDER) in fold.orders


def offsets(handed: list[ConsumerRecord[Any, Any]]) -> list[tuple[int, list[int], int]]:
    """Each record handed to faust: its offset, the offsets in its bundle, the bundle's end."""
    return [(r.offset, [b.offset for b in r.value.records], r.value.end) for r in handed]


def test_the_consumer_thread_hands_faust_a_bundle_per_partition_and_fetch() -> None:
    reserved = wire(StockReserved(order_id=ORDER, lines=(), expires_at=T0), T0)[1]
    money = Money(amount=500, currency="USD")
    captured = wire(PaymentCaptured(order_id=ORDER, payment_id=ORDER, amount=money), T0)[1]
    folded = wire(placed(T0), T0)[1]
    kinds = [reserved, reserved, reserved, folded, captured, [], captured, folded, reserved]
    # from offset 0: 0 carries the bundle (3, 7, and 5, which has no type header), 1 follows
    # (faust notes gaps only after an offset above 0), 8 is the last
    records = [record(offset, headers) for offset, headers in enumerate(kinds)]
    assert offsets(bundled(records, passed_over)) == [(0, [3, 5, 7], 9), (1, [], 9), (8, [], 9)]
    later = [record(100 + i, headers) for i, headers in enumerate(kinds)]
    assert offsets(bundled(later, passed_over)) == [(100, [103, 105, 107], 109), (108, [], 109)]
    # the records are the fetched ones, untouched
    handed = bundled(later, passed_over)
    assert handed[0].value.records == (later[3], later[5], later[7])
    assert handed[0].headers == later[0].headers
    assert later[0].value == b"{}"
    # a fetch of one record, or two, is handed on whole; one whose last record is read too
    assert offsets(bundled(later[3:4], passed_over)) == [(103, [103], 104)]
    assert offsets(bundled(later[:2], passed_over)) == [(100, [], 102), (101, [], 102)]
    assert offsets(bundled(later[:8], passed_over)) == [
        (100, [103, 105, 107], 108),
        (107, [], 108),
    ]
    assert offsets(bundled(records[:1], passed_over)) == [(0, [], 1)]
    assert bundled([], passed_over) == []


def test_a_bundle_covers_a_bounded_number_of_fetched_records() -> None:
    """So what faust buffers (a bounded number of bundles) stays bounded in records."""
    folded = wire(placed(T0), T0)[1]
    skipped = wire(status_changed(), T0)[1]
    kinds = [folded, skipped, skipped, folded, folded, skipped, skipped]
    later = [record(100 + i, headers) for i, headers in enumerate(kinds)]
    assert offsets(bundled(later, passed_over, most=3)) == [
        (100, [100], 103),
        (103, [103, 104], 106),
        (106, [], 107),
    ]
    assert offsets(bundled(later[:6], passed_over, most=3)) == [
        (100, [100], 103),
        (103, [103, 104], 106),
        (105, [], 106),
    ]
    start = [record(i, headers) for i, headers in enumerate(kinds)]
    assert offsets(bundled(start, passed_over, most=3)) == [
        (0, [0], 3),
        (1, [], 3),
        (3, [3, 4], 6),
        (6, [], 7),
    ]
    assert offsets(bundled(start[:2], passed_over, most=1)) == [(0, [0], 1), (1, [], 2)]
    # every record the fold reads is in exactly one bundle, at or after the record carrying it
    for most in range(1, 9):
        handed = bundled(later, passed_over, most=most)
        carried = [(h.offset, r.offset) for h in handed for r in h.value.records]
        assert sorted(r for _, r in carried) == [100, 103, 104]
        assert all(h <= r for h, r in carried)
        assert handed[-1].offset == 106


async def test_the_workers_consumer_thread_bundles_the_source_topics_not_the_changelogs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folded = wire(placed(T0), T0)[1]
    skipped = wire(status_changed(), T0)[1]
    source, changelog = TP(ORDER_EVENTS, 0), TP("analytics-orders-changelog", 0)
    changes = [dataclasses.replace(record(i, []), topic=changelog.topic) for i in range(3)]
    fetched = {
        source: [record(10 + i, h) for i, h in enumerate([skipped, folded, skipped])],
        changelog: changes,  # read on recovery: each record as it is
    }

    async def fetch(*args: Any, **kwargs: Any) -> dict[TP, list[Any]]:
        return fetched

    monkeypatch.setattr(AIOKafkaConsumerThread, "_fetch_records", fetch)
    app = AnalyticsStream(Settings(data_dir=tmp_path)).build()
    thread = app.consumer._thread
    try:
        got = await thread._fetch_records(None, set(), timeout=0.1, max_records=10)
    finally:
        thread.thread_loop.close()
    assert offsets(got[source]) == [(10, [11], 13), (12, [], 13)]
    assert got[changelog] == changes
    # the source topic hands the agent the bundle as it is
    topic = app.agents["analytics-fold"].channel
    event = await topic.decode(app.consumer._to_message(source, got[source][0]))
    assert isinstance(event.value, Bundle)
    assert event.value is got[source][0].value
    assert topic.maxsize == BUFFERED_BUNDLES


def test_read_to_moves_the_position_past_what_was_passed_over() -> None:
    fold = Fold(grace_ms=60_000)
    raw, headers = wire(placed(T0), T0)
    fold.apply(ORDER_EVENTS, 0, 3, raw, headers)
    fold.read_to(ORDER_EVENTS, 0, 9)
    assert fold.positions == {f"{ORDER_EVENTS}/0": 9}
    assert str(ORDER) in fold.orders


async def test_faust_commits_past_the_dropped_offsets_from_the_start_and_after_a_commit(
    tmp_path: Path,
) -> None:
    """The drain loop calls _add_gap(tp, last read + 1, offset read) when offsets jump; the
    worker's consumer acknowledges the gap's offsets at once, and its commit arithmetic then
    moves past them."""
    app = AnalyticsStream(Settings(data_dir=tmp_path)).build()
    consumer = app.consumer
    tp = TP(ORDER_EVENTS, 0)

    def read(offset: int) -> None:  # what Consumer.ack records for a record the agent finished
        consumer._acked_index[tp].add(offset)
        consumer._acked[tp].append(offset)

    def new_offset() -> int | None:
        offsets: dict[TP, int] = consumer._filter_committable_offsets([tp])
        return offsets.get(tp)

    try:
        for offset in (0, 1):  # never dropped
            read(offset)
        await consumer._add_gap(tp, 2, 5)  # 2, 3 and 4 dropped; 5 read
        read(5)
        assert new_offset() == 6
        consumer._committed_offset[tp] = 6
        await consumer._add_gap(tp, 7, 9)  # after a seek to 6: 6, 7 and 8 dropped
        read(9)
        await consumer._add_gap(tp, 10, 12)
        assert new_offset() == 12  # 10 and 11 dropped, 12 not read yet
        consumer._committed_offset[tp] = 12
        read(12)
        assert new_offset() == 13
        assert not consumer._gap[tp]  # faust's interval tree is not used
    finally:
        app.consumer._thread.thread_loop.close()


def test_committable_is_the_run_of_acknowledged_offsets_short_of_the_floor() -> None:
    acked, index = [7, 5, 6, 9], {5, 6, 7, 9}
    assert committable(acked, index, None) == 8
    assert (acked, index) == ([9], {9})
    acked, index = [5, 6, 7, 8], {5, 6, 7, 8}
    assert committable(acked, index, 7) == 7  # 7 was handed on and is not acknowledged
    assert (acked, index) == ([7, 8], {7, 8})
    assert committable(acked, index, 4) is None  # nothing acknowledged before the floor
    assert committable([], set(), None) is None


def assert_held_back_by_the_bundle(consumer: Any, tp: TP, handed: list[Any], end: int) -> None:
    """With the gap's offsets acknowledged, nothing is committed until every record handed on
    is: the empty bundles first, then the bundle (the first); then everything up to `end`."""
    assert consumer._acked[tp]  # the gap's offsets are acknowledged
    assert consumer._filter_committable_offsets([tp]) == {}
    for message in handed[1:]:
        message.ack(consumer)
        assert consumer._filter_committable_offsets([tp]) == {}
    handed[0].ack(consumer)
    assert consumer._filter_committable_offsets([tp]) == {tp: end}


@pytest.mark.parametrize("committed", [None, 40])
async def test_a_held_bundle_holds_the_commit_back_whatever_is_acknowledged_after_it(
    tmp_path: Path, committed: int | None
) -> None:
    """The agent holds a bundle's record (its first fetched offset) until the tables' flush,
    while the offsets after it are acknowledged as a gap when the fetch's last record arrives.
    faust's own arithmetic committed past a bundle at the committed offset (it allows one
    unacknowledged offset there), and before a first commit past any: a worker killed before
    the flush then lost the bundle's records. Nothing is committed past it here until it is
    acknowledged."""
    app = AnalyticsStream(Settings(data_dir=tmp_path)).build()
    consumer = app.consumer
    tp = TP(ORDER_EVENTS, 0)
    first = 0 if committed is None else committed
    consumer._committed_offset[tp] = committed
    read = first + 1 if committed is None else first  # faust's read offset after the seek
    app.topics._acking_topics.add(ORDER_EVENTS)  # as the conductor does once started
    try:
        held = []
        for offset in (first, first + 1, first + 9) if committed is None else (first, first + 9):
            message = consumer._to_message(tp, record(offset, []))
            if offset - read > 1 and read:
                await consumer._add_gap(tp, read + 1, offset)
            consumer.track_message(message)  # as the consumer does as it hands the record on
            held.append(message)
            read = offset
        assert_held_back_by_the_bundle(consumer, tp, held, first + 10)
    finally:
        app.consumer._thread.thread_loop.close()


@pytest.mark.parametrize("committed", [None, 40])
async def test_a_bundle_waiting_in_the_agents_channel_holds_the_commit_back(
    tmp_path: Path, committed: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust tracks a record as unacknowledged only when the agent's stream takes it from its
    channel. A bundle still waiting there (a busy or slow agent) while the fetch's last record
    came through, its gap acknowledged, must hold the commit back all the same: the consumer
    tracks each record as it hands it on. (Without that, a commit passed the waiting bundle and a
    worker killed before the flush lost it; CI's analytics tests caught it on a slow machine.)"""
    app = AnalyticsStream(Settings(data_dir=tmp_path)).build()
    consumer = app.consumer
    tp = TP(ORDER_EVENTS, 0)
    first = 0 if committed is None else committed
    consumer._committed_offset[tp] = committed
    app.topics._acking_topics.add(ORDER_EVENTS)  # as the conductor does once started
    handed = [
        record(offset, [])
        for offset in ((first, first + 1, first + 9) if committed is None else (first, first + 9))
    ]

    async def fetched(timeout: float) -> tuple[dict[TP, list[ConsumerRecord]], set[TP]]:
        return {tp: handed}, {tp}

    monkeypatch.setattr(consumer, "_wait_next_records", fetched)
    monkeypatch.setattr(consumer, "highwater", lambda tp: first + 10)
    try:
        messages = []
        read = first + 1 if committed is None else first  # faust's read offset after the seek
        async for _, message in consumer.getmany(timeout=0):  # as faust's drain loop does
            if message.offset - read > 1 and read:
                await consumer._add_gap(tp, read + 1, message.offset)
            messages.append(message)  # delivered to the channel; the stream has taken none
            read = message.offset
        assert [m.offset for m in messages] == [r.offset for r in handed]
        # not faust's own tracking, which a rebalance waits on until each record is acknowledged
        assert not consumer._unacked_messages
        assert_held_back_by_the_bundle(consumer, tp, messages, first + 10)
    finally:
        app.consumer._thread.thread_loop.close()
