"""faust's Kafka transport with a fetch wait we choose.

faust-streaming's aiokafka driver builds its worker consumer with `fetch_max_wait_ms=1500`, fixed.
aiokafka keeps one fetch in flight per broker, and leaves out of it every partition whose records
are still buffered. So while the agent works through what came, the next fetch asks only for the
partitions that had nothing, the quiet ones (catalog.products, and whichever partitions just went
idle), and the broker holds it until one of them gets data or the wait runs out. The partitions
that do have traffic are fetched again only after that. Analytics trailed its topics by 1.2 s
(p50) at 150 orders/s for this reason, using a third of a core.

A shorter wait bounds that stall. It costs an idle consumer a few more empty fetches a second.

The driver's consumer also asks for 1 byte (Kafka's default): the broker answers as soon as
anything is there, so at a low rate every few events cost a fetch of their own, each one a request
for the broker and a trip through the thread, the hand-off and faust's bookkeeping. The worker
used a third of a core at 50 orders/s so. Here a fetch waits for `fetch_min_bytes` (64 KiB) or
`fetch_max_wait_ms`, whichever comes first: a few fetches a second at low rates, full ones at high
rates, for at most that wait more freshness.

The driver also runs that consumer in a thread of its own, on an event loop made with
`asyncio.new_event_loop()`: the standard selector loop, since the services run uvloop without
installing it as the policy. Every fetch, its socket reads and writes, and each hand-off from the
service's loop (a self-pipe write) then go through asyncio's pure-Python selector machinery. The
thread's loop here is a uvloop loop, like the service's own.

And that thread drops, as soon as they are fetched, the records the fold would pass over unread
(`passed_over`, by their `event_type` header: five of a confirmed order's eight events). Each record
faust hands on costs the service's loop a message object, a trip through the conductor and a
channel to the agent, an acknowledgement and its offset bookkeeping, whatever the fold then does
with it. faust commits past the offsets it did not receive as it does past a transaction's
markers: it notes the gap between two records it read and counts the gap as acknowledged. Two
records of each fetched batch are kept whatever their type, for that bookkeeping: the last of each
partition's (so what was read reaches the end of the fetch, for the commit and the fold's
positions), and any at offsets 0 and 1 (faust notes a gap only after a record at an offset above
0). faust's own gap bookkeeping (an interval tree rebuilt on every gap noted, expanded into the
list of acknowledged offsets at every commit) then took a tenth of the service's CPU at 250
orders/s, most of what the dropping saved: the consumer here acknowledges a gap's offsets at once
instead, as faust acknowledges a record it handed on (its list and index of acknowledged offsets),
so a commit costs what it did when every record went through.

Even so, each record faust handed on cost the service's loop some 100 µs of faust's machinery
(the drain loop's wait on each delivery, the conductor, the channel, the take buffer, the
acknowledgement): more than the fold of it. So the thread hands faust one record per partition
and fetch (one per BUNDLE_MAX_RECORDS fetched, below), whose value is a `Bundle` of the records
of that fetch the fold reads, and the agent folds the bundle's records one by one. faust still
sees the last record of each partition's fetch (an empty bundle) and, after a record at offset
0, the next one, for its commit bookkeeping as before.

Why a commit cannot pass a record before it is folded: the bundle rides on the *first* record of
the partition's fetch, at or before every record it carries. The offsets after it are
acknowledged as a gap when the fetch's last record reaches faust, possibly before the agent has
folded the bundle, but a commit stops short of the first record handed on and not acknowledged,
and the bundle's own offset is acknowledged only after the agent's batch holding it was folded
and its table writes made. That stop is the consumer's own (`committable`): faust's commit
arithmetic lets one unacknowledged offset through at the committed position (and any before a
first commit), which is exactly where a fetch's bundle sits. A worker killed after such a commit
and before the flush lost the bundle; CI's integration tests caught it. And the floor counts a
record from the moment the consumer hands it on: faust tracks one only when the agent's stream
takes it from its channel, so a bundle still waiting there (a slow agent) held nothing back while
the gap after it was committed; the consumer notes each record as it hands it on
(`FetchWaitConsumer.getmany`), for the commit's floor only.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import aiokafka
import faust
import uvloop
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types.tuples import ack_lock
from prometheus_client import Counter

PassedOver = Callable[[Sequence[tuple[str, bytes]]], bool]

FETCHED = Counter("analytics_records_fetched_total", "Records the worker's consumer fetched.")
HANDED_ON = Counter(
    "analytics_records_handed_on_total",
    "Records handed to faust (one per partition and fetch, carrying a bundle, and a few for "
    "faust's commit bookkeeping).",
)

COMMIT_ROUNDS = Counter(
    "analytics_commit_rounds_total",
    "Times the worker looked for offsets it may commit (once a commit interval, when any "
    "record was acknowledged).",
)

# A bundle covers at most this many fetched records, and the agent's channel holds at most
# BUFFERED_BUNDLES: faust bounds what it buffers by messages, and a bundle is one message. Without
# the two bounds, a worker catching up on a backlog (full fetches of 1 MiB a partition) buffered
# 4,096 bundles of up to some 2,000 records each and grew by hundreds of MiB; now at most 16,384
# records wait, about what faust's 4,096 one-record messages held with their overhead.
BUNDLE_MAX_RECORDS = 256
BUFFERED_BUNDLES = 64


@dataclasses.dataclass(frozen=True, slots=True)
class Bundle:
    """The value faust sees for a record the consumer thread hands on: the records of the same
    partition's fetch, from that record on, that the fold reads (empty for the records handed on
    for faust's bookkeeping only), and the offset after the last fetched record it covers (how
    far the fold has read once it folded them)."""

    records: tuple[ConsumerRecord, ...]
    end: int


def bundled(
    records: list[ConsumerRecord], passed_over: PassedOver, most: int = BUNDLE_MAX_RECORDS
) -> list[ConsumerRecord]:
    """One partition's fetched records as faust is to see them: the first record of every
    `most`, whose value is the bundle of the records the fold reads among them; the next one if
    the first is at offset 0 (faust notes no gap after offset 0); and the last one. Those two
    carry an empty bundle."""
    if not records:
        return records
    handed = []
    for start in range(0, len(records), most):
        chunk = records[start : start + most]
        read = tuple(r for r in chunk if not passed_over(r.headers))
        handed.append(dataclasses.replace(chunk[0], value=Bundle(read, chunk[-1].offset + 1)))
        if start == 0 and records[0].offset == 0 and len(records) > 1 and most > 1:
            after = records[1]
            handed.append(dataclasses.replace(after, value=Bundle((), chunk[-1].offset + 1)))
    last = records[-1]
    if handed[-1].offset != last.offset:
        handed.append(dataclasses.replace(last, value=Bundle((), last.offset + 1)))
    return handed


class BundleSchema(faust.Schema[Any, Any]):
    """The source topic's schema: the key and the value as the consumer thread made them."""

    def loads_key(self, app: Any, message: Any, **_: Any) -> Any:
        return message.key

    def loads_value(self, app: Any, message: Any, **_: Any) -> Any:
        return message.value


