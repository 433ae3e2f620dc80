"""`shop events rebuild analytics` against the real broker and a real analytics service.

The live side is the analytics service as a process (the saga services play no part in what it
folds); the orders are a realistic saga log written straight to the shared topics
(bench/saga_log.py). The live service reads the whole log of the session, like the rebuild.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner, Result

from analytics_service.fold import SOURCE_TOPICS, TABLES, changelog_topic
from bench.saga_log import SagaLog, produce, write_orders
from deploy.cli import app
from deploy.eventlog import groups, reader
from deploy.eventlog import rebuild as rebuilding
from deploy.local.services import SERVICES, ServiceSupervisor
from events.contracts import OrderPlaced, PricedLine
from events.envelope import encode, headers_for, wrap
from events.kit.admin import ensure_topics
from events.messages import Money
from events.topics import BASE_TOPICS, ORDER_EVENTS, TopicSpec
from tests.integration.platform_support import e2e_env, free_port, wait_until

pytestmark = pytest.mark.integration


def analytics_only(stack: Any, data_dir: Any, prefix: str) -> ServiceSupervisor:
    run = uuid.uuid4().hex[:8]
    return ServiceSupervisor(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=lambda name: stack.database_url(f"rb_{run}_{name}"),
        data_dir=data_dir,
        ports={svc.package: free_port() for svc in SERVICES},
        env=e2e_env(prefix) | {"ANALYTICS_DATA_DIR": str(data_dir / "analytics")},
    )


@pytest.fixture(scope="module")
def live(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceSupervisor]:
    """The live analytics service, alone."""
    supervisor = analytics_only(
        stack, tmp_path_factory.mktemp("rebuild-live"), f"rb-{uuid.uuid4().hex[:6]}-"
    )
    try:
        supervisor.start("analytics")
        supervisor.wait_ready("analytics", timeout=120)
        yield supervisor
    finally:
        supervisor.stop_all()


def rebuild(bootstrap: str, *args: str) -> tuple[Result, dict[str, Any]]:
    result = CliRunner().invoke(
        app,
        ["events", "rebuild", "analytics", "--bootstrap", bootstrap, "--json", *args],
        env={"COLUMNS": "160"},
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return result, orjson.loads(lines[-1]) if lines else {}


async def topics_of(bootstrap: str, app_id: str) -> set[str]:
    async with reader.consumer(bootstrap) as kafka:
        have = await reader.existing_topics(kafka)
    return {changelog_topic(app_id, t) for t in TABLES} & have


async def state(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        body: dict[str, Any] = (await client.get(url + "/api/state")).json()
    return body


async def test_a_rebuild_after_some_orders_matches_the_live_figures(
    stack: Any, live: ServiceSupervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fold shared among worker processes even on this small log, as on a big one.
    monkeypatch.setattr(rebuilding, "PARALLEL_FROM", 0)
    await write_orders(stack.kafka_bootstrap, 300, seed=11, stock=60, skus=["RB-1", "RB-2"])
    app_id = f"rb-{uuid.uuid4().hex[:6]}-analytics"
    result, report = await asyncio.to_thread(
        rebuild,
        stack.kafka_bootstrap,
        "--url",
        live.url("analytics"),
        "--wait",
        "240",
        "--app-id",
        app_id,
    )
    assert result.exit_code == 0, result.output
    assert report["outcome"] == "match", report["differences"][:10]
    totals = report["rebuilt"]["totals"]
    assert totals["placed"] >= 300
    assert totals["confirmed"] > 0
    assert totals["rejected"] > 0
    assert report["rebuilt"]["low_stock"], "two SKUs of 60 units should run low"
    assert report["changelogs"]["records"]["orders"] >= 300
    assert not report["changelogs"]["kept"]
    assert await topics_of(stack.kafka_bootstrap, app_id) == set()


async def test_a_fold_shared_among_processes_is_the_fold_of_one_process(
    stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers fold whole partitions each; merged, their tables are one process's tables."""
    monkeypatch.setattr(rebuilding, "PARALLEL_FROM", 0)
    prefix = f"par-{uuid.uuid4().hex[:6]}."
    specs = [
        TopicSpec(prefix + t.name, t.kind, t.partitions)
        for t in BASE_TOPICS
        if t.name in SOURCE_TOPICS
    ]
    await ensure_topics(stack.kafka_bootstrap, specs)
    log = SagaLog(["PAR-1", "PAR-2", "PAR-3"], seed=3, stock=200)
    started = datetime.now(UTC) - timedelta(minutes=10)
    written = await produce(
        stack.kafka_bootstrap,
        (
            (prefix + topic, key, value, headers)
            for topic, key, value, headers in log.records(400, started)
            if topic in SOURCE_TOPICS
        ),
    )
    names = [s.name for s in specs]
    # one clock for every fold: folds on either side of a minute boundary would prune to
    # different horizons
    now_ms = int(datetime.now(UTC).timestamp() * 1000)

    async def fold(workers: int) -> rebuilding.Rebuilt:
        return await rebuilding.fold_log(
            stack.kafka_bootstrap,
            "par-analytics",
            grace_s=600,
            retention_h=25,
            topics=names,
            workers=workers,
            now_ms=now_ms,
        )

    one = await fold(1)
    assert one.records == written
    state = one.fold.state()
    assert state["totals"]["placed"] == 400
    assert state["low_stock"], "three SKUs of 200 units should run low"
    for workers in (2, 3):
        shared = await fold(workers)
        assert shared.records == written
        assert shared.fold.state() == state


