"""The faust-streaming side: one agent feeds the *.events topics to the Fold over faust tables.

The fold itself (tables, lateness, aggregates) lives in fold.py, shared with `shop events rebuild
analytics`; this module wires it to faust: the tables with their changelog topics (restored on
start), the agent, the metrics, and pruning old minutes as time goes by.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import shutil
import time
from pathlib import Path
from typing import IO, Any

import faust
from prometheus_client import Counter, Gauge

from analytics_service.domain import Aggregates
from analytics_service.fold import (
    FOLDED,
    SOURCE_TOPICS,
    TABLES,
    Fold,
    Headers,
    WriteBehind,
    changelog_topic,
    passed_over,
)
from analytics_service.settings import Settings
from analytics_service.tablestore import BoundedOptions, Table, changelog_partitioner
from analytics_service.transport import (
    BUFFERED_BUNDLES,
    Bundle,
    BundleSchema,
    use_transport,
)
from events.kit.admin import cluster_replication_factor, ensure_topics
from events.kit.kafkaconf import client_options, faust_credentials
from events.kit.logging import get_logger
from events.topics import SAGA_PARTITIONS, TopicSpec

log = get_logger(__name__)

EVENTS = Counter("analytics_events_total", "Events folded into the analytics.", ["type"])
LATE = Counter("analytics_late_events_total", "Events past the grace period (totals only).")
UNDECODABLE = Counter("analytics_undecodable_total", "Records that are not valid envelopes.")
CHANGELOG_WRITES = Counter(
    "analytics_changelog_writes_total", "Table keys written (one changelog record each)."
)
RECOVERED = Gauge("analytics_orders_in_table", "Orders known to the analytics tables.")
ROCKSDB_CACHE = Gauge("analytics_rocksdb_cache_bytes", "The tables' shared RocksDB block cache.")
ROCKSDB_MEMTABLES = Gauge(
    "analytics_rocksdb_memtable_bytes",
    "Memory of the tables' RocksDB memtables (unflushed writes).",
)

__all__ = ["SOURCE_TOPICS", "TABLES", "AnalyticsStream", "DataDirInUse"]

# Written when the app stopped cleanly (every changelog record it wrote was acknowledged).
CLEAN_STOP = "clean-stop"


class DataDirInUse(RuntimeError):
    """Another process holds this app's local table state."""


