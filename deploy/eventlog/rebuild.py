"""Rebuild the analytics tables from the whole log and compare them with the live service.

The fold is analytics_service.fold.Fold, the very class the live faust agent runs, over plain
dicts. The rebuilt tables are then written as a fresh application id's faust changelog topics
(final value per key: what compaction would leave) and that id's consumer group is committed at
the offsets the rebuild read up to, so `ANALYTICS_CONSUMER_GROUP_PREFIX=<id minus "analytics">
python -m analytics_service` recovers exactly these tables and carries on from there.

Comparing under live traffic: the live service reports, in one consistent view, its figures and
the offsets it has folded. The rebuild waits until the live service has folded at least what the
rebuild read, then folds the records the live service has already seen beyond that (newer than the
rebuild's start), so both sides stand on the same records before anything is compared.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import DeleteGroupsRequest
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from analytics_service.fold import SOURCE_TOPICS, TABLES, Fold, changelog_topic
from deploy.eventlog import groups, reader
from deploy.eventlog.records import EventLogError
from events.kit.admin import TopicError, ensure_topics
from events.topics import SAGA_PARTITIONS, TopicSpec

Progress = Callable[[int, int], None]  # (done, total)
# What faust's json codec writes (faust.utils.json.dumps with orjson installed).
FAUST_JSON = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z
APP_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}analytics$")


def default_app_id(now: datetime | None = None) -> str:
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"rebuild-{moment:%Y%m%dT%H%M%SZ}-analytics"


def check_app_id(app_id: str, live_app_id: str | None = None) -> None:
    """An id the analytics service can run under (<prefix>analytics), never the live one."""
    if not APP_ID.fullmatch(app_id):
        raise EventLogError(
            f"{app_id!r} cannot be an analytics application id: it must end in 'analytics' "
            "(the service's id is <ANALYTICS_CONSUMER_GROUP_PREFIX>analytics) and use only "
            "letters, digits, '.', '_' and '-'"
        )
    if app_id == live_app_id:
        raise EventLogError(f"{app_id} is the live service's application id: choose a fresh one")


def key_of(tp: TopicPartition) -> str:
    return f"{tp.topic}/{tp.partition}"


def tp_of(key: str) -> TopicPartition:
    topic, partition = key.rsplit("/", 1)
    return TopicPartition(topic, int(partition))


# --- the rebuild itself --------------------------------------------------------------------------


@dataclass
class Rebuilt:
    app_id: str
    fold: Fold
    read_to: dict[str, int]  # "topic/partition" -> the offset the rebuild has read up to
    records: int = 0
    fold_seconds: float = 0.0
    write_seconds: float = 0.0
    newer: Counter[str] = field(default_factory=Counter)  # "topic: type" folded in the catch-up
    changelog_records: dict[str, int] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.fold_seconds + self.write_seconds

    @property
    def rate(self) -> float:
        """Records per second, reading and folding the log and writing the changelogs."""
        return self.records / self.seconds if self.seconds > 0 else 0.0


async def _fold_ranges(
    kafka: Any,
    fold: Fold,
    ranges: Mapping[TopicPartition, tuple[int, int]],
    progress: Progress | None = None,
    newer: Counter[str] | None = None,
) -> int:
    total = sum(hi - lo for lo, hi in ranges.values())
    done = 0
    apply = fold.apply
    async for batch in reader.read_consumer_records(kafka, dict(ranges)):
        for r in batch:
            kind = apply(r.topic, r.partition, r.offset, r.value, r.headers)
            if newer is not None:
                newer[f"{r.topic}: {kind or 'undecodable'}"] += 1
        done += len(batch)
        if progress:
            progress(done, total)
    return done


async def fold_log(
    bootstrap: str,
    app_id: str,
    *,
    grace_s: int,
    retention_h: int,
    topics: Iterable[str] = SOURCE_TOPICS,
    progress: Progress | None = None,
    workers: int | None = None,
    now_ms: int | None = None,
) -> Rebuilt:
    """Fold the whole log of the source topics, up to the end offsets taken now.

    The minutes older than `retention_h` before `now_ms` (default: the time the fold ends) are
    pruned, as the live service prunes them.

    The partitions are shared among `workers` processes (default: one per CPU), each folding
    whole partitions into tables of its own; their tables are then merged. That is the same
    result as one fold because the tables are co-partitioned with the topics, as faust requires
    of the live service: every record of an order is on the same partition number of each saga
    topic (keyed by order id, SAGA_PARTITIONS each), a SKU's alerts and levels on one partition of
    inventory.events, and watermarks are per partition. So the workers' keys never overlap.
    """
    started = time.perf_counter()
    async with reader.consumer(bootstrap) as kafka:
        tps = await reader.partitions_of(kafka, topics)
        first = await reader.offsets_at(kafka, tps, reader.EARLIEST)
        ends = await reader.offsets_at(kafka, tps, reader.LATEST)
    ranges = {tp: (first[tp], ends[tp]) for tp in tps if ends[tp] > first[tp]}
    total = sum(hi - lo for lo, hi in ranges.values())
    n = max(1, min(workers or os.cpu_count() or 1, SAGA_PARTITIONS))
    if n == 1 or total < PARALLEL_FROM:
        part = await _fold_part(bootstrap, ranges, grace_s * 1000, progress)
        parts = [part]
    else:
        shares = [{tp: r for tp, r in ranges.items() if tp.partition % n == i} for i in range(n)]
        parts = await _fold_in_processes(bootstrap, shares, grace_s * 1000, total, progress)
    fold = _merged(parts, grace_s * 1000)
    fold.recovered()
    fold.live = True  # a catch-up, if any, keeps the aggregates up to date
    fold.prune(int(time.time() * 1000) if now_ms is None else now_ms, retention_h)
    return Rebuilt(
        app_id,
        fold,
        {key_of(tp): ends[tp] for tp in tps},
        records=sum(p.records for p in parts),
        fold_seconds=time.perf_counter() - started,
    )


# Below this many records one process folds them: starting another costs more than it saves.
PARALLEL_FROM = 20_000


@dataclass
class _Part:
    """What one worker folded: its tables and counters (picklable, to cross processes)."""

    tables: dict[str, dict[str, Any]]
    positions: dict[str, int]
    records: int
    late: int
    undecodable: int
    last_error: str


async def _fold_part(
    bootstrap: str,
    ranges: Mapping[TopicPartition, tuple[int, int]],
    grace_ms: int,
    progress: Progress | None = None,
) -> _Part:
    fold = Fold(grace_ms, live=False)
    records = 0
    if ranges:
        async with reader.consumer(bootstrap) as kafka:
            records = await _fold_ranges(kafka, fold, ranges, progress)
    return _Part(
        {name: dict(table) for name, table in fold.tables.items()},
        fold.positions,
        records,
        fold.late,
        fold.undecodable,
        fold.last_error,
    )


def _merged(parts: list[_Part], grace_ms: int) -> Fold:
    fold = Fold(grace_ms, live=False)
    for part in parts:
        for name, table in part.tables.items():
            fold.tables[name].update(table)
        fold.positions.update(part.positions)
        fold.late += part.late
        fold.undecodable += part.undecodable
        fold.last_error = part.last_error or fold.last_error
    return fold


_done: Any = None  # in a worker process: its slot of the shared progress counters


def _worker_init(done: Any) -> None:
    global _done
    _done = done


def _worker(
    bootstrap: str, ranges: dict[TopicPartition, tuple[int, int]], grace_ms: int, slot: int
) -> _Part:
    def progress(done: int, _total: int) -> None:
        _done[slot] = done

    return asyncio.run(_fold_part(bootstrap, ranges, grace_ms, progress))


async def _fold_in_processes(
    bootstrap: str,
    shares: list[dict[TopicPartition, tuple[int, int]]],
    grace_ms: int,
    total: int,
    progress: Progress | None,
) -> list[_Part]:
    # fork is quick (no imports to redo) but unsafe with other threads alive (a lock one of
    # them holds stays held in the child): then spawn.
    method = "fork" if threading.active_count() == 1 and sys.platform == "linux" else "spawn"
    context = multiprocessing.get_context(method)
    done = context.Array("q", len(shares), lock=False)
    loop = asyncio.get_running_loop()
    with concurrent.futures.ProcessPoolExecutor(
        len(shares), mp_context=context, initializer=_worker_init, initargs=(done,)
    ) as pool:
        futures = [
            loop.run_in_executor(pool, _worker, bootstrap, share, grace_ms, i)
            for i, share in enumerate(shares)
        ]
        gathered = asyncio.gather(*futures)
        while not gathered.done():
            await asyncio.wait([gathered], timeout=0.2)
            if progress:
                progress(sum(done), total)
        return list(await gathered)


async def catch_up(bootstrap: str, rebuilt: Rebuilt, live_positions: Mapping[str, int]) -> int:
    """Fold what the live service has already folded beyond the rebuild's end offsets."""
    ranges = {
        tp_of(key): (rebuilt.read_to[key], pos)
        for key, pos in live_positions.items()
        if key in rebuilt.read_to and pos > rebuilt.read_to[key]
    }
    if not ranges:
        return 0
    async with reader.consumer(bootstrap) as kafka:
        n = await _fold_ranges(kafka, rebuilt.fold, ranges, newer=rebuilt.newer)
    for tp, (_, hi) in ranges.items():
        rebuilt.read_to[key_of(tp)] = hi
    rebuilt.records += n
    return n


