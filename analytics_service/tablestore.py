"""Where the faust tables live: RocksDB (faust's rocksdict store), bounded, placed by key.

Faust's RocksDB store keeps one database per table partition under the app's table folder, and
restores each from its changelog partition (only the records after the offset it last wrote, when
the folder is kept). Two changes, both to faust's `stores.rocksdb` classes:

- **Placement by key.** With `use_partitioner` tables the changelog record of a key goes to the
  key's partition (the producer's murmur2 partitioner), but faust's `Store._set` writes the local
  copy into the database of the *current event's* partition. The fold writes a whole batch after
  its last event, so a key would land in whichever database that event came from, a later update
  in another, and recovery puts the changelog's copy in a third: reads that search every database
  (faust-streaming/faust#130, #144) can find a stale copy first, and iterating the table (what
  `Fold.recovered()` does) sees an order twice. Here every read and write goes to the database of
  the key's changelog partition, so the local databases hold exactly what their changelog
  partitions hold (robinhood/faust#478 proposed the same, unmerged).
- **Bounded memory.** Faust opens each database with its own 2 GiB block cache and 3 x 64 MiB
  memtables (4 tables x 6 partitions of them here). These databases share one block cache (which
  also holds index and filter blocks) and one memtable budget (a write buffer manager).
- **Keys the size of their bytes** (`CompactJSON`). Faust's json codec writes with orjson, whose
  bytes sit in a 4 KiB allocation whatever their length; the key-partition cache below keeps
  16,384 keys, so its order ids held 64 MiB where their bytes are 0.6.
"""

from __future__ import annotations

import functools
from typing import Any

import faust
import rocksdict
from faust.serializers import codecs
from faust.stores import rocksdb

from analytics_service.settings import Settings
from events.kit import partitioner

MIB = 1024 * 1024


class CompactJSON(codecs.json):
    """Faust's json codec, each result copied into bytes of its own length.

    orjson (faust's json when it is installed) returns its output in the 4 KiB buffer it wrote
    it to: `sys.getsizeof` says 71 bytes for a quoted order id, the allocator holds 4,094. A
    result dropped at once costs nothing more; a key kept (in `key_partition`'s cache, in
    faust's key index) holds the whole buffer. Same bytes as faust's json, so the tables and
    their changelogs read the same."""

    def _dumps(self, s: Any) -> bytes:
        return bytes(memoryview(super()._dumps(s)))


COMPACT_JSON = CompactJSON()


class BoundedOptions(rocksdb.RocksDBOptions):
    """Faust's RocksDB options, with the cache and memtable budget shared by every database."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            write_buffer_size=settings.rocksdb_write_buffer_mb * MIB,
            max_write_buffer_number=2,
            use_rocksdict=True,
        )
        self.cache = rocksdict.Cache(settings.rocksdb_cache_mb * MIB)
        self.write_buffers = rocksdict.WriteBufferManager(
            settings.rocksdb_memtables_mb * MIB, False
        )

    def as_options(self) -> rocksdict.Options:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_max_open_files(-1 if self.max_open_files is None else self.max_open_files)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_write_buffer_manager(self.write_buffers)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_block_cache(self.cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options


# Each key's partition, kept for the recently used keys: an order's facts are read, written and
# sent to the changelog within a second, one hash for the three.
key_partition = functools.lru_cache(maxsize=16_384)(partitioner.key_partition)

# The changelog producer's partitioner: Kafka's default placement, through the same cache.
changelog_partitioner = partitioner.KeyPartitioner(key_partition)


class Store(rocksdb.Store):
    """A table partition per RocksDB database, each key in its changelog partition's database."""

    def _db_for_key(self, key: bytes) -> Any:
        partitions = self.table.partitions or self.app.conf.topic_partitions
        return self._db_for_partition(key_partition(key, partitions))

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._db_for_key(key).put(key, value)

    def _get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db_for_key(key).get(key)
        return value

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None

    def _del(self, key: bytes) -> None:
        self._db_for_key(key).delete(key)


class Table(faust.Table[str, Any]):
    """A faust table kept by `Store`, opened with the given shared options, its keys (in the
    store and in the changelog) written by `CompactJSON`."""

    def __init__(self, app: Any, name: str, options: BoundedOptions, **kwargs: Any) -> None:
        self.bounded = options
        super().__init__(app, name=name, beacon=app.tables.beacon, **kwargs)
        # faust sets it from the key type (none here: json); read when the store opens and
        # for each changelog record
        self.key_serializer = COMPACT_JSON

    def _new_store_by_url(self, url: Any) -> Store:
        store = Store(
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
        )
        store.rocksdb_options = self.bounded
        return store
