"""The fold of the event topics into the analytics tables, and what the tables add up to.

One class, run by the live faust agent (over faust tables) and by `shop events rebuild analytics`
(over plain dicts): a rebuild computes what the service computes because it is the same code.
Tables: `orders` (order id -> facts), `low_stock` (SKU -> alert), `watermarks` ("topic/partition"
-> newest event time seen there, the reference for lateness) and `categories` (SKU -> category).
The Aggregates are a function of the `orders` and `categories` tables: rebuilt after a recovery,
then kept up to date record by record.

The fold reads the event types it has a figure for (FOLDED); the rest of an order's events (its
status changes, the stock reservation's commit, the capture: five of a confirmed order's eight)
are passed over, by the `event_type` header the outbox writes on every record, without being
decoded. Their offsets still count as read, and only folded events move a partition's watermark,
so a rebuild, which reads every record, and the live service, which does not even receive most of
those (see transport.py), agree.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import orjson

from analytics_service.domain import (
    MINUTE_MS,
    Aggregates,
    Facts,
    epoch_ms,
    low_stock_after_level,
    low_stock_detected,
)
from analytics_service.handlers import ORDER_HANDLERS
from events.contracts import REGISTRY, LowStockDetected, ProductUpserted, StockLevelChanged
from events.envelope import DecodeError, decode
from events.messages import Message
from events.topics import CATALOG_PRODUCTS, INVENTORY_EVENTS, ORDER_EVENTS, PAYMENT_EVENTS

SOURCE_TOPICS = (ORDER_EVENTS, INVENTORY_EVENTS, PAYMENT_EVENTS, CATALOG_PRODUCTS)
TABLES = ("orders", "low_stock", "watermarks", "categories")
# The event types the fold reads; any other is passed over.
_FOLDED_MODELS: tuple[type[Message], ...] = (
    *ORDER_HANDLERS,
    ProductUpserted,
    LowStockDetected,
    StockLevelChanged,
)
FOLDED = frozenset(t.type_name() for t in _FOLDED_MODELS)
_FOLDED_HEADER_VALUES = frozenset(name.encode() for name in FOLDED)

Headers = Sequence[tuple[str, bytes]]


def header_type(headers: Headers) -> bytes | None:
    """The record's `event_type` header (a copy of its envelope's type), if it has one."""
    for key, value in headers:
        if key == "event_type":
            return value
    return None


def passed_over(headers: Headers) -> bool:
    """Whether the fold passes over a record of these headers unread: its type is not folded."""
    kind = header_type(headers)
    return kind is not None and kind not in _FOLDED_HEADER_VALUES


Table = MutableMapping[str, Any]


def changelog_topic(app_id: str, table: str) -> str:
    """Faust's name for a table's changelog topic."""
    return f"{app_id}-{table}-changelog"


def table_digest(table: Mapping[str, Any]) -> dict[str, Any]:
    """How many entries a table has and a digest of them that ignores their order.

    Each entry hashes as the JSON of [key, value] with sorted keys (what a faust changelog
    round-trip keeps), and the hashes are XORed, so a table and its recovered copy agree.
    """
    entries = 0
    acc = 0
    for key, value in table.items():
        if not value:
            continue
        entries += 1
        data = orjson.dumps([key, value], option=orjson.OPT_SORT_KEYS)
        acc ^= int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big")
    return {"entries": entries, "digest": f"{acc:032x}"}


_DELETED = object()
_MISSING = object()


class WriteBehind(MutableMapping[str, Any]):
    """A table whose writes wait in memory until `flush`, which writes each changed key once,
    and whose recently used keys are read from memory.

    Over a faust table every write is a changelog record; a batch of events updates the same
    keys again and again (a partition's watermark on every event, an order's facts on each of
    its events), and only the last value of each needs to reach the changelog. Reads see the
    pending writes.

    The table itself is on disk (RocksDB): a read costs a lookup and a JSON decode, and an
    order's facts are read once for each of its events, all within the few seconds of its saga.
    The last `cached` keys read or written are kept (least recently used out), so those reads
    stay in memory while memory stays bounded. The fold is the table's only writer; `forget`
    drops the cache when the table may have been changed under it (a recovery)."""

    def __init__(self, table: Table, cached: int = 0) -> None:
        self.table = table
        self._pending: dict[str, Any] = {}
        self._cached = cached
        self._cache: OrderedDict[str, Any] = OrderedDict()

    def _read(self, key: str) -> Any:
        """The table's value (`_MISSING` when it has none), through the cache."""
        cache = self._cache
        value = cache.get(key, cache)
        if value is not cache:
            cache.move_to_end(key)
            return value
        value = self.table.get(key, _MISSING)
        if self._cached:
            self._remember(key, value)
        return value

    def _remember(self, key: str, value: Any) -> None:
        cache = self._cache
        cache[key] = value
        cache.move_to_end(key)
        if len(cache) > self._cached:
            cache.popitem(last=False)

    def forget(self) -> None:
        self._cache.clear()

    def __getitem__(self, key: str) -> Any:
        value = self._pending.get(key, self)
        if value is self:
            value = self._read(key)
        if value is _DELETED or value is _MISSING:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self._pending.get(key, self)
        if value is self:
            value = self._read(key)
        return default if value is _DELETED or value is _MISSING else value

    def __setitem__(self, key: str, value: Any) -> None:
        self._pending[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._pending[key] = _DELETED

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        value = self._pending.get(key, self)
        if value is self:
            value = self._read(key)
        return value is not _DELETED and value is not _MISSING

    def __iter__(self) -> Iterator[str]:
        for key in self.table:
            if self._pending.get(key) is not _DELETED:
                yield key
        for key, value in self._pending.items():
            if value is not _DELETED and key not in self.table:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self) if self._pending else len(self.table)

    def flush(self) -> int:
        """Write the pending changes to the table; how many keys were written."""
        pending, self._pending = self._pending, {}
        for key, value in pending.items():
            if value is _DELETED:
                if key in self.table:
                    del self.table[key]
                self._cache.pop(key, None)
            else:
                self.table[key] = value
                if self._cached:
                    self._remember(key, value)
        return len(pending)


