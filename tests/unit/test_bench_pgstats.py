"""The bench's PostgreSQL figures per order: WAL, full-page images and commits of a step."""

from __future__ import annotations

from bench.pgstats import per_order


def test_a_steps_counters_are_divided_by_its_confirmed_orders() -> None:
    before = {"wal_bytes": 10 * 1024.0, "wal_fpi": 5.0, "commits": 100.0}
    after = {"wal_bytes": 10 * 1024.0 + 40 * 1024 * 8, "wal_fpi": 7.0, "commits": 140.0}

    assert per_order(before, after, 40) == {
        "wal_kib": 8.0,
        "wal_full_page_images": 0.05,
        "commits": 1.0,
    }


def test_a_step_that_confirmed_nothing_is_not_a_division_by_zero() -> None:
    same = {"wal_bytes": 1.0, "wal_fpi": 0.0, "commits": 3.0}
    assert per_order(same, same, 0) == {"wal_kib": 0.0, "wal_full_page_images": 0.0, "commits": 0.0}
