"""The message's fields on the log lines written while a consumer handles it."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import orjson
import pytest
import structlog

from events.kit.logging import configure_logging, merge_message_context, message_context


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """The JSON lines the kit's logging writes (configured as a service configures it)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, structlog.get_config()
    out = io.StringIO()
    configure_logging("INFO", json=True, service="unit")
    root.handlers[0].setStream(out)  # type: ignore[attr-defined]
    try:
        yield out
    finally:
        root.handlers[:], level, config = saved
        root.setLevel(level)
        structlog.configure(**config)
        structlog.contextvars.clear_contextvars()


def written(out: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_written_inside_the_block_carries_the_fields_and_one_outside_does_not(
    lines: io.StringIO,
) -> None:
    log = structlog.stdlib.get_logger("unit.test")
    with message_context(lambda: {"event_id": "e-1", "offset": 7}):
        log.warning("inside")
        logging.getLogger("foreign").warning("from stdlib")
    log.warning("outside")
    inside, foreign, outside = written(lines)
    assert (inside["event_id"], inside["offset"], inside["service"]) == ("e-1", 7, "unit")
    assert foreign["event_id"] == "e-1"
    assert "event_id" not in outside
    assert outside["service"] == "unit"


def test_the_fields_are_computed_only_when_a_line_is_written(lines: io.StringIO) -> None:
    calls: list[int] = []

    def fields() -> dict[str, object]:
        calls.append(1)
        return {"event_id": "e-2"}

    log = structlog.stdlib.get_logger("unit.test")
    with message_context(fields):
        log.debug("below the level: not written")
        assert calls == []
        log.info("written")
    assert len(calls) == 1
    assert [line["event"] for line in written(lines)] == ["written"]


def test_nested_blocks_restore_the_outer_fields_and_a_lines_own_field_wins(
    lines: io.StringIO,
) -> None:
    log = structlog.stdlib.get_logger("unit.test")
    with message_context(lambda: {"event_id": "outer", "topic": "t"}):
        with message_context(lambda: {"event_id": "inner"}):
            log.info("nested")
        log.info("after", topic="own")
    nested, after = written(lines)
    assert nested["event_id"] == "inner"
    assert "topic" not in nested
    assert (after["event_id"], after["topic"]) == ("outer", "own")


def test_tasks_started_inside_the_block_keep_its_fields() -> None:
    async def main() -> dict[str, object]:
        async def task() -> dict[str, object]:
            return dict(merge_message_context(None, "info", {}))

        with message_context(lambda: {"event_id": "e-3"}):
            started = asyncio.create_task(task())
        # it runs only now, after the block has ended, with the context it was started in
        return await started

    assert asyncio.run(main()) == {"event_id": "e-3"}
