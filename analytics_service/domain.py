"""Sales analytics as pure functions: per-order facts, their contributions, and the aggregates.

The unit of state is one order's *facts*: each saga event sets one fact once (when it happened, by
event time, and what it carried). Setting a fact that is already set changes nothing, so a record
delivered twice, or replayed after a crash, is counted once. Every figure is a sum of the
contributions of the orders' facts, kept incrementally: when an order's facts change, the old
contribution is taken away and the new one added. Windows are by event time (`occurred_at`),
bucketed per minute; a 5-minute hopping window is the sum of its five minutes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from sys import intern
from typing import Any

MINUTE_MS = 60_000

# A fact name -> its value, JSON-friendly so it can live in a faust table's changelog.
Facts = dict[str, Any]

WINDOWED_FACTS = (
    "placed",
    "confirmed",
    "rejected",
    "cancelled",
    "stock_rejected",
    "authorized",
    "declined",
)
COUNTERS = (*WINDOWED_FACTS, "refunded")
UNCATEGORISED = "(uncategorised)"
RANGES_MIN = {"15m": 15, "1h": 60, "24h": 24 * 60}


def epoch_ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def minute_of(ts_ms: int) -> int:
    return ts_ms - ts_ms % MINUTE_MS


def set_fact(facts: Facts | None, name: str, value: list[Any], late: bool = False) -> Facts | None:
    """The facts with `name` set, or None when it was set already (first delivery wins)."""
    current = dict(facts or {})
    if name in current:
        return None
    current[name] = value
    if late:
        # sorted: facts from different topics may be folded in either order (live or rebuilt)
        current["late"] = sorted([*current.get("late", []), name])
    return current


# What one order adds, item by item: (counter, event time, amount, windowed). A windowed item
# counts in the minute of its time and in the running totals; any other only in the totals.
Item = tuple[str, int, int, bool]


def contribution(facts: Facts | None) -> tuple[list[Item], tuple[int, int] | None]:
    """The figures one order's facts add up to, a pure function of the facts: its items, and
    its latency (the minute it was confirmed in, placed -> confirmed ms) if it counts one."""
    items: list[Item] = []
    if not facts:
        return items, None
    late = facts.get("late", ())
    for name in WINDOWED_FACTS:
        if name in facts:
            items.append((name, facts[name][0], 1, name not in late))
    latency = None
    if "confirmed" in facts:
        ts, currency, total = facts["confirmed"]
        windowed = "confirmed" not in late
        items.append((f"revenue:{currency}", ts, total, windowed))
        if "placed" in facts:
            for sku, qty, unit_price in facts["placed"][3]:
                items.append((f"units:{sku}", ts, qty, windowed))
                items.append((f"sku_revenue:{sku}:{currency}", ts, qty * unit_price, windowed))
            if windowed:
                latency = (minute_of(ts), ts - facts["placed"][0])
    if "cancelled" in facts and facts["cancelled"][1] and "confirmed" in facts:
        ts = facts["cancelled"][0]
        _, currency, total = facts["confirmed"]
        windowed = "cancelled" not in late
        items.append(("refunded", ts, 1, windowed))
        items.append((f"refunds:{currency}", ts, total, windowed))
    return items, latency


# Latencies are counted per minute in buckets, not kept one by one (a list per minute for the
# 25 h retention would hold every confirmed order's latency: 9 million at 100 orders/s). Exact
# below 128 ms; above, 64 buckets per power of two, each reported as its middle: within 1/128
# (0.8 %) of the true value. A minute holds at most a few hundred buckets whatever the rate.
LATENCY_BUCKETS_PER_POWER = 64


def latency_bucket(ms: int) -> int:
    """The value a latency is counted as: itself below 128 ms, else the middle of its bucket."""
    if ms < 2 * LATENCY_BUCKETS_PER_POWER:
        return ms
    shift = ms.bit_length() - LATENCY_BUCKETS_PER_POWER.bit_length()
    return ((ms >> shift) << shift) + (1 << shift) // 2


def percentile(counts: Mapping[int, int], q: float) -> int | None:
    """Nearest-rank percentile of a histogram (value -> how many times it occurs): the smallest
    value with at least q of the values at or below it."""
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    return None  # pragma: no cover - the counts add up to total


def ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _by_prefix(c: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix) :]: v for k, v in c.items() if k.startswith(prefix) and v}


def top_products(c: Mapping[str, int], n: int = 10) -> dict[str, list[dict[str, Any]]]:
    """Top n SKUs by units, and by revenue per currency (ties broken by SKU)."""
    units = _by_prefix(c, "units:")
    by_units = sorted(units.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    revenue: dict[str, dict[str, int]] = {}
    for key, amount in _by_prefix(c, "sku_revenue:").items():
        sku, currency = key.rsplit(":", 1)
        revenue.setdefault(currency, {})[sku] = amount
    return {
        "by_units": [{"sku": s, "units": u} for s, u in by_units],
        "by_revenue": [
            {"sku": s, "currency": cur, "revenue": r}
            for cur in sorted(revenue)
            for s, r in sorted(revenue[cur].items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        ],
    }


def by_category(c: Mapping[str, int], categories: Mapping[str, str]) -> dict[str, Any]:
    """Units and revenue per category, by each SKU's current category in the catalog."""
    out: dict[str, dict[str, Any]] = {}

    def entry(sku: str) -> dict[str, Any]:
        category = categories.get(sku, UNCATEGORISED)
        return out.setdefault(category, {"units": 0, "revenue": {}})

    for sku, units in _by_prefix(c, "units:").items():
        entry(sku)["units"] += units
    for key, amount in _by_prefix(c, "sku_revenue:").items():
        sku, currency = key.rsplit(":", 1)
        revenue = entry(sku)["revenue"]
        revenue[currency] = revenue.get(currency, 0) + amount
    return dict(sorted(out.items()))


