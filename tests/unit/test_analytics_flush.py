"""The analytics tables' writes wait in memory for a flush, and the events they came from are
acknowledged (their offsets committable) only after it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faust.types import TP

from analytics_service.fold import WriteBehind, passed_over
from analytics_service.settings import Settings
from analytics_service.stream import AnalyticsStream
from analytics_service.transport import bundled
from events.topics import ORDER_EVENTS
from tests.unit.test_analytics_passed_over import ORDER, T0, placed, record, status_changed, wire


async def test_an_event_is_acknowledged_only_after_the_flush_of_its_table_writes(
    tmp_path: Path,
) -> None:
    stream = AnalyticsStream(Settings(data_dir=tmp_path))
    app = stream.build()
    try:
        orders: dict[str, Any] = {}
        stream._behind = {"orders": WriteBehind(orders)}
        stream.fold.orders = stream._behind["orders"]
        consumer, tp = app.consumer, TP(ORDER_EVENTS, 0)
        app.topics._acking_topics.add(ORDER_EVENTS)  # as when the agent subscribes
        raw, headers = wire(placed(T0), T0)
        fetched = [record(40, headers), record(41, wire(status_changed(), T0)[1])]
        fetched[0].value = raw
        handed = bundled(fetched, passed_over)
        events = []
        for r in handed:
            message = consumer._to_message(tp, r)
            message.incref()  # what faust's conductor does for the one channel reading it
            events.append(app.create_event(r.key, r.value, r.headers, message))
        for event in events:
            stream.fold_event(event)
            event.ack()  # what the stream does once the agent's batch is done
        assert str(ORDER) in stream.fold.orders  # folded: the aggregates and reads see it
        assert orders == {}  # not written yet
        assert not consumer._acked[tp]  # so faust may not commit past it
        assert stream.fold.positions == {f"{ORDER_EVENTS}/0": 42}
        stream.flush_tables()
        assert str(ORDER) in orders
        assert sorted(consumer._acked[tp]) == [40, 41]
        assert consumer._new_offset(tp) == 42
        stream.flush_tables()  # nothing held: nothing happens twice
        assert sorted(consumer._acked[tp]) == []
    finally:
        app.consumer._thread.thread_loop.close()
