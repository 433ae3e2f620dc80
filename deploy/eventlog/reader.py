"""Reading topic ranges without a consumer group: assign, seek, `getmany` in big batches."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from deploy.eventlog.fileformat import TopicLayout
from deploy.eventlog.records import EventLogError, LogRecord

FETCH_RECORDS = 5000
# Topic configs worth carrying into a sandbox; the rest are broker defaults.
CARRIED_CONFIGS = ("cleanup.policy", "retention.ms", "min.compaction.lag.ms", "max.message.bytes")


@dataclass(frozen=True)
class Bound:
    """Where a range starts or ends: the log's edge, an offset, or a time."""

    edge: str | None = None  # "earliest" | "latest"
    offset: int | None = None
    time: datetime | None = None

    def __str__(self) -> str:
        if self.offset is not None:
            return f"offset {self.offset}"
        if self.time is not None:
            return self.time.isoformat()
        return self.edge or "?"


EARLIEST = Bound(edge="earliest")
LATEST = Bound(edge="latest")


def parse_bound(text: str | None, default: Bound) -> Bound:
    """`earliest`, `latest`, an offset (`1234`), an ISO time, or an age such as `15m` / `2h`."""
    if text is None or text == "":
        return default
    text = text.strip()
    if text in ("earliest", "latest"):
        return Bound(edge=text)
    if text.isdigit():
        return Bound(offset=int(text))
    if m := re.fullmatch(r"(\d+)([smhd])", text):
        seconds = int(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
        return Bound(time=datetime.fromtimestamp(time.time() - seconds, UTC))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise EventLogError(
            f"cannot read {text!r} as a position: use earliest, latest, an offset, "
            "an ISO time (2026-11-25T18:00:00Z) or an age (15m, 2h)"
        ) from None
    return Bound(time=moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _unreachable(bootstrap: str, exc: BaseException) -> EventLogError:
    return EventLogError(f"cannot reach Kafka at {bootstrap}: {exc}")


@contextlib.asynccontextmanager
async def consumer(bootstrap: str, **options: Any) -> AsyncIterator[AIOKafkaConsumer]:
    settings: dict[str, Any] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
        "fetch_max_bytes": 64 * 1024 * 1024,
        "request_timeout_ms": 20_000,
    }
    settings.update(options)
    kafka = AIOKafkaConsumer(bootstrap_servers=bootstrap, **settings)
    try:
        await kafka.start()
    except (KafkaError, OSError) as exc:
        await kafka.stop()
        raise _unreachable(bootstrap, exc) from None
    try:
        yield kafka
    finally:
        await kafka.stop()


@contextlib.asynccontextmanager
async def admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20_000)
    try:
        await client.start()
    except (KafkaError, OSError) as exc:
        await client.close()
        raise _unreachable(bootstrap, exc) from None
    try:
        yield client
    finally:
        await client.close()


async def _cluster(kafka: AIOKafkaConsumer) -> Any:
    # The consumer's own metadata only covers assigned topics; a full fetch covers all of them.
    return await kafka._client.fetch_all_metadata()


async def existing_topics(kafka: AIOKafkaConsumer) -> set[str]:
    cluster = await _cluster(kafka)
    return {t for t in cluster.topics() if not t.startswith("__")}


