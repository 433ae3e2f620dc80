"""The inbox consumer's batches in flight: which finished batches' offsets may be committed, in
what order, and which batches must wait for which (no broker: the flights are driven by hand)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.structs import TopicPartition

from events.kit.inbox import InboxConsumer, _Flight
from events.messages import Registry

P0 = TopicPartition("t", 0)
P1 = TopicPartition("t", 1)


@pytest.fixture
async def c() -> AsyncIterator[InboxConsumer]:
    made = InboxConsumer(
        name="flights",
        topics=["t"],
        handlers={},
        registry=Registry(),
        pool=None,  # type: ignore[arg-type]
        producer=None,
        bootstrap_servers="127.0.0.1:1",
        service="test",
        batches_in_flight=4,
    )
    yield made
    await made.kafka.stop()  # never started: only its resources


class Hand:
    """A flight whose batch finishes when the test says so."""

    def __init__(self, offsets: dict[TopicPartition, int], *keys: bytes | None) -> None:
        self.gate: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.flight = _Flight(offsets, frozenset(keys or (b"k",)), asyncio.create_task(self._run()))

    async def _run(self) -> bool:
        return await self.gate

    async def finish(self, dead_lettered: bool = False) -> None:
        self.gate.set_result(dead_lettered)
        await asyncio.wait([self.flight.outcome])

    async def fail(self, exc: Exception) -> None:
        self.gate.set_exception(exc)
        await asyncio.wait([self.flight.outcome])


def offsets(c: InboxConsumer) -> dict[TopicPartition, int]:
    return dict(c._uncommitted)


async def test_a_finished_batch_lands_only_after_every_earlier_batch_on_its_partitions(
    c: InboxConsumer,
) -> None:
    slow, other_partition, behind = Hand({P0: 10}), Hand({P1: 5}), Hand({P0: 20, P1: 8})
    c._flights = [slow.flight, other_partition.flight, behind.flight]
    await other_partition.finish()
    await behind.finish()

    assert c._land() is False
    # P1's first batch lands; the batch behind the slow one waits, P1's part of it too
    assert offsets(c) == {P1: 5}
    assert c._flights == [slow.flight, behind.flight]

    await slow.finish()
    c._land()
    assert offsets(c) == {P0: 20, P1: 8}
    assert c._flights == []


async def test_landing_says_when_a_landed_batch_dead_lettered_something(c: InboxConsumer) -> None:
    quiet, dead = Hand({P0: 3}), Hand({P1: 4})
    c._flights = [quiet.flight, dead.flight]
    await quiet.finish()
    await dead.finish(dead_lettered=True)

    assert c._land() is True
    assert offsets(c) == {P0: 3, P1: 4}


async def test_a_failed_batch_is_raised_and_holds_back_its_partitions(c: InboxConsumer) -> None:
    failed, elsewhere, behind = Hand({P0: 10}), Hand({P1: 2}), Hand({P0: 12})
    c._flights = [failed.flight, elsewhere.flight, behind.flight]
    await failed.fail(ValueError("broken"))
    await elsewhere.finish()
    await behind.finish()

    with pytest.raises(ValueError, match="broken"):
        c._land()
    assert offsets(c) == {P1: 2}  # nothing at or after the failed batch on P0
    assert c._flights == [failed.flight, behind.flight]


async def test_drain_waits_for_every_batch_and_keeps_a_failed_one_for_the_run_loop(
    c: InboxConsumer,
) -> None:
    first, failed = Hand({P0: 1}), Hand({P1: 1})
    c._flights = [first.flight, failed.flight]
    loop = asyncio.get_running_loop()
    loop.call_soon(first.gate.set_result, False)
    loop.call_soon(failed.gate.set_exception, OSError("gone"))

    await c._drain()

    assert offsets(c) == {P0: 1}
    assert c._flights == [failed.flight]


@pytest.mark.parametrize(
    ("in_flight", "incoming", "shares"),
    [
        ({b"a", b"b"}, {b"c"}, False),
        ({b"a", b"b"}, {b"b", b"c"}, True),
        ({b"a"}, {None}, True),  # a record without a key is ordered against every key
        ({None}, {b"a"}, True),
    ],
)
async def test_a_batch_waits_for_the_batches_in_flight_that_share_a_key_with_it(
    in_flight: set[Any], incoming: set[Any], shares: bool
) -> None:
    hand = Hand({P0: 1}, *in_flight)
    assert hand.flight.shares_keys_with(frozenset(incoming)) is shares
    await hand.finish()