class AnalyticsStream:
    """The faust app, its tables and the fold the HTTP side reads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.fold = Fold(settings.grace_s * 1000)
        self.recovered = asyncio.Event()
        self.stopping = asyncio.Event()
        self.app: Any = None
        self._lock: IO[bytes] | None = None
        self._behind: dict[str, WriteBehind] = {}
        # events folded whose table writes wait for the next flush (unacknowledged till then)
        self._held: list[Any] = []

    @property
    def local_dir(self) -> Path:
        """This app id's local state: faust's data dir (its tables under v1/tables)."""
        return self.settings.data_dir / self.settings.app_id

    @property
    def aggregates(self) -> Aggregates:
        return self.fold.aggregates

    def build(self, replication_factor: int = 1) -> Any:
        s = self.settings
        self.local_dir.mkdir(parents=True, exist_ok=True)
        app = faust.App(
            s.app_id,
            broker=[f"kafka://{h.strip()}" for h in s.kafka_bootstrap_servers.split(",")],
            # On disk (RocksDB through rocksdict): the orders table grows with the log.
            store="rocksdb://",
            datadir=str(self.local_dir),
            web_enabled=False,
            autodiscover=False,
            topic_partitions=SAGA_PARTITIONS,
            topic_replication_factor=replication_factor,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=s.commit_interval_s,
            broker_session_timeout=s.session_timeout_s,
            broker_heartbeat_interval=s.session_timeout_s / 4,
            broker_credentials=faust_credentials(s),
            # Changelog writes share produce requests (faust's default, 0, sent one per update;
            # the changelog is only read on recovery, so 20 ms more costs no freshness).
            producer_linger=0.02,
            # Kafka's default placement, with a murmur2 twice as fast as aiokafka's (3.4 % of
            # analytics' samples at 300 orders/s) and the store's cache of each key's partition
            producer_partitioner=changelog_partitioner,
        )
        use_transport(app, s.fetch_max_wait_ms, SOURCE_TOPICS, passed_over, s.fetch_min_bytes)
        # use_partitioner: changelog records are placed by key rather than by the source record's
        # partition (faust's co-partitioning check misreads the changelog as having 0 partitions
        # on this broker). One worker holds every partition, so recovery reads them all.
        table_options: dict[str, Any] = {
            "default": None,
            "partitions": SAGA_PARTITIONS,
            "use_partitioner": True,
        }
        options = BoundedOptions(s)
        ROCKSDB_CACHE.set_function(options.cache.get_usage)
        ROCKSDB_MEMTABLES.set_function(options.write_buffers.get_usage)
        tables = {name: Table(app, name, options, **table_options) for name in TABLES}
        for table in tables.values():
            app.tables.add(table)
        behind = {name: WriteBehind(table, s.table_cache_keys) for name, table in tables.items()}
        self._behind = behind
        aggregates = self.fold.aggregates
        self.fold = Fold(s.grace_s * 1000, behind)
        self.fold.aggregates = aggregates
        tables["orders"].on_recover(self._on_recovered)

        def revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            self._forget_cached()

        app.on_partitions_revoked.connect(revoked)

        # Each value is a Bundle of one partition's fetched records (transport.py). Made as
        # app.topic() would, which drops its maxsize argument (faust-streaming 0.15).
        source = faust.Topic(
            app, topics=SOURCE_TOPICS, schema=BundleSchema(), maxsize=BUFFERED_BUNDLES
        )

        # Fetches are folded in batches (up to fold_batch_max, or what came within
        # fold_batch_ms), into the aggregates at once. The tables' writes wait in memory for
        # the next flush (every table_flush_ms), which writes each key they changed once, one
        # changelog record for all of an order's updates since the last. An event is
        # acknowledged (so its offset may be committed) only after that flush: it is held by
        # one more reference than the stream's own, let go by `flush_tables`.
        async def fold(stream: Any) -> None:
            async for events in stream.take_events(s.fold_batch_max, s.fold_batch_ms / 1000):
                for event in events:
                    self.fold_event(event)

        app.agent(source, name="analytics-fold")(fold)
        self.app = app
        return app

    def fold_event(self, event: Any) -> None:
        """Fold the records of an event's bundle, and hold the event unacknowledged (one
        reference more than the stream's) until `flush_tables` has written what they changed."""
        bundle: Bundle = event.value
        for r in bundle.records:
            self.apply(r.topic, r.partition, r.offset, r.value, r.headers)
        m = event.message
        self.fold.read_to(m.topic, m.partition, bundle.end)
        m.incref()
        self._held.append(event)

    def flush_tables(self) -> None:
        """Write what the fold changed to the tables (each key once, one changelog record),
        then acknowledge the events it came from."""
        written = sum(table.flush() for table in self._behind.values())
        CHANGELOG_WRITES.inc(written)
        held, self._held = self._held, []
        for event in held:
            event.ack()

    def _forget_cached(self, *_: Any, **__: Any) -> None:
        """The tables may have changed under their caches (recovered, or partitions moved)."""
        for table in self._behind.values():
            table.forget()

    async def _on_recovered(self) -> None:
        self._forget_cached()
        self.fold.recovered()
        RECOVERED.set(len(self.fold.orders))
        self.recovered.set()
        log.info("analytics tables recovered", orders=len(self.fold.orders))

    def apply(
        self, topic: str, partition: int, offset: int, raw: bytes | None, headers: Headers = ()
    ) -> None:
        """Fold one record (inside the agent) and count it."""
        late = self.fold.late
        kind = self.fold.apply(topic, partition, offset, raw, headers or ())
        if kind is None:
            UNDECODABLE.inc()
            log.warning(
                "undecodable record",
                topic=topic,
                partition=partition,
                offset=offset,
                error=self.fold.last_error,
            )
            return
        if kind not in FOLDED:
            return
        EVENTS.labels(kind).inc()
        if self.fold.late != late:
            LATE.inc()

    def low_stock(self) -> list[dict[str, Any]]:
        return self.fold.low_stock()

    def watermark(self) -> int | None:
        return self.fold.watermark()

    async def create_changelogs(self) -> None:
        """Create the tables' changelog topics before faust starts.

        Faust can create them itself, but its producer then keeps metadata from before they
        existed and cannot place the first changelog record ("topic not found in metadata").
        """
        specs = [
            TopicSpec(
                changelog_topic(self.settings.app_id, name), "compacted", SAGA_PARTITIONS, False
            )
            for name in TABLES
        ]
        await ensure_topics(
            self.settings.kafka_bootstrap_servers, specs, client=client_options(self.settings)
        )

    def claim_local_state(self, tables: Path) -> None:
        """Lock this app's data dir for the process; keep its tables only after a clean stop.

        Local RocksDB state may hold writes whose changelog records were never acknowledged (a
        crash between the two): a restart would keep them while the changelog lacks them, so
        the next recovery elsewhere would differ. After anything but a clean stop the tables
        are rebuilt from the changelog instead, as with an empty folder.
        """
        self.local_dir.mkdir(parents=True, exist_ok=True)
        lock = (self.local_dir / "lock").open("wb")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DataDirInUse(
                f"{self.local_dir} is in use by another process: give each analytics "
                "process its own ANALYTICS_DATA_DIR"
            ) from None
        self._lock = lock
        clean = self.local_dir / CLEAN_STOP
        if clean.exists():
            clean.unlink()
            log.info("analytics local tables kept", path=str(tables))
        elif tables.exists():
            shutil.rmtree(tables)
            log.warning("analytics local tables discarded: the last run did not stop cleanly")

    def release_local_state(self, clean: bool) -> None:
        if clean:
            (self.local_dir / CLEAN_STOP).touch()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Run the faust app until `stopping` is set; prune old minutes as time goes by."""
        self.stopping = stopping
        s = self.settings
        app = self.build(
            await cluster_replication_factor(s.kafka_bootstrap_servers, client_options(s))
        )
        self.claim_local_state(Path(app.conf.tabledir))
        await self.create_changelogs()
        clean = False
        try:
            await app.start()
            log.info("analytics stream started", app_id=self.settings.app_id)
            # not a faust timer: faust stops those first, then waits for every event to be
            # acknowledged (on a rebalance too), which needs the flushes to go on
            flusher = asyncio.create_task(self._flush_every(s.table_flush_ms / 1000))
            try:
                while not stopping.is_set():
                    self.fold.prune(int(time.time() * 1000), self.settings.retention_h)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), 60)
            finally:
                try:
                    await app.stop()
                finally:
                    flusher.cancel()
                log.info("analytics stream stopped")
            clean = not app.crashed
        finally:
            self.release_local_state(clean)

    async def _flush_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.flush_tables()
            except Exception as exc:  # the agent would have crashed the app: so does this
                log.exception("analytics table flush failed")
                await self.app.crash(exc)
                return
