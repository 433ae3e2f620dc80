"""Consumer-group offsets: what a group has committed, and resetting it so a service replays.

aiokafka's admin client has no offset-altering call, so a reset commits the new offsets through a
consumer that carries the group's id but never subscribes (Kafka accepts such commits from outside
the group only while the group has no members, which is also when a reset is safe).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    KafkaError,
    NotCoordinatorForGroupError,
)
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from deploy.eventlog import reader
from deploy.eventlog.reader import Bound
from deploy.eventlog.records import EventLogError

T = TypeVar("T")

# What a broker answers while the group's coordinator is not settled yet: on a fresh broker until
# __consumer_offsets exists, or while a coordinator loads its partition after a restart.
COORDINATOR_PENDING = (
    GroupCoordinatorNotAvailableError,
    CoordinatorLoadInProgressError,
    NotCoordinatorForGroupError,
)
COORDINATOR_WAIT_S = 30.0


async def with_coordinator(
    bootstrap: str,
    group: str,
    call: Callable[[AIOKafkaAdminClient], Awaitable[T]],
    wait_s: float = COORDINATOR_WAIT_S,
) -> T:
    """Run an admin call on `group`, retrying while its coordinator is not available yet."""
    deadline = time.monotonic() + wait_s
    async with reader.admin(bootstrap) as client:
        while True:
            try:
                return await call(client)
            except COORDINATOR_PENDING as exc:
                if time.monotonic() > deadline:
                    raise EventLogError(
                        f"no group coordinator for {group} after {wait_s:.0f} s: {exc}"
                    ) from None
                await asyncio.sleep(0.5)


@dataclass(frozen=True)
class GroupState:
    group: str
    state: str  # Empty, Stable, PreparingRebalance, Dead (unknown) ...
    members: tuple[str, ...]


@dataclass(frozen=True, order=True)
class OffsetChange:
    topic: str
    partition: int
    current: int | None
    new: int

    @property
    def delta(self) -> int | None:
        return None if self.current is None else self.new - self.current

    def as_dict(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "current": self.current,
            "new": self.new,
            "delta": self.delta,
        }


def plan_reset(
    current: dict[TopicPartition, int | None], target: dict[TopicPartition, int]
) -> list[OffsetChange]:
    """Per partition, where the group is and where it will be; sorted by topic and partition."""
    return sorted(
        OffsetChange(tp.topic, tp.partition, current.get(tp), offset)
        for tp, offset in target.items()
    )


async def describe(bootstrap: str, group: str) -> GroupState:
    # One group per request: aiokafka 0.14 cannot decode a multi-group answer from Kafka 4.1.
    responses = await with_coordinator(
        bootstrap, group, lambda client: client.describe_consumer_groups([group])
    )
    response = responses[0]
    error, name, state, _ptype, _protocol, members, *_ = response.groups[0]
    if error:
        raise EventLogError(f"cannot describe group {group}: error code {error}")
    return GroupState(name, state, tuple(m[0] for m in members))


async def committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    offsets = await with_coordinator(
        bootstrap, group, lambda client: client.list_consumer_group_offsets(group)
    )
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def plan(
    bootstrap: str, group: str, to: Bound, topics: Iterable[str] | None = None
) -> list[OffsetChange]:
    """The offsets a reset of `group` to `to` would commit: on the topics it has committed on,
    or on `topics` when given."""
    current = await committed(bootstrap, group)
    names = sorted(set(topics) if topics else {tp.topic for tp in current})
    if not names:
        raise EventLogError(f"group {group} has committed no offsets: name the topics (--topic)")
    async with reader.consumer(bootstrap) as kafka:
        tps = await reader.partitions_of(kafka, names)
        target = await reader.offsets_at(kafka, tps, to)
    return plan_reset({tp: current.get(tp) for tp in tps}, target)


async def apply(bootstrap: str, group: str, changes: list[OffsetChange]) -> None:
    state = await describe(bootstrap, group)
    if state.members:
        raise EventLogError(
            f"group {group} has {len(state.members)} live member(s): stop its consumers first"
        )
    offsets = {TopicPartition(c.topic, c.partition): OffsetAndMetadata(c.new, "") for c in changes}
    async with reader.consumer(bootstrap, group_id=group) as kafka:
        kafka.assign(list(offsets))
        try:
            await kafka.commit(offsets)
        except KafkaError as exc:
            raise EventLogError(f"could not commit offsets for group {group}: {exc}") from None
