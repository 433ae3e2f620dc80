"""The rebuild's pure parts: comparing a rebuilt state with the live one, lag, app ids, and the
fold run twice over the same records in different partition interleavings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from analytics_service.fold import TABLES, Fold, WriteBehind
from bench.saga_log import SagaLog
from deploy.eventlog.rebuild import behind, check_app_id, compare, default_app_id, flatten
from deploy.eventlog.records import EventLogError
from events.contracts import OrderPlaced, PaymentDeclined, PricedLine, StockRejected
from events.envelope import encode, wrap
from events.messages import Message, Money

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def state(fold: Fold) -> dict[str, Any]:
    return fold.state()


def folded(records: list[tuple[str, int, int, bytes]], live: bool = True) -> Fold:
    fold = Fold(600_000, live=live)
    for topic, partition, offset, value in records:
        fold.apply(topic, partition, offset, value)
    if not live:
        fold.recovered()
    return fold


def saga_records(orders: int, stock: int = 40) -> list[tuple[str, int, int, bytes]]:
    """A saga log, each topic on one partition, offsets in order."""
    log = SagaLog([f"SKU-{i}" for i in range(8)], seed=3, stock=stock)
    offsets: dict[str, int] = {}
    out = []
    for topic, _key, value, _headers in log.records(orders, T0):
        if topic.endswith(".commands"):
            continue
        offsets[topic] = offsets.get(topic, -1) + 1
        out.append((topic, 0, offsets[topic], value))
    return out


def test_a_rebuild_of_the_same_records_matches() -> None:
    records = saga_records(200)
    live, rebuilt = folded(records), folded(records, live=False)
    result = compare(state(live), state(rebuilt))
    assert result.ok, result.differences[:5]
    assert {r.what for r in result.rows} >= {"tables.orders", "totals.placed", "low_stock"}
    assert state(rebuilt)["totals"]["placed"] == 200
    assert state(rebuilt)["low_stock"], "the small stock should raise low-stock alerts"


def test_folding_topics_in_another_interleaving_gives_the_same_tables() -> None:
    records = saga_records(150)
    by_topic = sorted(records, key=lambda r: (r[0], r[2]))  # one topic after another
    assert compare(state(folded(records)), state(folded(by_topic, live=False))).ok


def test_an_extra_order_shows_in_the_orders_table_and_the_totals() -> None:
    records = saga_records(50)
    extra = OrderPlaced(
        order_id=uuid.uuid4(),
        customer_id="extra",
        lines=(PricedLine(sku="SKU-1", quantity=2, unit_price=Money(amount=100, currency="USD")),),
        total=Money(amount=200, currency="USD"),
        placed_at=T0,
    )
    value = encode(wrap(extra, producer="test", occurred_at=T0))
    rebuilt = folded([*records, ("order.events", 0, 10_000, value)], live=False)
    result = compare(state(folded(records)), state(rebuilt))
    assert not result.ok
    assert {"tables.orders", "totals.placed", "windows (1 minute)"} <= set(result.differing)
    placed = next(d for d in result.differences if d.what == "totals.placed")
    assert placed.rebuilt == placed.live + 1


def test_minutes_one_side_has_pruned_are_not_a_difference() -> None:
    records = saga_records(30)
    live, rebuilt = folded(records), folded(records, live=False)
    live.prune(int((T0 + timedelta(hours=25, minutes=30)).timestamp() * 1000), 25)
    assert live.state()["windows"] != rebuilt.state()["windows"]
    assert compare(live.state(), rebuilt.state()).ok


def test_a_late_fact_set_from_two_topics_is_recorded_in_one_order() -> None:
    oid = uuid.uuid4()
    old = T0 - timedelta(hours=2)

    def rec(topic: str, offset: int, msg: Message, at: datetime) -> tuple[str, int, int, bytes]:
        return (topic, 0, offset, encode(wrap(msg, producer="t", occurred_at=at)))

    fresh = [
        rec("inventory.events", 0, StockRejected(order_id=uuid.uuid4(), reason="x"), T0),
        rec("payment.events", 0, PaymentDeclined(order_id=uuid.uuid4(), code="d", reason="x"), T0),
    ]
    late = [
        rec("inventory.events", 1, StockRejected(order_id=oid, reason="x"), old),
        rec("payment.events", 1, PaymentDeclined(order_id=oid, code="d", reason="x"), old),
    ]
    one = folded([*fresh, late[0], late[1]])
    other = folded([*fresh, late[1], late[0]])
    assert one.orders[str(oid)]["late"] == ["declined", "stock_rejected"]
    assert compare(one.state(), other.state()).ok


def test_lag_counts_what_the_live_side_has_not_folded() -> None:
    rebuilt = {"order.events/0": 10, "order.events/1": 5}
    assert behind(rebuilt, {"order.events/0": 10, "order.events/1": 7}) == {}
    assert behind(rebuilt, {"order.events/0": 8}) == {"order.events/0": 2, "order.events/1": 5}


def test_flatten_names_every_leaf() -> None:
    assert flatten({"a": {"b": 1, "c": [{"d": 2}]}, "e": []}) == {"a.b": 1, "a.c[0].d": 2, "e": []}


def test_app_ids_must_be_an_analytics_id_and_not_the_live_one() -> None:
    assert default_app_id(T0) == "rebuild-20261125T120000Z-analytics"
    check_app_id(default_app_id(T0), "analytics")
    for bad in ("rebuild-1", "has space-analytics", ""):
        with pytest.raises(EventLogError):
            check_app_id(bad)
    with pytest.raises(EventLogError, match="live"):
        check_app_id("e2e-1-analytics", "e2e-1-analytics")


class CountingTable(dict[str, Any]):
    """A dict that counts its writes, as a faust table sends a changelog record per write."""

    writes = 0

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.writes += 1
        super().__delitem__(key)


def test_folding_in_batches_over_write_behind_tables_gives_the_same_tables_in_fewer_writes() -> (
    None
):
    records = saga_records(150)
    plain = {name: CountingTable() for name in TABLES}
    one_by_one = Fold(600_000, plain)
    raw = {name: CountingTable() for name in TABLES}
    behind_tables = {name: WriteBehind(table) for name, table in raw.items()}
    batched = Fold(600_000, behind_tables)
    for start in range(0, len(records), 37):
        for record in records[start : start + 37]:
            one_by_one.apply(*record)
            batched.apply(*record)
        for table in behind_tables.values():
            table.flush()
    assert {n: dict(t) for n, t in raw.items()} == {n: dict(t) for n, t in plain.items()}
    assert compare(state(one_by_one), state(batched)).ok
    assert sum(t.writes for t in raw.values()) < sum(t.writes for t in plain.values()) / 2


def test_a_write_behind_table_shows_its_pending_writes_and_writes_each_key_once() -> None:
    table = CountingTable(kept="k", gone="g")
    behind_table = WriteBehind(table)
    behind_table["new"] = 1
    behind_table["new"] = 2
    behind_table["kept"] = "k2"
    del behind_table["gone"]
    with pytest.raises(KeyError):
        del behind_table["never"]
    assert behind_table.get("new") == 2
    assert behind_table.get("gone", "absent") == "absent"
    assert "gone" not in behind_table
    assert sorted(behind_table) == ["kept", "new"]
    assert len(behind_table) == 2
    assert table == {"kept": "k", "gone": "g"}  # nothing written yet
    assert behind_table.flush() == 3
    assert table == {"kept": "k2", "new": 2}
    assert table.writes == 3  # "new" once, although it was set twice
    assert behind_table.flush() == 0


class ReadCountingTable(CountingTable):
    """Also counts reads: each one a RocksDB lookup and a JSON decode in the live service."""

    reads = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.reads += 1
        return super().get(key, default)


def test_a_cached_write_behind_table_reads_each_recent_key_from_the_table_once() -> None:
    records = saga_records(150)
    plain = {name: CountingTable() for name in TABLES}
    one_by_one = Fold(600_000, plain)
    uncached_raw = {name: ReadCountingTable() for name in TABLES}
    cached_raw = {name: ReadCountingTable() for name in TABLES}
    uncached = {name: WriteBehind(table) for name, table in uncached_raw.items()}
    cached = {name: WriteBehind(table, cached=10_000) for name, table in cached_raw.items()}
    folds = [Fold(600_000, uncached), Fold(600_000, cached)]
    for start in range(0, len(records), 37):
        for record in records[start : start + 37]:
            one_by_one.apply(*record)
            for fold in folds:
                fold.apply(*record)
        for tables in (uncached, cached):
            for table in tables.values():
                table.flush()
    for raw in (uncached_raw, cached_raw):
        assert {n: dict(t) for n, t in raw.items()} == {n: dict(t) for n, t in plain.items()}
    for fold in folds:
        assert compare(state(one_by_one), state(fold)).ok
    keys = sum(len(t) for t in cached_raw.values())
    # every key read from the table at most once (its first read, before it was written)
    assert sum(t.reads for t in cached_raw.values()) <= keys
    assert sum(t.reads for t in uncached_raw.values()) > 3 * keys


def test_the_cache_of_a_write_behind_table_is_bounded_and_can_be_dropped() -> None:
    table = ReadCountingTable(a=1, b=2, c=3)
    behind_table = WriteBehind(table, cached=2)
    assert [behind_table.get(k) for k in "abc"] == [1, 2, 3]
    assert table.reads == 3
    assert behind_table.get("c") == 3  # kept
    assert behind_table.get("b") == 2
    assert table.reads == 3
    assert behind_table.get("a") == 1  # the least recently used, dropped for c
    assert table.reads == 4
    assert "missing" not in behind_table
    assert "missing" not in behind_table  # a key the table lacks is kept as lacking
    assert table.reads == 5
    behind_table["b"] = 20
    del behind_table["a"]
    behind_table.flush()
    assert (behind_table.get("b"), behind_table.get("a", "gone")) == (20, "gone")
    table["b"] = 200  # changed under the cache (as a recovery does)
    assert behind_table["b"] == 20
    behind_table.forget()
    assert behind_table["b"] == 200
