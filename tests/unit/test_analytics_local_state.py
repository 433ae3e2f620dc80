"""analytics' local table folder: one process at a time, kept only after a clean stop."""

from __future__ import annotations

import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop
from faust.serializers.codecs import get_codec

from analytics_service.settings import Settings
from analytics_service.stream import CLEAN_STOP, AnalyticsStream, DataDirInUse
from analytics_service.tablestore import COMPACT_JSON, BoundedOptions


def stream(data_dir: Path) -> AnalyticsStream:
    return AnalyticsStream(Settings(data_dir=data_dir))


def test_a_second_process_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    first = stream(tmp_path)
    first.claim_local_state(tmp_path / "tables")
    with pytest.raises(DataDirInUse, match="ANALYTICS_DATA_DIR"):
        stream(tmp_path).claim_local_state(tmp_path / "tables")
    first.release_local_state(clean=True)
    second = stream(tmp_path)
    second.claim_local_state(tmp_path / "tables")
    second.release_local_state(clean=False)


def test_tables_are_kept_after_a_clean_stop_and_discarded_after_a_crash(tmp_path: Path) -> None:
    s = stream(tmp_path)
    tables = s.local_dir / "v1" / "tables"
    s.claim_local_state(tables)
    (tables / "orders-0.db").mkdir(parents=True)
    s.release_local_state(clean=True)
    assert (s.local_dir / CLEAN_STOP).exists()

    s.claim_local_state(tables)
    assert (tables / "orders-0.db").exists()
    assert not (s.local_dir / CLEAN_STOP).exists(), "a crash from here on must not look clean"
    s.release_local_state(clean=False)

    s.claim_local_state(tables)
    assert not tables.exists()
    s.release_local_state(clean=False)


def test_every_database_shares_one_cache_and_one_memtable_budget(tmp_path: Path) -> None:
    options = BoundedOptions(Settings(rocksdb_cache_mb=8, rocksdb_memtables_mb=2))
    dbs = [options.open(tmp_path / f"t-{p}.db") for p in range(3)]
    for p, db in enumerate(dbs):
        db.put(b"k%d" % p, b"x" * 100_000)
    assert [db.get(b"k%d" % p) for p, db in enumerate(dbs)] == [b"x" * 100_000] * 3
    assert 0 < options.write_buffers.get_usage() <= 2 * 1024 * 1024
    assert options.write_buffers.get_buffer_size() == 2 * 1024 * 1024
    for db in dbs:
        db.close()


async def test_the_worker_consumer_fetches_with_the_fetch_settings(tmp_path: Path) -> None:
    """faust's driver fixes 1500 ms; a fetch of quiet partitions held that long kept the busy
    ones from being fetched again (analytics trailed its topics by over a second). And it asks
    for 1 byte, so that every few events cost a fetch of their own."""
    s = AnalyticsStream(Settings(data_dir=tmp_path, fetch_max_wait_ms=80, fetch_min_bytes=4096))
    app = s.build()
    thread = app.consumer._thread
    kafka = thread._create_worker_consumer(app.transport)
    try:
        assert (kafka._fetch_max_wait_ms, kafka._fetch_min_bytes) == (80, 4096)
        assert Settings().fetch_min_bytes == 64 * 1024
    finally:
        await kafka._client.close()


async def test_the_worker_consumer_thread_runs_on_uvloop(tmp_path: Path) -> None:
    """faust's driver gives its consumer thread asyncio's selector loop, whose pure-Python
    socket path and self-pipe wake-ups were most of analytics' CPU outside the fold."""
    s = AnalyticsStream(Settings(data_dir=tmp_path))
    app = s.build()
    thread = app.consumer._thread
    assert isinstance(thread.thread_loop, uvloop.Loop)
    assert thread._close_thread_loop_on_stop
    thread.thread_loop.close()


def test_table_keys_are_faust_json_in_bytes_of_their_own_size(tmp_path: Path) -> None:
    """orjson, faust's json, returns its bytes in a 4 KiB allocation whatever their length: the
    key-partition cache's 16,384 order ids held 64 MiB of analytics. The tables' keys are the
    same bytes as faust's json (tables and changelogs written before still read), kept at their
    own size."""
    s = AnalyticsStream(Settings(data_dir=tmp_path))
    app = s.build()
    app.consumer._thread.thread_loop.close()
    ids = [str(uuid.UUID(int=n)) for n in range(2000)]
    json = get_codec("json")
    for table in app.tables.values():
        assert table.key_serializer is COMPACT_JSON
        store = table._new_store()
        assert store.key_serializer is COMPACT_JSON
        assert [store._encode_key(k) for k in ids[:50]] == [json.dumps(k) for k in ids[:50]]

    def bytes_kept_per_key(encode: Callable[[str], bytes]) -> float:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            kept = [encode(k) for k in ids]
            return (tracemalloc.get_traced_memory()[0] - before) / len(kept)
        finally:
            tracemalloc.stop()

    assert bytes_kept_per_key(store._encode_key) < 128
    # the premise: faust's json keeps 4 KiB per key. When an orjson release no longer does, this
    # fails, and CompactJSON can go.
    assert bytes_kept_per_key(json.dumps) > 1024