class Fold:
    """Folds records of the source topics into the tables and the aggregates."""

    def __init__(
        self, grace_ms: int, tables: Mapping[str, Table] | None = None, *, live: bool = True
    ) -> None:
        self.grace_ms = grace_ms
        # live: keep the aggregates up to date record by record (what the dashboard reads).
        # Otherwise (a rebuild) only the tables are folded and `recovered()` derives the
        # aggregates once at the end: the same sums, as a recovery after a restart computes them.
        self.live = live
        self.tables: dict[str, Table] = dict(tables or {name: {} for name in TABLES})
        self.orders = self.tables["orders"]
        self.low_stock_alerts = self.tables["low_stock"]
        self.watermarks = self.tables["watermarks"]
        self.categories = self.tables["categories"]
        self.aggregates = Aggregates()
        # "topic/partition" -> the offset after the last record folded (since this process began)
        self.positions: dict[str, int] = {}
        self.late = 0
        self.undecodable = 0
        self.last_error = ""

    def apply(
        self, topic: str, partition: int, offset: int, raw: bytes | None, headers: Headers = ()
    ) -> str | None:
        """Fold one record; its event type, or None when it is not a valid envelope. A record
        whose type is not folded (by its header, or once decoded) counts only as read."""
        where = f"{topic}/{partition}"
        self.positions[where] = offset + 1
        kind = header_type(headers)
        if kind is not None and kind not in _FOLDED_HEADER_VALUES:
            return kind.decode(errors="replace")
        try:
            envelope, msg = decode(raw, REGISTRY)
        except DecodeError as exc:
            self.undecodable += 1
            self.last_error = str(exc)
            return None
        if envelope.type not in FOLDED:
            return envelope.type
        ts = epoch_ms(envelope.occurred_at)
        watermark: int = self.watermarks.get(where) or 0
        late = ts < watermark - self.grace_ms
        if ts > watermark:
            self.watermarks[where] = ts
        handler = ORDER_HANDLERS.get(type(msg))
        if handler is not None:
            key = str(msg.order_id)  # type: ignore[attr-defined]
            old: Facts | None = self.orders.get(key)
            new = handler(old, msg, ts, late)
            if new is not None:
                if late:
                    self.late += 1
                self.orders[key] = new
                if self.live:
                    self.aggregates.replace(old, new)
        elif isinstance(msg, ProductUpserted):
            self.categories[msg.sku] = msg.category
            if self.live:
                self.aggregates.categorise(msg.sku, msg.category)
        elif isinstance(msg, LowStockDetected):
            self.low_stock_alerts[msg.sku] = low_stock_detected(msg.available, msg.threshold, ts)
            self.aggregates.touch()
        elif isinstance(msg, StockLevelChanged):
            alert = self.low_stock_alerts.get(msg.sku)
            if alert is not None:
                after = low_stock_after_level(alert, msg.available)
                if after is None:
                    del self.low_stock_alerts[msg.sku]
                else:
                    self.low_stock_alerts[msg.sku] = after
                self.aggregates.touch()
        return envelope.type

    def read_to(self, topic: str, partition: int, end: int) -> None:
        """Records of a partition before offset `end` were read (the fold passed over those it
        was not given)."""
        self.positions[f"{topic}/{partition}"] = end

    def recovered(self) -> None:
        """The tables were filled from their changelogs: derive the aggregates from them."""
        self.aggregates.categories = {k: v for k, v in self.categories.items() if v}
        self.aggregates.rebuild(v for v in self.orders.values() if v)

    def prune(self, now_ms: int, retention_h: int) -> None:
        """Forget the minutes older than the retention (running totals keep them)."""
        self.aggregates.prune(now_ms - retention_h * 60 * MINUTE_MS)

    def low_stock(self) -> list[dict[str, Any]]:
        return sorted(
            ({"sku": sku, **alert} for sku, alert in self.low_stock_alerts.items() if alert),
            key=lambda a: (a["available"], a["sku"]),
        )

    def watermark(self) -> int | None:
        values = [v for v in self.watermarks.values() if v]
        return max(values) if values else None

    def state(self) -> dict[str, Any]:
        """Everything a rebuild compares, in one consistent view (no await inside)."""
        return {
            "positions": dict(sorted(self.positions.items())),
            "horizon": self.aggregates.horizon,
            "tables": {name: table_digest(table) for name, table in self.tables.items()},
            "totals": self.aggregates.totals_figures(),
            "windows": self.aggregates.windows(1),
            "low_stock": self.low_stock(),
        }
