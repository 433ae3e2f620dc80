"""What the outbox relay pays per record to hand it to aiokafka: a `send` per record, or one
record batch per partition (`create_batch` / `send_batch`, as `OutboxRelay` does), in cycles of
the same rows, each cycle waiting for Kafka's acknowledgements as the relay does.

    shop infra up            # or any broker
    python -m bench.relay_send --bootstrap 127.0.0.1:9092 --rows 10,30,200

Prints the process's CPU time per record for each way and their ratio, rounds alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import uuid
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from events.kit.admin import ensure_topics
from events.kit.partitioner import key_partition
from events.kit.producer import make_producer
from events.topics import TopicSpec

VALUE = b'{"payload":"' + b"x" * 540 + b'"}'  # an envelope's size
HEADERS = [
    ("event_id", str(uuid.uuid4()).encode()),
    ("event_type", b"AuthorizePayment"),
    ("correlation_id", str(uuid.uuid4()).encode()),
]
PARTITIONS = 6


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def per_record(producer: AIOKafkaProducer, topic: str, keys: list[bytes]) -> None:
    futures = [await producer.send(topic, VALUE, key=k, headers=HEADERS) for k in keys]
    await asyncio.gather(*futures)


async def per_partition(producer: AIOKafkaProducer, topic: str, keys: list[bytes]) -> None:
    batches: dict[int, BatchBuilder] = {}
    for k in keys:
        partition = key_partition(k, PARTITIONS)
        batch = batches.get(partition)
        if batch is None:
            batch = batches[partition] = producer.create_batch()
        batch.append(key=k, value=VALUE, timestamp=None, headers=HEADERS)
    futures = []
    for partition, batch in batches.items():
        batch.close()
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*futures)


Way = Callable[[AIOKafkaProducer, str, list[bytes]], Awaitable[None]]


async def measure(bootstrap: str, rows: int, records: int, rounds: int) -> dict[str, list[float]]:
    topic = f"bench.relay.{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [TopicSpec(topic, "event", PARTITIONS)])
    producer = make_producer(bootstrap, client_id="bench-relay-send")
    await producer.start()
    keys = [str(uuid.uuid4()).encode() for _ in range(1_000)]
    ways: dict[str, Way] = {"send per record": per_record, "batch per partition": per_partition}
    spent: dict[str, list[float]] = {name: [] for name in ways}
    try:
        await per_record(producer, topic, keys[:rows])  # metadata and connections first
        for _ in range(rounds):
            for name, way in ways.items():
                started = _cpu_s()
                for cycle in range(records // rows):
                    at = cycle * rows % len(keys)
                    await way(producer, topic, (keys + keys)[at : at + rows])
                spent[name].append((_cpu_s() - started) / (records // rows * rows) * 1e6)
    finally:
        await producer.stop()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--rows", default="10,30,200", help="records per cycle, comma-separated")
    parser.add_argument("--records", type=int, default=8_000, help="records per way and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for rows in (int(r) for r in args.rows.split(",")):
        spent = asyncio.run(measure(args.bootstrap, rows, args.records, args.rounds))
        cells = ", ".join(f"{name} {min(us):.1f}-{max(us):.1f} µs" for name, us in spent.items())
        ratio = (
            sorted(spent["batch per partition"])[len(spent["batch per partition"]) // 2]
            / (sorted(spent["send per record"])[len(spent["send per record"]) // 2])
        )
        print(f"{rows:4d} rows a cycle: {cells} of CPU a record; batch/send {ratio:.2f}x")


if __name__ == "__main__":
    main()
