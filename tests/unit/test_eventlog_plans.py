"""Positions, offset-reset plans and redrive plans, without a broker."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.errors import GroupCoordinatorNotAvailableError
from aiokafka.structs import TopicPartition

from deploy.eventlog import groups, reader
from deploy.eventlog.groups import OffsetChange, plan_reset
from deploy.eventlog.reader import EARLIEST, Bound, parse_bound
from deploy.eventlog.records import EventLogError, LogRecord
from deploy.eventlog.redrive import plan_redrive


def test_positions_read_as_edges_offsets_times_and_ages() -> None:
    assert parse_bound(None, EARLIEST) == EARLIEST
    assert parse_bound("latest", EARLIEST) == Bound(edge="latest")
    assert parse_bound("42", EARLIEST) == Bound(offset=42)
    assert parse_bound("2026-01-02T03:04:05Z", EARLIEST) == Bound(
        time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    )
    age = parse_bound("15m", EARLIEST).time
    assert age is not None
    assert 890 < (datetime.now(UTC) - age).total_seconds() < 910
    with pytest.raises(EventLogError, match="cannot read 'yesterday'"):
        parse_bound("yesterday", EARLIEST)


def test_a_reset_plan_shows_each_partition_from_current_to_new() -> None:
    a0, a1 = TopicPartition("a", 0), TopicPartition("a", 1)
    plan = plan_reset({a1: 9, a0: None}, {a1: 0, a0: 0})
    assert plan == [OffsetChange("a", 0, None, 0), OffsetChange("a", 1, 9, 0)]
    assert plan[1].delta == -9
    assert plan[0].delta is None


def test_dead_letters_go_back_to_their_source_without_dlq_headers() -> None:
    good = LogRecord(
        "x.dlq",
        0,
        4,
        0,
        b"k",
        b"v",
        (
            ("event_id", b"e"),
            ("dlq.reason", b"r"),
            ("dlq.source_topic", b"x"),
            ("dlq.source_partition", b"2"),
        ),
    )
    orphan = LogRecord("x.dlq", 0, 5, 0, b"k", b"v", (("event_id", b"f"),))
    plans, skipped = plan_redrive([good, orphan], "x.dlq")
    assert skipped == [orphan]
    assert [(p.topic, p.partition, p.headers) for p in plans] == [("x", 2, (("event_id", b"e"),))]


@contextlib.asynccontextmanager
async def no_admin(bootstrap: str) -> AsyncIterator[Any]:
    yield object()


async def test_a_group_call_is_retried_until_its_coordinator_is_available(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fresh broker answers 'coordinator not available' until __consumer_offsets exists."""
    monkeypatch.setattr(reader, "admin", no_admin)
    answers: list[Exception | str] = [GroupCoordinatorNotAvailableError(), "offsets"]

    async def call(client: Any) -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await groups.with_coordinator("b:9092", "g", call, wait_s=10) == "offsets"
    assert not answers


async def test_a_coordinator_that_never_comes_is_an_error_naming_the_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reader, "admin", no_admin)

    async def call(client: Any) -> str:
        raise GroupCoordinatorNotAvailableError()

    with pytest.raises(EventLogError, match="no group coordinator for orders-group after 0 s"):
        await groups.with_coordinator("b:9092", "orders-group", call, wait_s=0)
