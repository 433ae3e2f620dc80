"""`shop events replay` and `shop events redrive` with real inbox consumers on topics of their own."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner, Result

from deploy.cli import app
from deploy.eventlog import groups, reader
from events.envelope import encode, headers_for, wrap
from events.kit.inbox import InboxConsumer
from tests.integration.kit_support import (
    KitTypes,
    eventually,
    recording_handler,
    running,
)

pytestmark = pytest.mark.integration


async def shop(bootstrap: str, *args: str) -> Result:
    # The commands run their own event loop, so they run in a thread beside the test's loop.
    return await asyncio.to_thread(
        CliRunner().invoke, app, ["events", *args, "--bootstrap", bootstrap], env={"COLUMNS": "160"}
    )


def only_json(result: Result) -> Any:
    return orjson.loads(next(x for x in result.stdout.splitlines() if x.startswith("{")))


@pytest.fixture(scope="module")
def pool(kit_pool: asyncpg.Pool) -> asyncpg.Pool:
    return kit_pool


def consumer(
    stack: Any,
    types: KitTypes,
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    group: str,
    fail_when_n: int | None = None,
) -> InboxConsumer:
    return InboxConsumer(
        name=group,
        topics=[types.topic],
        handlers={types.ItemAdded: recording_handler(types, group, fail_when_n=fail_when_n)},
        registry=types.registry,
        pool=pool,
        producer=producer,
        bootstrap_servers=stack.kafka_bootstrap,
        service="evcli",
        backoff_ms=10,
        max_attempts=2,
        consumer_options={"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
    )


async def publish(producer: AIOKafkaProducer, types: KitTypes, n: int) -> None:
    futures = []
    for i in range(n):
        msg = types.ItemAdded(item_id=uuid.uuid4(), n=i)
        env = wrap(msg, producer="test")
        futures.append(
            await producer.send(
                types.topic, encode(env), key=msg.partition_key().encode(), headers=headers_for(env)
            )
        )
    await asyncio.gather(*futures)


async def applied(pool: asyncpg.Pool, group: str) -> list[int]:
    rows = await pool.fetch("SELECT n FROM applied WHERE consumer = $1 ORDER BY n", group)
    return [r["n"] for r in rows]


async def test_replay_is_refused_while_the_group_is_live_and_then_reprocesses_with_effects_once(
    stack: Any, types: KitTypes, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    bootstrap = stack.kafka_bootstrap
    group = f"evcli-replay-{uuid.uuid4().hex[:6]}"
    await publish(producer, types, 30)
    async with running(consumer(stack, types, pool, producer, group)) as live:

        async def all_applied() -> bool:
            return len(await applied(pool, group)) == 30

        await eventually(all_applied)
        await eventually(lambda: _committed_total(bootstrap, group, 30))
        refused = await shop(bootstrap, "replay", "--group", group, "--to-earliest")
        assert refused.exit_code == 1
        assert "live member" in refused.output
        dry = await shop(
            bootstrap, "replay", "--group", group, "--to-earliest", "--dry-run", "--json"
        )
        assert dry.exit_code == 0, dry.output
        plan = only_json(dry)
        assert plan["members"] == 1
        assert sum(c["current"] or 0 for c in plan["changes"]) == 30
        assert all(c["new"] == 0 for c in plan["changes"])
        future = await shop(
            bootstrap,
            "replay",
            "--group",
            group,
            "--to-time",
            "2100-01-01T00:00:00Z",
            "--dry-run",
            "--json",
        )
        assert [(c["current"], c["new"]) for c in only_json(future)["changes"]] == [
            (c["current"], c["current"] or 0) for c in plan["changes"]
        ]
        assert live.stats.applied == 30

    assert sum((await groups.committed(bootstrap, group)).values()) == 30
    reset = await shop(bootstrap, "replay", "--group", group, "--to-earliest")
    assert reset.exit_code == 0, reset.output
    assert "reset 3 partitions" in reset.output
    assert sum((await groups.committed(bootstrap, group)).values()) == 0

    async with running(consumer(stack, types, pool, producer, group)) as again:

        async def reprocessed() -> bool:
            return again.stats.duplicates == 30

        await eventually(reprocessed)
        assert again.stats.applied == 0
    assert await applied(pool, group) == list(range(30))


async def _committed_total(bootstrap: str, group: str, expected: int) -> bool:
    return sum((await groups.committed(bootstrap, group)).values()) == expected


async def test_redrive_after_fixing_the_poison_cause_applies_each_dead_letter_once(
    stack: Any, types: KitTypes, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    bootstrap = stack.kafka_bootstrap
    group = f"evcli-redrive-{uuid.uuid4().hex[:6]}"
    dlq = types.topic + ".dlq"
    await publish(producer, types, 12)
    async with running(consumer(stack, types, pool, producer, group, fail_when_n=7)) as broken:

        async def settled() -> bool:
            return broken.stats.dead_lettered == 1 and len(await applied(pool, group)) == 11

        await eventually(settled)
    assert 7 not in await applied(pool, group)

    redrive_group = f"redrive-{uuid.uuid4().hex[:6]}"
    dry = await shop(bootstrap, "redrive", dlq, "--dry-run", "--group", redrive_group, "--json")
    assert dry.exit_code == 0, dry.output
    plan = only_json(dry)
    assert plan["sent"] == 0
    assert [(r["to_topic"], r["reason"]) for r in plan["records"]] == [
        (types.topic, "handler_failed")
    ]

    async with running(consumer(stack, types, pool, producer, group)):  # the cause is fixed
        sent = await shop(bootstrap, "redrive", dlq, "--group", redrive_group)
        assert sent.exit_code == 0, sent.output
        assert "sent 1 dead letters" in sent.output

        async def cured() -> bool:
            return await applied(pool, group) == list(range(12))

        await eventually(cured)
        again = await shop(bootstrap, "redrive", dlq, "--group", redrive_group, "--json")
        assert only_json(again)["sent"] == 0

    source = await reader.read_topics(bootstrap, [types.topic])
    redriven = [r for r in source if r.header("event_id") == plan["records"][0]["event_id"]]
    assert len(redriven) == 2  # the original and the redriven copy; the inbox applied one
    assert not redriven[-1].is_dead_letter