def changelog_specs(app_id: str) -> list[TopicSpec]:
    return [
        TopicSpec(changelog_topic(app_id, name), "compacted", SAGA_PARTITIONS, False)
        for name in TABLES
    ]


async def refuse_existing(bootstrap: str, app_id: str) -> None:
    """Never write into changelogs that exist already (another rebuild's, or a live app's)."""
    async with reader.consumer(bootstrap) as kafka:
        have = await reader.existing_topics(kafka)
    taken = sorted(s.name for s in changelog_specs(app_id) if s.name in have)
    if taken:
        raise EventLogError(
            f"{', '.join(taken)} exist already: choose a fresh --app-id "
            f"(or drop them with `shop events rebuild analytics --drop {app_id}`)"
        )


async def write_changelogs(bootstrap: str, rebuilt: Rebuilt) -> None:
    """The tables as `app_id`'s faust changelog topics, and its group at the offsets read to.

    Faust writes a table's changelog record with the JSON codec for key and value (no key or
    value type on these tables) and, with use_partitioner, lets the producer's default
    partitioner place it by key: an aiokafka producer sending the same bytes with no partition
    places it on the same partition. One record per key is what compaction would leave.
    """
    started = time.perf_counter()
    try:
        await ensure_topics(bootstrap, changelog_specs(rebuilt.app_id))
    except TopicError as exc:
        raise EventLogError(str(exc)) from None
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    try:
        await producer.start()
    except (KafkaError, OSError) as exc:
        await producer.stop()
        raise EventLogError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    try:
        futures = []
        for name, table in rebuilt.fold.tables.items():
            topic = changelog_topic(rebuilt.app_id, name)
            written = 0
            for key, value in table.items():
                if not value:
                    continue
                futures.append(
                    await producer.send(
                        topic,
                        key=orjson.dumps(key, option=FAUST_JSON),
                        value=orjson.dumps(value, option=FAUST_JSON),
                    )
                )
                written += 1
            rebuilt.changelog_records[name] = written
        await asyncio.gather(*futures)
    except KafkaError as exc:
        raise EventLogError(f"could not write the changelogs: {exc}") from None
    finally:
        await producer.stop()
    # A fresh group (refuse_existing checked the id is unused): commit from outside it.
    offsets = {tp_of(k): OffsetAndMetadata(v, "") for k, v in rebuilt.read_to.items()}
    async with reader.consumer(bootstrap, group_id=rebuilt.app_id) as kafka:
        kafka.assign(list(offsets))
        try:
            await kafka.commit(offsets)
        except KafkaError as exc:
            raise EventLogError(f"could not commit offsets for {rebuilt.app_id}: {exc}") from None
    rebuilt.write_seconds += time.perf_counter() - started