def committable(acked: list[int], index: set[int], floor: int | None) -> int | None:
    """The offset to commit after `acked` (a partition's acknowledged offsets, and their set
    `index`): the end of the run of consecutive offsets it begins with, short of `floor` (the
    lowest offset handed on and not acknowledged). The run is taken out of both; None when
    there is none."""
    if not acked:
        return None
    acked.sort()
    end = acked[0]
    for offset in acked:
        if offset != end or (floor is not None and offset >= floor):
            break
        end += 1
    taken = end - acked[0]
    if not taken:
        return None
    index.difference_update(acked[:taken])
    del acked[:taken]
    return end


def transport_class(
    fetch_max_wait_ms: int,
    bundled_topics: Collection[str],
    passed_over: PassedOver,
    fetch_min_bytes: int = 1,
) -> type[Transport]:
    """A faust aiokafka Transport whose worker consumer waits at most `fetch_max_wait_ms`, and
    hands faust the records of `bundled_topics` in bundles, without those `passed_over` drops.
    Other topics' records (the tables' changelogs, read on recovery) are handed on as they
    are."""
    bundled_topics = frozenset(bundled_topics)

    class FetchWaitConsumerThread(AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # Read by AIOKafkaConsumer.start() when it builds its fetcher. The driver passes
            # a constant to __init__ and offers no setting.
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            consumer._fetch_min_bytes = fetch_min_bytes
            return consumer

        async def _fetch_records(
            self,
            consumer: aiokafka.AIOKafkaConsumer,
            active_partitions: Any,
            timeout: float | None = None,  # noqa: ASYNC109 (faust's signature)
            max_records: int | None = None,
        ) -> Mapping[Any, list[ConsumerRecord]]:
            records: Mapping[Any, list[ConsumerRecord]] = await super()._fetch_records(
                consumer, active_partitions, timeout=timeout, max_records=max_records
            )
            if not records:
                return records
            handed = {
                tp: bundled(recs, passed_over) if tp.topic in bundled_topics else recs
                for tp, recs in records.items()
            }
            FETCHED.inc(sum(map(len, records.values())))
            HANDED_ON.inc(sum(map(len, handed.values())))
            return handed

    class FetchWaitConsumer(Consumer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # The records handed to faust, until the last reference to each goes.
            self._handed_on: weakref.WeakSet[Any] = weakref.WeakSet()

        async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:  # noqa: ASYNC109
            """faust's, each record noted as handed on (`_handed_on`) as it goes to the
            conductor. faust tracks a record only when the agent's stream takes it from its
            channel, which may be much later: a bundle still waiting in the channel held nothing
            back while the gap after it, acknowledged when the fetch's last record came through,
            was committed past it. A worker killed before the flush then lost the bundle. Not
            faust's own tracking (`track_message`): faust waits on a rebalance until every
            record it tracks is acknowledged, and one still on its way to a channel is not
            delivered until the rebalance is over."""
            acking = self.app.topics.acks_enabled_for
            handed_on = self._handed_on
            async for tp, message in super().getmany(timeout):
                if acking(message.topic):
                    handed_on.add(message)
                yield tp, message

        async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
            """Offsets offset_from..offset_to - 1 were not handed on (offset_to, the record
            just read, is acknowledged when the agent is done with it): acknowledged now."""
            with ack_lock:
                committed = self._committed_offset[tp]
                start = offset_from if committed is None else max(offset_from, committed)
                index = self._acked_index[tp]
                fresh = [o for o in range(start, offset_to) if o not in index]
                index.update(fresh)
                self._acked[tp].extend(fresh)

        def _filter_committable_offsets(self, tps: Iterable[Any]) -> dict[Any, int]:
            """The offset to commit for each of `tps` that has one: the end of its run of
            acknowledged offsets, stopped short of any record handed on and not acknowledged.

            faust's own (`_new_offset`) stops only when the first acknowledged offset is *more
            than one* past the committed offset, which is the next record to read, not the last
            one read (and, before a first commit, never). With that record unacknowledged (a
            bundle, held until the tables' flush) and the records after it acknowledged (a
            gap), faust committed past the bundle, and a worker killed before the flush lost
            it. The floor here is the records handed on and not acknowledged yet, as faust
            tracks them for a clean stop: offsets never handed on (a gap, a transaction's
            marker) do not hold a commit back."""
            COMMIT_ROUNDS.inc()
            floors: dict[Any, int] = {}
            for m in [*self._unacked_messages, *self._handed_on]:
                if not m.acked and m.offset < floors.get(m.tp, m.offset + 1):
                    floors[m.tp] = m.offset
            out = {}
            for tp in tps:
                offset = committable(self._acked[tp], self._acked_index[tp], floors.get(tp))
                if offset is not None and self._should_commit(tp, offset):
                    out[tp] = offset
            return out

        def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
            thread = FetchWaitConsumerThread(
                self, loop=self.loop, beacon=self.beacon, thread_loop=uvloop.new_event_loop()
            )
            # mode closes only a thread loop it made itself; this one is as much its own
            thread._close_thread_loop_on_stop = True
            return thread

    class FetchWaitTransport(Transport):
        Consumer = FetchWaitConsumer

    return FetchWaitTransport


def use_transport(
    app: Any,
    fetch_max_wait_ms: int,
    bundled_topics: Collection[str],
    passed_over: PassedOver,
    fetch_min_bytes: int = 1,
) -> None:
    """Give a faust app (not started yet) the transport above."""
    transport = transport_class(fetch_max_wait_ms, bundled_topics, passed_over, fetch_min_bytes)
    app.transport = transport(app.conf.broker_consumer, app)
