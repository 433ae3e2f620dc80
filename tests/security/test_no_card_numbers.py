"""After everything else has run (tests/conftest.py orders this module last): no card number in any
topic of the session's broker (keys, values, headers, aborted records too), in any table of any
database of the session's PostgreSQL, or in any log the tests wrote. What counts as a card number,
and what is excluded, is in tests/security/cardscan.py."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from deploy.local.postgres import with_database
from deploy.local.topics import list_topics
from tests.security.cardscan import Hit, find_card_numbers
from tests.stack import DEFAULT_KAFKA_PORT, DEFAULT_PG_PORT, Stack

pytestmark = [pytest.mark.integration, pytest.mark.run_last]

Found = list[tuple[str, Hit]]


async def scan_topics(bootstrap: str) -> tuple[Found, int, int]:
    """Every record of every topic, internal ones included; (hits, topics, records)."""
    found: Found = []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_uncommitted",
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        infos = await list_topics(bootstrap, internal=True)
        topics = [t.name for t in infos]
        parts = [TopicPartition(t.name, p) for t in infos for p in range(t.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        pending = {tp for tp in parts if end[tp] > 0}
        records = 0
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, recs in batch.items():
                for r in recs:
                    records += 1
                    fields = [r.key or b"", r.value or b""]
                    fields += [k.encode() + b"=" + (v or b"") for k, v in r.headers]
                    where = f"{tp.topic}/{tp.partition}@{r.offset}"
                    found += [(where, h) for f in fields for h in find_card_numbers(f)]
            for tp in list(pending):
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
        return found, len(topics), records
    finally:
        await consumer.stop()


async def scan_databases(admin_url: str) -> tuple[Found, int]:
    """Every row of every table of every database on the server; (hits, tables)."""
    found: Found = []
    tables = 0
    admin = await asyncpg.connect(admin_url)
    try:
        names = await admin.fetch(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate"
        )
    finally:
        await admin.close()
    for (dbname,) in names:
        conn = await asyncpg.connect(with_database(admin_url, dbname))
        try:
            rows = await conn.fetch(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_type = 'BASE TABLE' "
                "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
            for schema, table in rows:
                out = io.BytesIO()
                await conn.copy_from_table(table, schema_name=schema, output=out)
                tables += 1
                where = f"{dbname}.{schema}.{table}"
                found += [(where, h) for h in find_card_numbers(out.getvalue())]
        finally:
            await conn.close()
    return found, tables


def log_files(roots: Iterable[Path]) -> list[Path]:
    """Service, broker and database logs: any file with `.log` in its name (Kafka's segment
    files are named *.log too, so the topics are also read here from disk)."""
    return sorted(p for root in roots if root.exists() for p in root.rglob("*") if ".log" in p.name)


def scan_logs(paths: Iterable[Path]) -> Found:
    found: Found = []
    for path in paths:
        if path.is_file():
            found += [(str(path), h) for h in find_card_numbers(path.read_bytes())]
    return found


def native_stack_dir(stack: Stack) -> Path | None:
    if stack.sources.get("kafka") != "native":
        return None
    kport = os.environ.get("SHOP_TEST_KAFKA_PORT", str(DEFAULT_KAFKA_PORT))
    pport = os.environ.get("SHOP_TEST_PG_PORT", str(DEFAULT_PG_PORT))
    return Path(tempfile.gettempdir()) / f"shop-test-stack-{kport}-{pport}"


async def test_no_card_number_in_any_topic_table_or_log_after_the_whole_run(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    in_topics, topics, records = await scan_topics(stack.kafka_bootstrap)
    in_tables, tables = await scan_databases(stack.admin_url)
    roots = [tmp_path_factory.getbasetemp()]
    if (native := native_stack_dir(stack)) is not None:
        roots.append(native)
    logs = log_files(roots)
    in_logs = scan_logs(logs)

    print(f"scanned {records} records in {topics} topics, {tables} tables, {len(logs)} log files")
    assert topics > 0
    assert tables > 0
    hits = in_topics + in_tables + in_logs
    assert not hits, [(where, h.masked()) for where, h in hits]
