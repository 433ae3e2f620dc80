"""`shop events tail|trace|export|import|audit` against the real broker.

Each test writes to topics of its own (a random prefix), so what other tests leave on the shared
saga topics does not matter. Trace and audit run on the recorded log of a real platform run
(tests/fixtures/eventlog), imported under a sandbox prefix.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner, Result

from deploy.cli import app
from deploy.eventlog import reader
from deploy.eventlog.records import LogRecord
from events.contracts import PaymentCaptured
from events.envelope import encode, headers_for, wrap
from events.kit.admin import ensure_topics
from events.messages import Money
from events.topics import TopicSpec
from tests.fixtures.eventlog import LOG_FILE, orders

pytestmark = pytest.mark.integration


def shop(bootstrap: str, *args: str) -> Result:
    return CliRunner().invoke(
        app, ["events", *args, "--bootstrap", bootstrap], env={"COLUMNS": "160"}
    )


def json_lines(result: Result) -> list[Any]:
    return [orjson.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


async def produce(
    bootstrap: str,
    records: list[tuple[str, int, bytes | None, bytes | None, list[tuple[str, bytes]]]],
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [
            await producer.send(t, value=v, key=k, headers=h, partition=p)
            for t, p, k, v, h in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def by_partition(
    records: list[LogRecord], prefix: str
) -> dict[tuple[str, int], list[tuple[Any, ...]]]:
    out: dict[tuple[str, int], list[tuple[Any, ...]]] = defaultdict(list)
    for r in records:
        out[(r.topic.removeprefix(prefix), r.partition)].append(
            (r.offset, r.timestamp, r.key, r.value, r.headers)
        )
    return out


@pytest.fixture(scope="module")
def bootstrap(stack: Any) -> str:
    value: str = stack.kafka_bootstrap
    return value


@pytest.fixture(scope="module")
def own_topics(bootstrap: str) -> tuple[str, list[str]]:
    """Two topics of this module's own with awkward records: binary keys and headers,
    non-JSON values, tombstones, envelopes; several hundred per partition, in a known order."""
    prefix = f"evlog-{uuid.uuid4().hex[:8]}."
    names = [prefix + "orders", prefix + "blobs"]
    asyncio.run(
        ensure_topics(
            bootstrap, [TopicSpec(names[0], "event", 3), TopicSpec(names[1], "compacted", 2)]
        )
    )
    records: list[tuple[str, int, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
    for i in range(900):
        msg = PaymentCaptured(
            order_id=uuid.uuid4(), payment_id=uuid.uuid4(), amount=Money(amount=i, currency="USD")
        )
        env = wrap(msg, producer="test")
        records.append((names[0], i % 3, str(msg.order_id).encode(), encode(env), headers_for(env)))
    for i in range(60):
        key = bytes([0xFF, i]) if i % 2 else f"k{i}".encode()
        value = None if i % 10 == 0 else b"\x00raw\xfe" + bytes([i])
        records.append(
            (names[1], i % 2, key, value, [("bin", b"\xc3\x28"), ("n", str(i).encode())])
        )
    asyncio.run(produce(bootstrap, records))
    return prefix, names


def test_export_then_import_under_a_prefix_preserves_keys_headers_payloads_and_order(
    bootstrap: str, own_topics: tuple[str, list[str]], tmp_path: Path
) -> None:
    _, names = own_topics
    out = tmp_path / "log.jsonl.gz"
    result = shop(
        bootstrap, "export", "--topics", names[0], "--topics", names[1], "--out", str(out), "--json"
    )
    assert result.exit_code == 0, result.output
    assert json_lines(result)[0]["records"] == 960
    sandbox = f"sandbox-{uuid.uuid4().hex[:6]}."
    result = shop(bootstrap, "import", str(out), "--topic-prefix", sandbox, "--json")
    assert result.exit_code == 0, result.output
    summary = json_lines(result)[0]
    assert summary["records"] == 960
    assert sorted(summary["created_topics"]) == sorted(sandbox + n for n in names)

    original = asyncio.run(reader.read_topics(bootstrap, names))
    copied = asyncio.run(reader.read_topics(bootstrap, [sandbox + n for n in names]))
    assert by_partition(copied, sandbox) == by_partition(original, "")
    layouts = asyncio.run(reader.topic_layouts(bootstrap, [sandbox + n for n in names]))
    assert layouts[sandbox + names[0]].partitions == 3
    assert layouts[sandbox + names[1]].partitions == 2
    assert layouts[sandbox + names[1]].config["cleanup.policy"] == "compact"


def test_export_takes_an_offset_range_per_partition(
    bootstrap: str, own_topics: tuple[str, list[str]], tmp_path: Path
) -> None:
    _, names = own_topics
    out = tmp_path / "range.jsonl"
    result = shop(
        bootstrap, "export", "--topics", names[0], "--from", "10", "--to", "15", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert "exported 15 records" in result.output
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()[1:]]
    assert sorted({(x["partition"], x["offset"]) for x in lines}) == [
        (p, o) for p in range(3) for o in range(10, 15)
    ]


def test_tail_filters_by_type_and_correlation_and_follows_new_records(
    bootstrap: str, own_topics: tuple[str, list[str]]
) -> None:
    _, names = own_topics
    one = asyncio.run(reader.read_topics(bootstrap, [names[0]], end=reader.Bound(offset=1)))[0]
    corr = one.header("correlation_id")
    assert corr is not None
    result = shop(
        bootstrap, "tail", names[0], "--type", "PaymentCaptured", "--correlation", corr, "--json"
    )
    assert result.exit_code == 0, result.output
    assert [r["key"] for r in json_lines(result)] == [corr]
    readable = shop(bootstrap, "tail", names[0], "--limit", "2")
    assert readable.output.count("PaymentCaptured") == 2

    followed: list[Result] = []
    tailer = threading.Thread(
        target=lambda: followed.append(
            shop(bootstrap, "tail", names[1], "--follow", "--limit", "1", "--json")
        )
    )
    tailer.start()
    deadline = time.monotonic() + 20
    while tailer.is_alive() and time.monotonic() < deadline:
        asyncio.run(produce(bootstrap, [(names[1], 0, b"late", b"\x01late", [])]))
        tailer.join(1.0)
    assert not tailer.is_alive()
    assert json_lines(followed[0])[0]["key"] == "late"


def test_unknown_topics_and_an_unreachable_broker_are_one_line_errors(bootstrap: str) -> None:
    result = shop(bootstrap, "tail", "no.such.topic")
    assert result.exit_code == 1
    assert "unknown topic: no.such.topic" in result.output
    result = shop("127.0.0.1:1", "audit")
    assert result.exit_code == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in result.output


@pytest.fixture(scope="module")
def recorded_sandbox(bootstrap: str) -> str:
    """The recorded platform run imported under a prefix of its own."""
    prefix = f"rec-{uuid.uuid4().hex[:8]}."
    result = shop(bootstrap, "import", str(LOG_FILE), "--topic-prefix", prefix)
    assert result.exit_code == 0, result.output
    return prefix


def test_trace_of_a_declined_order_shows_the_compensations_in_causal_order(
    bootstrap: str, recorded_sandbox: str
) -> None:
    order = orders()["declined"]
    result = shop(bootstrap, "trace", order, "--topic-prefix", recorded_sandbox, "--json")
    assert result.exit_code == 0, result.output
    steps = json_lines(result)
    types = [s["type"] for s in steps]
    assert types[0] == "OrderPlaced"
    assert types.index("PaymentDeclined") < types.index("ReleaseReservation")
    assert types.index("ReleaseReservation") < types.index("ReservationReleased")
    assert (
        types.index("PaymentDeclined") < types.index("VoidPayment") < types.index("PaymentVoided")
    )
    compensations = {s["type"] for s in steps if s["compensation"]}
    assert compensations == {
        "VoidPayment",
        "PaymentVoided",
        "ReleaseReservation",
        "ReservationReleased",
    }
    assert all(s["took_ms"] is None or s["took_ms"] >= 0 for s in steps)
    readable = shop(bootstrap, "trace", order, "--topic-prefix", recorded_sandbox)
    assert "ReleaseReservation ↩" in readable.output
    assert "messages over" in readable.output
    missing = shop(bootstrap, "trace", str(uuid.uuid4()), "--topic-prefix", recorded_sandbox)
    assert missing.exit_code == 1


def test_audit_passes_on_a_clean_run_and_names_the_order_of_an_injected_stray_charge(
    bootstrap: str, recorded_sandbox: str
) -> None:
    clean = shop(bootstrap, "audit", "--topic-prefix", recorded_sandbox, "--json")
    assert clean.exit_code == 0, clean.output
    report = json_lines(clean)[0]
    assert report["ok"] is True
    assert report["orders"] == {"CANCELLED": 2, "CONFIRMED": 7, "REJECTED": 8}

    rejected = orders()["rejected"]
    stray = PaymentCaptured(
        order_id=uuid.UUID(rejected),
        payment_id=uuid.uuid4(),
        amount=Money(amount=100, currency="USD"),
    )
    env = wrap(stray, producer="payment", occurred_at=datetime.now(UTC) - timedelta(minutes=10))
    topic = recorded_sandbox + "payment.events"
    asyncio.run(produce(bootstrap, [(topic, 0, rejected.encode(), encode(env), headers_for(env))]))

    dirty = shop(bootstrap, "audit", "--topic-prefix", recorded_sandbox)
    assert dirty.exit_code == 1
    assert "no-stray-charge" in dirty.output
    assert rejected in dirty.output.replace("\n", "")