def figures(
    c: Mapping[str, int], latencies: Mapping[int, int] = {}, categories: Mapping[str, str] = {}
) -> dict[str, Any]:
    """The reported figures of one window (or of the totals) from its counters and latencies
    (a histogram of `latency_bucket` values)."""
    revenue = _by_prefix(c, "revenue:")
    confirmed = c.get("confirmed", 0)
    return {
        **{name: c.get(name, 0) for name in COUNTERS},
        "revenue": revenue,
        "refunds": _by_prefix(c, "refunds:"),
        "average_order_value": {cur: amount // confirmed for cur, amount in revenue.items()}
        if confirmed
        else {},
        "units": sum(_by_prefix(c, "units:").values()),
        "by_category": by_category(c, categories),
        "payment_decline_rate": ratio(
            c.get("declined", 0), c.get("declined", 0) + c.get("authorized", 0)
        ),
        "out_of_stock_rate": ratio(c.get("stock_rejected", 0), c.get("placed", 0)),
        "latency_ms": {
            "count": sum(latencies.values()),
            "p50": percentile(latencies, 0.5),
            "p90": percentile(latencies, 0.9),
            "p99": percentile(latencies, 0.99),
        },
    }


@dataclass
class Aggregates:
    """The sum of every order's contribution, per minute and since the start."""

    minutes: dict[int, Counter[str]] = field(default_factory=dict)
    latencies: dict[int, Counter[int]] = field(default_factory=dict)  # minute -> histogram
    totals: Counter[str] = field(default_factory=Counter)
    version: int = 0
    horizon: int = 0  # minutes before this are forgotten (pruned)
    categories: dict[str, str] = field(default_factory=dict)  # SKU -> category, from the catalog

    def touch(self) -> None:
        """Something shown beside the figures (a low-stock alert) changed."""
        self.version += 1

    def categorise(self, sku: str, category: str) -> None:
        if self.categories.get(sku) != category:
            self.categories[sku] = category
            self.version += 1

    def replace(self, old: Facts | None, new: Facts | None) -> None:
        """An order's facts changed from old to new."""
        self._apply(old, -1)
        self._apply(new, +1)
        self.version += 1

    def rebuild(self, all_facts: Iterable[Facts]) -> None:
        self.minutes.clear()
        self.latencies.clear()
        self.totals.clear()
        for facts in all_facts:
            self._apply(facts, +1)
        self.version += 1

    def _apply(self, facts: Facts | None, sign: int) -> None:
        """Add (sign +1) or take away (-1) what an order's facts contribute."""
        items, latency = contribution(facts)
        totals, minutes, horizon = self.totals, self.minutes, self.horizon
        for name, ts, amount, windowed in items:
            totals[name] += sign * amount
            if windowed:
                minute = ts - ts % MINUTE_MS
                if minute >= horizon:
                    bucket = minutes.get(minute)
                    if bucket is None:
                        bucket = minutes[minute] = Counter()
                    value = bucket.get(name)
                    if value is None:  # the minute's first: one copy of the name for every minute
                        bucket[intern(name)] = sign * amount
                    else:
                        bucket[name] = value + sign * amount
        if latency is not None and latency[0] >= horizon:
            minute, ms = latency
            histogram = self.latencies.setdefault(minute, Counter())
            value = latency_bucket(ms)
            histogram[value] += sign
            if histogram[value] <= 0:
                del histogram[value]

    def window(self, start: int, end: int) -> tuple[Counter[str], Counter[int]]:
        """Counters and latency histogram of the minutes in [start, end)."""
        total: Counter[str] = Counter()
        lat: Counter[int] = Counter()
        if (end - start) // MINUTE_MS > len(self.minutes):
            minutes = sorted(m for m in self.minutes if start <= m < end)
        else:
            minutes = [m for m in range(minute_of(start), end, MINUTE_MS) if m >= start]
        for minute in minutes:
            if (counts := self.minutes.get(minute)) is not None:
                total.update(counts)
                lat.update(self.latencies.get(minute, {}))
        return total, lat

    def windows(self, size_min: int, since: int | None = None) -> list[dict[str, Any]]:
        """Windows of size_min minutes sliding by one minute (size 1: tumbling), oldest first."""
        active = [m for m, c in self.minutes.items() if any(c.values())]
        if not active:
            return []
        first = min(active) - (size_min - 1) * MINUTE_MS
        if since is not None:
            first = max(first, minute_of(since))
        out = []
        for start in range(first, max(active) + MINUTE_MS, MINUTE_MS):
            end = start + size_min * MINUTE_MS
            counts, lat = self.window(start, end)
            if any(counts.values()):
                out.append({"start": start, "end": end, **figures(counts, lat, self.categories)})
        return out

    def totals_figures(self) -> dict[str, Any]:
        """The running totals since the start of the log, with the top products."""
        return figures(self.totals, {}, self.categories) | {
            "top_products": top_products(self.totals)
        }

    def summary(self, now_ms: int, range_name: str) -> dict[str, Any]:
        """What the dashboard shows for the last range_name (15m, 1h, 24h) up to now."""
        minutes = RANGES_MIN[range_name]
        end = minute_of(now_ms) + MINUTE_MS
        start = end - minutes * MINUTE_MS
        counts, lat = self.window(start, end)
        series = [
            {
                "start": m,
                "placed": c.get("placed", 0),
                "confirmed": c.get("confirmed", 0),
                "rejected": c.get("rejected", 0),
                "cancelled": c.get("cancelled", 0),
                "revenue": _by_prefix(c, "revenue:"),
            }
            for m in range(start, end, MINUTE_MS)
            for c in [self.minutes.get(m, Counter())]
        ]
        return {
            "range": range_name,
            "start": start,
            "end": end,
            "window": figures(counts, lat, self.categories)
            | {"top_products": top_products(counts)},
            "totals": self.totals_figures(),
            "series": series,
        }

    def prune(self, before: int) -> None:
        """Forget minutes older than `before`; running totals keep them."""
        self.horizon = max(self.horizon, minute_of(before))
        for minute in [m for m in self.minutes if m < before]:
            del self.minutes[minute]
            self.latencies.pop(minute, None)


def low_stock_detected(available: int, threshold: int, ts: int) -> dict[str, int]:
    """The alert LowStockDetected raises (or refreshes)."""
    return {"available": available, "threshold": threshold, "since": ts}


def low_stock_after_level(alert: dict[str, int] | None, available: int) -> dict[str, int] | None:
    """The alert once a StockLevelChanged says `available`: None when there is none or it clears."""
    if alert is None or available >= alert["threshold"]:
        return None
    return alert | {"available": available}
