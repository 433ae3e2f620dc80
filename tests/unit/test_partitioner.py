"""The producers' partitioner places every keyed record where Kafka's default one does."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from events.kit.partitioner import CachedPartitioner, murmur2
from events.kit.producer import make_producer


def test_every_key_goes_to_the_default_partitioners_partition_the_first_time_and_after() -> None:
    rng = random.Random(7)
    keys = [str(uuid.UUID(int=rng.getrandbits(128))).encode() for _ in range(500)]
    keys += [b"", b"a", b"ab", b"abc", b"SKU-000123", "κλειδί".encode(), bytes(range(256))]
    default = DefaultPartitioner()
    cached = CachedPartitioner(maxsize=64)  # smaller than the keys: evictions too
    for partitions in ([0], list(range(3)), list(range(12)), [2, 5, 7]):
        for key in keys:
            expected = default(key, partitions, partitions)
            assert cached(key, partitions, partitions) == expected  # hashed
            assert cached(key, partitions, partitions) == expected  # remembered
    info = cached.cache_info()
    assert (info.hits, info.misses) == (4 * len(keys), 4 * len(keys))
    assert info.currsize == 64


def test_a_record_without_a_key_goes_to_an_available_partition_or_any_when_none_is() -> None:
    cached = CachedPartitioner()
    assert {cached(None, [0, 1, 2], [1]) for _ in range(20)} == {1}
    assert {cached(None, [0, 1, 2], []) for _ in range(200)} == {0, 1, 2}


async def test_the_kits_producers_use_it_unless_told_otherwise() -> None:
    producer = make_producer("127.0.0.1:9", client_id="unit")
    assert isinstance(producer._partitioner, CachedPartitioner)
    mine = DefaultPartitioner()
    assert make_producer("127.0.0.1:9", client_id="unit", partitioner=mine)._partitioner is mine


def test_murmur2_is_aiokafkas_for_keys_of_every_length_and_byte() -> None:
    rng = random.Random(11)
    for length in range(130):
        for _ in range(12):
            key = rng.randbytes(length)
            assert murmur2(key) == aiokafka_murmur2(key), key
    for key in (bytes(range(256)), b"\xff" * 67, b"\x00" * 9):
        assert murmur2(key) == aiokafka_murmur2(key)


def test_analytics_places_changelog_records_and_table_keys_as_the_default_partitioner(
    tmp_path: Path,
) -> None:
    from analytics_service.settings import Settings
    from analytics_service.stream import AnalyticsStream
    from analytics_service.tablestore import changelog_partitioner, key_partition

    app = AnalyticsStream(Settings(data_dir=tmp_path)).build()
    try:
        assert app.producer.partitioner is changelog_partitioner
    finally:
        app.consumer._thread.thread_loop.close()
    default = DefaultPartitioner()
    rng = random.Random(5)
    keys = [f'"{uuid.UUID(int=rng.getrandbits(128))}"'.encode() for _ in range(300)]
    for key in [*keys, b'"order.events/3"', b"", bytes(range(256))]:
        for n in (1, 6, 12):
            expected = default(key, list(range(n)), [])
            assert changelog_partitioner(key, list(range(n)), []) == expected
            assert key_partition(key, n) == expected