async def test_the_kept_changelog_is_what_the_service_under_that_id_recovers(
    stack: Any, live: ServiceSupervisor, tmp_path_factory: pytest.TempPathFactory
) -> None:
    app_id = f"rb-{uuid.uuid4().hex[:6]}-analytics"
    result, report = await asyncio.to_thread(
        rebuild,
        stack.kafka_bootstrap,
        "--url",
        live.url("analytics"),
        "--wait",
        "240",
        "--app-id",
        app_id,
        "--keep",
    )
    assert result.exit_code == 0, result.output
    assert len(await topics_of(stack.kafka_bootstrap, app_id)) == len(TABLES)
    committed = await groups.committed(stack.kafka_bootstrap, app_id)
    assert {f"{tp.topic}/{tp.partition}": o for tp, o in committed.items()} == report["read_to"]
    recovered = analytics_only(
        stack, tmp_path_factory.mktemp("rebuild-recovered"), app_id.removesuffix("analytics")
    )
    try:
        recovered.start("analytics")
        recovered.wait_ready("analytics", timeout=120)
        url = recovered.url("analytics")

        async def ready() -> dict[str, Any] | None:
            body = await state(url)
            return body if body["ready"] else None

        body = await wait_until(ready, timeout=120, interval=0.5)
        assert body["app_id"] == app_id
        assert body["tables"] == report["rebuilt"]["tables"]
        assert body["totals"] == report["rebuilt"]["totals"]
        assert body["low_stock"] == report["rebuilt"]["low_stock"]
        assert body["positions"] == {}, "it resumed at the rebuild's offsets: nothing to refold"
    finally:
        recovered.stop_all()
        drop = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            ["events", "rebuild", "drop", app_id, "--bootstrap", stack.kafka_bootstrap],
        )
        assert drop.exit_code == 0, drop.output
    assert await topics_of(stack.kafka_bootstrap, app_id) == set()


async def test_an_event_the_live_service_never_saw_is_reported_as_a_difference(
    stack: Any, live: ServiceSupervisor
) -> None:
    """The live worker is stopped, an order placed, and its group moved past it (a consumer that
    skipped a record): the rebuild folds it, the live tables lack it."""
    bootstrap = stack.kafka_bootstrap
    live_id = (await state(live.url("analytics")))["app_id"]
    live.stop("analytics")
    now = datetime.now(UTC)
    msg = OrderPlaced(
        order_id=uuid.uuid4(),
        customer_id="skipped",
        lines=(PricedLine(sku="RB-1", quantity=1, unit_price=Money(amount=500, currency="USD")),),
        total=Money(amount=500, currency="USD"),
        placed_at=now,
    )
    envelope = wrap(msg, producer="test", occurred_at=now)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            ORDER_EVENTS,
            encode(envelope),
            key=msg.partition_key().encode(),
            headers=headers_for(envelope),
        )
    finally:
        await producer.stop()

    async def idle() -> bool:
        return not (await groups.describe(bootstrap, live_id)).members

    await wait_until(idle, timeout=60, interval=0.5)
    changes = await groups.plan(bootstrap, live_id, reader.LATEST, [ORDER_EVENTS])
    await groups.apply(bootstrap, live_id, changes)
    live.start("analytics")
    live.wait_ready("analytics", timeout=120)
    result, report = await asyncio.to_thread(
        rebuild, bootstrap, "--url", live.url("analytics"), "--wait", "120"
    )
    assert result.exit_code == 1, result.output
    assert report["outcome"] == "differ"
    assert {"tables.orders", "totals.placed"} <= set(report["differing"])
    placed = next(d for d in report["differences"] if d["what"] == "totals.placed")
    assert placed["rebuilt"] == placed["live"] + 1


def test_an_unreachable_live_service_is_an_error_only_when_named(stack: Any) -> None:
    named, _ = rebuild(stack.kafka_bootstrap, "--url", f"http://127.0.0.1:{free_port()}")
    assert named.exit_code == 2
    assert "cannot reach the analytics service" in named.output