async def drop(bootstrap: str, app_id: str) -> list[str]:
    """Delete a rebuild's changelog topics and its consumer group; the names deleted."""
    names = [s.name for s in changelog_specs(app_id)]
    async with reader.consumer(bootstrap) as kafka:
        have = await reader.existing_topics(kafka)
    present = [n for n in names if n in have]
    if present:
        async with reader.admin(bootstrap) as client:
            await client.delete_topics(present, timeout_ms=30_000)

    async def delete_group(client: AIOKafkaAdminClient) -> None:
        coordinator = await client.find_coordinator(app_id)
        await client._send_request(DeleteGroupsRequest([app_id]), coordinator)

    await groups.with_coordinator(bootstrap, app_id, delete_group)
    return present


# --- the live side -------------------------------------------------------------------------------


class Unreachable(EventLogError):
    """The live analytics service did not answer."""


async def fetch_live(url: str, http_timeout_s: float = 10.0) -> dict[str, Any]:
    """The live service's /api/state."""
    try:
        async with httpx.AsyncClient(timeout=http_timeout_s) as client:
            r = await client.get(url.rstrip("/") + "/api/state")
    except httpx.HTTPError as exc:
        raise Unreachable(f"cannot reach the analytics service at {url}: {exc}") from None
    if r.status_code != 200:
        raise EventLogError(f"{r.status_code} from {url}/api/state: {r.text[:200]}")
    body: dict[str, Any] = orjson.loads(r.content)
    return body


