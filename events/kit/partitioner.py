"""Kafka's default partitioner, each key's partition remembered.

aiokafka places a keyed record as the Java client does: murmur2 of the key, its sign bit cleared,
modulo the partition count. Its murmur2 is pure Python, 4.4-6.3 µs for an order id, on every
send (`murmur2` here is the same function in half the time: it reads the key's 4-byte words at
once). An order's id keys every message of its saga (six from the order service alone) and every
analytics table write about it, so most keys come back within seconds. A bounded cache of their
partitions places every record on the same partition as before, for 0.06 µs when the key was seen.

Small on purpose. Analytics' changelog producer with a 16,384-key cache held 60-70 MiB more
(`python -m bench.analytics_memory --orders 100000 --rounds 4`: 330 against 264 MiB, twice each)
for 5 MiB of entries. The reason, found later: each key was faust's json of an order id, which
orjson returns in a 4 KiB allocation, so a cache of keys held 4 KiB apiece (analytics' tables
now write their keys compact, `analytics_service.tablestore.CompactJSON`). Analytics' changelog
producer uses the cache its tables keep of each key's partition. The services' keys come from
`str.encode` and from asyncpg, at their own size. 4,096 keys are eight seconds of a service's
orders at 500 orders/s.
"""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Callable, Sequence

CACHED_KEYS = 4_096

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as aiokafka's: the same
    value for every key, in about half the time. aiokafka's takes each 4-byte word apart
    byte by byte in Python; here `struct` reads the words at once, and the masking is done once
    per step."""
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    extra = length & 3
    if extra:
        tail = data[words << 2 :]
        if extra >= 3:
            h ^= tail[2] << 16
        if extra >= 2:
            h ^= tail[1] << 8
        h = ((h ^ tail[0]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner puts a key on: murmur2 of the key, its sign bit
    cleared, modulo the partition count."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class KeyPartitioner:
    """aiokafka's DefaultPartitioner, with each key's partition from `partition_of`
    (`key_partition`, or a cached copy of it)."""

    def __init__(self, partition_of: Callable[[bytes, int], int] = key_partition) -> None:
        self._partition_of = partition_of

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:  # as the default one: any available partition
            return random.choice(available or all_partitions)
        return all_partitions[self._partition_of(key, len(all_partitions))]


class CachedPartitioner(KeyPartitioner):
    """aiokafka's DefaultPartitioner with each key's partition cached (at most `maxsize` keys)."""

    def __init__(self, maxsize: int = CACHED_KEYS) -> None:
        self._cached = functools.lru_cache(maxsize=maxsize)(key_partition)
        super().__init__(self._cached)

    def cache_info(self) -> functools._CacheInfo:
        return self._cached.cache_info()