async def partitions_of(kafka: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    cluster = await _cluster(kafka)
    names = list(topics)
    missing = sorted(set(names) - set(cluster.topics()))
    if missing:
        raise EventLogError(f"unknown topic: {', '.join(missing)}")
    tps: list[TopicPartition] = []
    for topic in names:
        parts = cluster.partitions_for_topic(topic) or set()
        tps += [TopicPartition(topic, p) for p in sorted(parts)]
    return tps


async def offsets_at(
    kafka: AIOKafkaConsumer, tps: list[TopicPartition], bound: Bound
) -> dict[TopicPartition, int]:
    first = await kafka.beginning_offsets(tps)
    last = await kafka.end_offsets(tps)
    if bound.edge == "earliest":
        return dict(first)
    if bound.edge == "latest":
        return dict(last)
    if bound.offset is not None:
        return {tp: min(max(bound.offset, first[tp]), last[tp]) for tp in tps}
    assert bound.time is not None
    found = await kafka.offsets_for_times({tp: int(bound.time.timestamp() * 1000) for tp in tps})
    return {tp: found[tp].offset if found.get(tp) else last[tp] for tp in tps}


async def resolve(
    kafka: AIOKafkaConsumer, topics: Iterable[str], start: Bound, end: Bound
) -> dict[TopicPartition, tuple[int, int]]:
    """For every partition of the topics, the offsets [start, end) to read."""
    tps = await partitions_of(kafka, topics)
    if not tps:
        return {}
    lo = await offsets_at(kafka, tps, start)
    hi = await offsets_at(kafka, tps, end)
    return {tp: (lo[tp], hi[tp]) for tp in tps if hi[tp] > lo[tp]}


async def read_ranges(
    kafka: AIOKafkaConsumer,
    ranges: dict[TopicPartition, tuple[int, int]],
    *,
    max_records: int = FETCH_RECORDS,
    idle_timeout_s: float = 15.0,
    keep: Callable[[LogRecord], bool] | None = None,
) -> AsyncIterator[list[LogRecord]]:
    """Yield the records of each range in batches, each partition in offset order."""
    async for fetched in read_consumer_records(
        kafka, ranges, max_records=max_records, idle_timeout_s=idle_timeout_s
    ):
        batch = [
            LogRecord(
                r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, tuple(r.headers or ())
            )
            for r in fetched
        ]
        if keep is not None:
            batch = [r for r in batch if keep(r)]
        if batch:
            yield batch


async def read_consumer_records(
    kafka: AIOKafkaConsumer,
    ranges: dict[TopicPartition, tuple[int, int]],
    *,
    max_records: int = FETCH_RECORDS,
    idle_timeout_s: float = 15.0,
) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """`read_ranges` as aiokafka's own records, for a hot loop that needs no copy of them."""
    if not ranges:
        return
    kafka.assign(list(ranges))
    for tp, (lo, _) in ranges.items():
        kafka.seek(tp, lo)
    open_ = dict(ranges)
    last_progress = time.monotonic()
    while open_:
        fetched = await kafka.getmany(*open_, timeout_ms=200, max_records=max_records)
        batch: list[ConsumerRecord[bytes, bytes]] = []
        for tp, recs in fetched.items():
            end = open_.get(tp, (0, 0))[1]
            if recs and recs[-1].offset < end:
                batch += recs
            else:
                batch += [r for r in recs if r.offset < end]
        if fetched:
            last_progress = time.monotonic()
        for tp in list(open_):
            recs = fetched.get(tp)
            done = bool(recs) and recs[-1].offset + 1 >= open_[tp][1]
            if done or await kafka.position(tp) >= open_[tp][1]:
                del open_[tp]
        if batch:
            yield batch
        if open_ and time.monotonic() - last_progress > idle_timeout_s:
            stuck = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in open_)
            raise EventLogError(f"no progress reading {stuck} for {idle_timeout_s:.0f}s")


async def read_topics(
    bootstrap: str,
    topics: Iterable[str],
    start: Bound = EARLIEST,
    end: Bound = LATEST,
    keep: Callable[[LogRecord], bool] | None = None,
) -> list[LogRecord]:
    """Everything in the range, for tools that need the whole picture (trace, audit)."""
    async with consumer(bootstrap) as kafka:
        ranges = await resolve(kafka, topics, start, end)
        return [r async for batch in read_ranges(kafka, ranges, keep=keep) for r in batch]


async def topic_layouts(bootstrap: str, topics: Iterable[str]) -> dict[str, TopicLayout]:
    """Partitions and the carried configs of each topic, to recreate them elsewhere."""
    names = sorted(set(topics))
    if not names:
        return {}
    async with admin(bootstrap) as client:
        described = await client.describe_topics(names)
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        configs = await client.describe_configs(resources)
    layouts: dict[str, TopicLayout] = {}
    for t in described:
        if t["error_code"] != 0:
            raise EventLogError(f"unknown topic: {t['topic']}")
        layouts[t["topic"]] = TopicLayout(len(t["partitions"]), {})
    for response in configs:
        for resource in response.resources:
            name, entries = resource[3], resource[4]
            if name in layouts:
                layouts[name].config.update(
                    {e[0]: e[1] for e in entries if e[0] in CARRIED_CONFIGS and e[1] is not None}
                )
    return layouts