async def live_positions(bootstrap: str, live: Mapping[str, Any]) -> dict[str, int]:
    """What the live service has folded: its own count since it started, and before that what
    its consumer group committed (a restarted worker resumes there and has folded up to it)."""
    positions = dict(live.get("positions") or {})
    for tp, offset in (await groups.committed(bootstrap, str(live["app_id"]))).items():
        key = key_of(tp)
        positions[key] = max(positions.get(key, 0), offset)
    return positions


def behind(rebuilt: Mapping[str, int], live: Mapping[str, int]) -> dict[str, int]:
    """Per partition, how many offsets of what the rebuild folded the live side has not folded."""
    return {key: pos - live.get(key, 0) for key, pos in rebuilt.items() if live.get(key, 0) < pos}


async def settled_live(
    bootstrap: str, url: str, rebuild_positions: Mapping[str, int], wait_s: float
) -> tuple[dict[str, Any], dict[str, int], dict[str, int]]:
    """The live state once it is recovered and has folded what the rebuild did (or the last one
    seen at the deadline): the state, its positions, and how far behind it still is."""
    deadline = time.monotonic() + wait_s
    while True:
        live = await fetch_live(url)
        positions = await live_positions(bootstrap, live)
        lag = behind(rebuild_positions, positions)
        if live.get("ready") and not lag:
            return live, positions, {}
        if time.monotonic() > deadline:
            return live, positions, lag or {"(not recovered)": 0}
        await asyncio.sleep(0.5)


# --- the comparison (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    what: str
    live: Any
    rebuilt: Any

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "live": self.live, "rebuilt": self.rebuilt}


@dataclass(frozen=True)
class Row:
    """One line of the printed comparison."""

    what: str
    live: str
    rebuilt: str
    match: bool


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    @property
    def differing(self) -> list[str]:
        """The sections that differ (tables.orders, totals.placed, windows, low_stock ...)."""
        return [r.what for r in self.rows if not r.match]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists as path -> leaf (`revenue.USD`, `by_units[0].sku`)."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
        if not value:
            out[prefix] = []
    else:
        out[prefix] = value
    return out


def diff(live: Any, rebuilt: Any, prefix: str) -> list[Difference]:
    a, b = flatten(live, prefix), flatten(rebuilt, prefix)
    return [
        Difference(path, a.get(path), b.get(path))
        for path in sorted(set(a) | set(b))
        if a.get(path) != b.get(path)
    ]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def compare(live: Mapping[str, Any], rebuilt: Mapping[str, Any]) -> Comparison:
    """Both sides' /api/state bodies: tables, totals, 1-minute windows and low-stock alerts.

    Windows are compared from the later of the two retention horizons on: a minute one side has
    already forgotten is not a difference.
    """
    out = Comparison()

    def section(what: str, a: Any, b: Any, shown_a: str, shown_b: str) -> None:
        found = diff(a, b, what)
        out.rows.append(Row(what, shown_a, shown_b, not found))
        out.differences.extend(found)

    for name in sorted(set(live.get("tables", {})) | set(rebuilt.get("tables", {}))):
        a = live.get("tables", {}).get(name)
        b = rebuilt.get("tables", {}).get(name)

        def shown(t: Mapping[str, Any] | None) -> str:
            return "-" if t is None else f"{t['entries']} entries, {t['digest'][:12]}"

        section(f"tables.{name}", a, b, shown(a), shown(b))
    live_totals, rebuilt_totals = live.get("totals", {}), rebuilt.get("totals", {})
    for name in sorted(set(live_totals) | set(rebuilt_totals)):
        a, b = live_totals.get(name), rebuilt_totals.get(name)
        section(f"totals.{name}", a, b, _short(a), _short(b))
    horizon = max(int(live.get("horizon") or 0), int(rebuilt.get("horizon") or 0))
    wa = {w["start"]: w for w in live.get("windows", []) if w["start"] >= horizon}
    wb = {w["start"]: w for w in rebuilt.get("windows", []) if w["start"] >= horizon}
    found = []
    for start in sorted(set(wa) | set(wb)):
        found += diff(wa.get(start), wb.get(start), f"windows[{_iso(start)}]")
    differing = len({d.what.split("]")[0] for d in found})
    out.rows.append(
        Row(
            "windows (1 minute)",
            f"{len(wa)}",
            f"{len(wb)}" + (f", {differing} differ" if differing else ""),
            not found,
        )
    )
    out.differences += found
    la = {a["sku"]: a for a in live.get("low_stock", [])}
    lb = {a["sku"]: a for a in rebuilt.get("low_stock", [])}
    section("low_stock", la, lb, f"{len(la)} alerts", f"{len(lb)} alerts")
    return out
