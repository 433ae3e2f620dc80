"""The bench's freshness: an event is visible at the first poll that saw the fold past it."""

from __future__ import annotations

from typing import Any, cast

import pytest

from bench.loadgen import FreshnessProbe, TerminalTracker


class Records:
    def __init__(self) -> None:
        self.terminal_records: list[tuple[int, int, float]] = []
        self.read_at: list[tuple[float, float]] = []


def probe_over(records: Records) -> FreshnessProbe:
    return FreshnessProbe("http://unused", cast(TerminalTracker, cast(Any, records)))


def test_visible_at_the_first_poll_past_the_offset_whenever_the_tracker_read_it() -> None:
    records = Records()
    probe = probe_over(records)
    probe.record({"order.events/0": 5, "order.events/1": 0, "other.events/0": 99}, now=100.0)
    probe.record({"order.events/0": 5, "order.events/1": 3}, now=100.5)
    probe.record({"order.events/0": 9, "order.events/1": 3}, now=101.0)
    # read by the tracker only now, long after analytics showed them
    records.terminal_records += [(0, 4, 99.9), (1, 2, 100.2), (0, 5, 100.4), (0, 9, 100.9)]
    records.read_at += [(99.9, 105.0), (100.2, 105.0), (100.4, 105.0), (100.9, 105.0)]
    assert probe.visible_at(0, 4) == 100.0
    assert probe.visible_at(1, 2) == 100.5
    assert probe.visible_at(0, 5) == 101.0  # position 5 is the next to fold: 5 is not folded yet
    assert probe.visible_at(0, 9) is None
    assert probe.unseen() == 1
    assert probe.freshness_ms(99.0, 101.0) == pytest.approx([100.0, 300.0, 600.0])
    assert probe.freshness_ms(100.0, 100.3) == pytest.approx([300.0])
    assert probe.tracker_delay_ms(100.0, 100.3) == pytest.approx([4800.0])
    probe.record({"order.events/0": 10}, now=101.5)
    assert probe.unseen() == 0
