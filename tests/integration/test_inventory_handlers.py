"""inventory_service handlers, expiry and HTTP routes against a real PostgreSQL database.

Handlers are called the way the inbox consumer calls them (bound to a policy, inside a transaction),
without Kafka, so concurrency can be driven hard and fast; test_inventory_service.py goes through
the broker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from fastapi import FastAPI

from events.contracts import (
    CommitReservation,
    LowStockDetected,
    OrderRestocked,
    ReleaseReservation,
    ReservationCommitted,
    ReservationExpired,
    ReservationReleased,
    ReserveStock,
    Restock,
    RestockOrder,
    Shortage,
    StockLevelChanged,
    StockLine,
    StockRejected,
    StockReserved,
)
from events.envelope import wrap
from events.kit import auth, db
from events.kit.inbox import HandlerContext
from events.kit.settings import DEV_SIGNING_KEY, ServiceSettings
from events.messages import Command, Message
from inventory_service import api, handlers
from inventory_service.app import MIGRATIONS
from inventory_service.domain import Policy
from tests.integration.kit_support import eventually
from tests.integration.platform_support import admin_headers

pytestmark = pytest.mark.integration

TTL = timedelta(seconds=60)
POLICY = Policy(reservation_ttl=TTL, low_stock_threshold=3)
BOUND = handlers.bind(POLICY)
SERVICE = "inventory"


@pytest.fixture(scope="module")
async def pool(stack: object) -> AsyncIterator[asyncpg.Pool]:
    url = stack.database_url("inventory_handler_tests")  # type: ignore[attr-defined]
    await db.ensure_database(url)
    p = await db.create_pool(url, min_size=2, max_size=40)
    await db.apply_migrations(p, MIGRATIONS)
    yield p
    await p.close()


def new_sku(name: str = "sku") -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def lines(*pairs: tuple[str, int]) -> tuple[StockLine, ...]:
    return tuple(StockLine(sku=s, quantity=q) for s, q in pairs)


def reserve(*pairs: tuple[str, int], order_id: uuid.UUID | None = None) -> ReserveStock:
    return ReserveStock(order_id=order_id or uuid.uuid4(), lines=lines(*pairs))


RECORD = ConsumerRecord(
    topic="inventory.commands",
    partition=0,
    offset=0,
    timestamp=0,
    timestamp_type=0,
    key=None,
    value=None,
    checksum=None,
    serialized_key_size=0,
    serialized_value_size=0,
    headers=(),
)


async def handle(pool: asyncpg.Pool, command: Command) -> list[Message]:
    """Apply one command in its own transaction, as the consumer applies a batch of one."""
    return await handle_batch(pool, [command])


async def handle_batch(pool: asyncpg.Pool, commands: Sequence[Command]) -> list[Message]:
    """Apply commands in one transaction, as the consumer applies a batch: one unit of work,
    every handler, one flush."""
    async with pool.acquire() as conn, conn.transaction():
        unit = await handlers.StockUnit.for_commands(conn, commands)
        out: list[Message] = []
        for command in commands:
            ctx = HandlerContext(conn, wrap(command, producer="test"), RECORD, unit)
            out += await BOUND[type(command)](command, ctx) or ()
        await unit.flush()
    return out


async def stocked(pool: asyncpg.Pool, on_hand: int, name: str = "sku") -> str:
    sku = new_sku(name)
    await handle(pool, Restock(sku=sku, quantity=on_hand))
    return sku


async def stock_of(pool: asyncpg.Pool, sku: str) -> tuple[int, int]:
    row = await pool.fetchrow("SELECT on_hand, reserved FROM stock WHERE sku = $1", sku)
    assert row is not None
    return row["on_hand"], row["reserved"]


async def status_of(pool: asyncpg.Pool, order_id: uuid.UUID) -> str | None:
    status: str | None = await pool.fetchval(
        "SELECT status FROM reservations WHERE order_id = $1", order_id
    )
    return status


async def make_due(pool: asyncpg.Pool, order_ids: Sequence[uuid.UUID]) -> None:
    await pool.execute(
        "UPDATE reservations SET expires_at = now() - interval '1 second' "
        "WHERE order_id = ANY($1::uuid[])",
        list(order_ids),
    )


def only(messages: Sequence[Message]) -> Message:
    assert len(messages) == 1, messages
    return messages[0]


# --- reserve -------------------------------------------------------------------------------------


async def test_reserves_every_line_when_all_are_available(pool: asyncpg.Pool) -> None:
    a, b = await stocked(pool, 10), await stocked(pool, 5)
    cmd = reserve((a, 4), (b, 5))
    before = datetime.now(UTC)

    out = await handle(pool, cmd)

    reserved = out[0]
    assert isinstance(reserved, StockReserved)
    assert reserved.lines == cmd.lines
    assert before + TTL - timedelta(seconds=5) < reserved.expires_at < before + TTL + timedelta(5)
    assert await stock_of(pool, a) == (10, 4)
    assert await stock_of(pool, b) == (5, 5)
    assert await status_of(pool, cmd.order_id) == "RESERVED"


async def test_reserves_nothing_when_one_line_is_short(pool: asyncpg.Pool) -> None:
    a, b = await stocked(pool, 10), await stocked(pool, 2)

    out = only(await handle(pool, reserve((a, 4), (b, 3))))

    assert isinstance(out, StockRejected)
    assert out.shortages == (Shortage(sku=b, requested=3, available=2),)
    assert await stock_of(pool, a) == (10, 0)
    assert await stock_of(pool, b) == (2, 0)


async def test_an_unknown_sku_rejects_the_order_as_a_shortage_of_everything(
    pool: asyncpg.Pool,
) -> None:
    a, ghost = await stocked(pool, 10), new_sku("ghost")
    cmd = reserve((a, 1), (ghost, 2))

    out = only(await handle(pool, cmd))

    assert out == StockRejected(
        order_id=cmd.order_id,
        reason="insufficient stock",
        shortages=(Shortage(sku=ghost, requested=2, available=0),),
    )
    assert await status_of(pool, cmd.order_id) is None


async def test_two_lines_of_one_sku_count_against_the_same_stock(pool: asyncpg.Pool) -> None:
    sku = await stocked(pool, 5)

    too_many = only(await handle(pool, reserve((sku, 3), (sku, 3))))
    exactly = await handle(pool, reserve((sku, 3), (sku, 2)))

    assert isinstance(too_many, StockRejected)
    assert too_many.shortages == (Shortage(sku=sku, requested=6, available=5),)
    assert isinstance(exactly[0], StockReserved)
    assert await stock_of(pool, sku) == (5, 5)


async def test_a_repeated_reserve_is_answered_from_the_reservation_without_reserving_again(
    pool: asyncpg.Pool,
) -> None:
    sku = await stocked(pool, 10)
    cmd = reserve((sku, 4))

    first = await handle(pool, cmd)
    again = await handle(pool, reserve((sku, 4), order_id=cmd.order_id))

    # The answer restates the reservation without lines: the log moves stock once per order.
    assert again == [first[0].model_copy(update={"lines": ()})]
    assert await stock_of(pool, sku) == (10, 4)


async def test_low_stock_is_detected_once_when_a_reservation_crosses_the_threshold(
    pool: asyncpg.Pool,
) -> None:
    sku = await stocked(pool, 5)  # threshold 3

    above = await handle(pool, reserve((sku, 2)))
    crossing = await handle(pool, reserve((sku, 1)))
    below = await handle(pool, reserve((sku, 1)))

    assert [type(m) for m in above] == [StockReserved]
    assert crossing[1:] == [LowStockDetected(sku=sku, available=2, threshold=3)]
    assert [type(m) for m in below] == [StockReserved]


async def test_a_hundred_concurrent_orders_for_one_unit_reserve_exactly_the_ten_in_stock(
    pool: asyncpg.Pool,
) -> None:
    sku = await stocked(pool, 10)
    commands = [reserve((sku, 1)) for _ in range(100)]

    replies = await asyncio.gather(*(handle(pool, c) for c in commands))

    outcomes = [type(r[0]) for r in replies]
    assert outcomes.count(StockReserved) == 10
    assert outcomes.count(StockRejected) == 90
    assert await stock_of(pool, sku) == (10, 10)
    reserved_rows = await pool.fetchval(
        "SELECT count(*) FROM reservations WHERE order_id = ANY($1::uuid[])",
        [c.order_id for c in commands],
    )
    assert reserved_rows == 10


async def test_concurrent_orders_naming_skus_in_opposite_orders_neither_deadlock_nor_oversell(
    pool: asyncpg.Pool,
) -> None:
    skus = [await stocked(pool, 30, f"x{i}") for i in range(4)]
    forward = [(s, 1) for s in skus]
    commands = [reserve(*(forward if i % 2 else forward[::-1])) for i in range(60)]
    commands += [reserve((skus[3], 2), (skus[0], 2)) for _ in range(20)]

    replies = await asyncio.gather(*(handle(pool, c) for c in commands))

    won = [c for c, r in zip(commands, replies, strict=True) if isinstance(r[0], StockReserved)]
    assert 0 < len(won) < len(commands)
    for sku in skus:
        on_hand, reserved = await stock_of(pool, sku)
        wanted = sum(line.quantity for c in won for line in c.lines if line.sku == sku)
        assert (on_hand, reserved) == (30, wanted)
        assert reserved <= on_hand


# --- commit, release, restock an order -----------------------------------------------------------


async def test_a_batch_of_commands_ends_where_the_same_commands_one_by_one_end(
    pool: asyncpg.Pool,
) -> None:
    def script(fresh: str, known: str) -> tuple[list[Command], list[uuid.UUID]]:
        """A new SKU restocked and drawn on, competing orders, a sale, a release that frees
        units for a later order, a sale put back and a repeated reserve, all in one batch."""
        o = [uuid.uuid4() for _ in range(4)]
        return [
            Restock(sku=fresh, quantity=5),
            reserve((fresh, 3), (known, 2), order_id=o[0]),
            reserve((fresh, 3), order_id=o[1]),  # 2 left: rejected
            reserve((known, 1), order_id=o[2]),
            CommitReservation(order_id=o[0]),
            ReleaseReservation(order_id=o[2], reason="declined"),
            reserve((known, 2), order_id=o[3]),  # only there because o[2] let go
            RestockOrder(order_id=o[0], reason="refunded"),
            reserve((fresh, 3), (known, 2), order_id=o[0]),  # repeated: answered, not reserved
        ], o

    def shape(messages: list[Message], ids: list[uuid.UUID], skus: dict[str, str]) -> list[Any]:
        """Each message as its type and fields, orders by position and SKUs by role (the two
        runs use their own)."""
        out = []
        for m in messages:
            fields = m.model_dump(mode="json", exclude={"expires_at"})
            if "order_id" in fields:
                fields["order_id"] = ids.index(m.order_id)  # type: ignore[attr-defined]
            text = orjson.dumps(fields).decode()
            for sku, role in skus.items():
                text = text.replace(sku, role)
            out.append((type(m).__name__, text))
        return out

    results = []
    for batched in (True, False):
        fresh, known = new_sku("fresh"), await stocked(pool, 4, "known")
        commands, ids = script(fresh, known)
        if batched:
            out = await handle_batch(pool, commands)
        else:
            out = [m for c in commands for m in await handle(pool, c)]
        rendered = shape(out, ids, {fresh: "FRESH", known: "KNOWN"})
        statuses = [await status_of(pool, i) for i in ids]
        results.append(
            (rendered, statuses, await stock_of(pool, fresh), await stock_of(pool, known))
        )
    assert results[0] == results[1]
    rendered, statuses, fresh_stock, known_stock = results[0]
    assert [kind for kind, _ in rendered] == [
        "StockLevelChanged",
        "StockReserved",
        "LowStockDetected",  # FRESH: 2 of 5 left
        "LowStockDetected",  # KNOWN: 2 of 4 left
        "StockRejected",
        "StockReserved",
        "ReservationCommitted",
        "ReservationReleased",
        "StockReserved",
        "OrderRestocked",
        "OrderRestocked",  # the repeated reserve: where the reservation stands, no lines
    ]
    assert statuses == ["RESTOCKED", None, "RELEASED", "RESERVED"]
    assert fresh_stock == (5, 0)
    assert known_stock == (4, 2)


async def test_one_batch_of_fifteen_orders_for_ten_units_reserves_exactly_ten(
    pool: asyncpg.Pool,
) -> None:
    sku = await stocked(pool, 10)
    out = await handle_batch(pool, [reserve((sku, 1)) for _ in range(15)])
    kinds = [type(m) for m in out if not isinstance(m, LowStockDetected)]
    assert (kinds.count(StockReserved), kinds.count(StockRejected)) == (10, 5)
    assert await stock_of(pool, sku) == (10, 10)


async def test_concurrent_batches_over_the_same_skus_neither_deadlock_nor_oversell(
    pool: asyncpg.Pool,
) -> None:
    skus = [await stocked(pool, 25, f"b{i}") for i in range(3)]
    batches = [
        [reserve(*((s, 1) for s in (skus if (b + i) % 2 else skus[::-1]))) for i in range(5)]
        for b in range(12)
    ]

    replies = await asyncio.gather(*(handle_batch(pool, batch) for batch in batches))

    commands = [c for batch in batches for c in batch]
    answers = [m for out in replies for m in out if not isinstance(m, LowStockDetected)]
    won = {m.order_id for m in answers if isinstance(m, StockReserved)}
    assert len(answers) == len(commands)
    assert len(won) == 25
    for sku in skus:
        assert await stock_of(pool, sku) == (25, 25)


async def test_a_batch_locks_its_reservations_and_every_sku_they_or_its_commands_name_at_once(
    pool: asyncpg.Pool,
) -> None:
    held, wanted, other = await stocked(pool, 5, "held"), await stocked(pool, 5), new_sku()
    placed = reserve((held, 2))
    await handle(pool, placed)
    commands = [CommitReservation(order_id=placed.order_id), reserve((wanted, 1), (other, 1))]
    statements: list[str] = []

    def logged(query: asyncpg.connection.LoggedQuery) -> None:
        statements.append(query.query)

    async with pool.acquire() as conn, conn.transaction():
        conn.add_query_logger(logged)
        try:
            unit = await handlers.StockUnit.for_commands(conn, commands)
        finally:  # the pool's connection outlives the test
            conn.remove_query_logger(logged)

    assert len(statements) == 1
    assert list(unit.reservations) == [placed.order_id]
    assert unit.reservations[placed.order_id].lines == placed.lines
    # the reservation's SKU and the new order's known one; an unknown SKU is simply absent
    assert {sku: (s.on_hand, s.reserved) for sku, s in unit.levels.items()} == {
        held: (5, 2),
        wanted: (5, 0),
    }


# A backend of this database waiting for a lock the given backend holds.
WAITING_FOR_A_LOCK = """
SELECT EXISTS (SELECT FROM pg_stat_activity
WHERE datname = current_database() AND $1::int = ANY(pg_blocking_pids(pid)))
"""


async def test_a_batch_waiting_for_a_stock_row_reads_it_as_the_holder_committed_it(
    pool: asyncpg.Pool,
) -> None:
    sku = await stocked(pool, 5)
    async with pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("UPDATE stock SET on_hand = 9 WHERE sku = $1", sku)

        async def lock() -> dict[str, tuple[int, int]]:
            async with pool.acquire() as conn, conn.transaction():
                unit = await handlers.StockUnit.for_commands(conn, [reserve((sku, 1))])
                return {s: (v.on_hand, v.reserved) for s, v in unit.levels.items()}

        waiting = asyncio.create_task(lock())

        async def blocked() -> bool:
            return bool(await pool.fetchval(WAITING_FOR_A_LOCK, holder.get_server_pid()))

        await eventually(blocked, timeout=10, interval=0.02)
        assert not waiting.done()
        await tx.commit()

    assert await asyncio.wait_for(waiting, 10) == {sku: (9, 0)}


async def test_commit_sells_the_reserved_units_once(pool: asyncpg.Pool) -> None:
    sku = await stocked(pool, 10)
    cmd = reserve((sku, 3), (sku, 1))
    await handle(pool, cmd)

    first = only(await handle(pool, CommitReservation(order_id=cmd.order_id)))
    again = only(await handle(pool, CommitReservation(order_id=cmd.order_id)))

    assert first == ReservationCommitted(order_id=cmd.order_id, lines=cmd.lines)
    assert again == ReservationCommitted(order_id=cmd.order_id, lines=())
    assert await stock_of(pool, sku) == (6, 0)
    assert await status_of(pool, cmd.order_id) == "COMMITTED"


async def test_commit_of_an_order_never_reserved_answers_released_with_no_reservation(
    pool: asyncpg.Pool,
) -> None:
    order_id = uuid.uuid4()

    out = only(await handle(pool, CommitReservation(order_id=order_id)))

    assert out == ReservationReleased(order_id=order_id, lines=(), reason="no reservation")


async def test_commit_after_a_release_answers_released_so_the_saga_compensates(
    pool: asyncpg.Pool,
) -> None:
    sku = await stocked(pool, 10)
    cmd = reserve((sku, 2))
    await handle(pool, cmd)
    await handle(pool, ReleaseReservation(order_id=cmd.order_id, reason="payment declined"))

    out = only(await handle(pool, CommitReservation(order_id=cmd.order_id)))

    assert isinstance(out, ReservationReleased)
    assert await stock_of(pool, sku) == (10, 0)


async def test_release_frees_the_units_and_repeating_it_changes_nothing(
    pool: asyncpg.Pool,
) -> None:
    sku = await stocked(pool, 10)
    cmd = reserve((sku, 4))
    await handle(pool, cmd)
    release = ReleaseReservation(order_id=cmd.order_id, reason="payment declined")

    first = only(await handle(pool, release))
    again = only(await handle(pool, release))

    assert first == ReservationReleased(
        order_id=cmd.order_id, lines=cmd.lines, reason="payment declined"
    )
    assert again == ReservationReleased(order_id=cmd.order_id, lines=(), reason="already released")
    assert await stock_of(pool, sku) == (10, 0)
    assert await status_of(pool, cmd.order_id) == "RELEASED"


async def test_release_of_an_order_never_reserved_answers_released_with_no_lines(
    pool: asyncpg.Pool,
) -> None:
    order_id = uuid.uuid4()

    out = only(await handle(pool, ReleaseReservation(order_id=order_id, reason="deadline")))

    assert out == ReservationReleased(order_id=order_id, lines=(), reason="no reservation")


async def test_release_of_a_sold_order_emits_nothing_and_keeps_the_sale(
    pool: asyncpg.Pool,
) -> None:
    sku = await stocked(pool, 10)
    cmd = reserve((sku, 4))
    await handle(pool, cmd)
    await handle(pool, CommitReservation(order_id=cmd.order_id))

    out = await handle(pool, ReleaseReservation(order_id=cmd.order_id, reason="late"))

    assert out == []
    assert await stock_of(pool, sku) == (6, 0)
    assert await status_of(pool, cmd.order_id) == "COMMITTED"


async def test_restocking_a_sold_order_puts_its_units_back_once(pool: asyncpg.Pool) -> None:
    sku = await stocked(pool, 10)
    cmd = reserve((sku, 4))
    await handle(pool, cmd)
    await handle(pool, CommitReservation(order_id=cmd.order_id))
    restock = RestockOrder(order_id=cmd.order_id, reason="customer cancelled")

    first = only(await handle(pool, restock))
    again = only(await handle(pool, restock))

    assert first == OrderRestocked(order_id=cmd.order_id, lines=cmd.lines)
    assert again == OrderRestocked(order_id=cmd.order_id, lines=())
    assert await stock_of(pool, sku) == (10, 0)
    assert await status_of(pool, cmd.order_id) == "RESTOCKED"


async def test_restocking_an_order_never_sold_releases_its_reservation(
    pool: asyncpg.Pool,
) -> None:
    sku = await stocked(pool, 10)
    cmd = reserve((sku, 4))
    await handle(pool, cmd)

    out = only(await handle(pool, RestockOrder(order_id=cmd.order_id, reason="cancelled")))

    assert out == ReservationReleased(order_id=cmd.order_id, lines=cmd.lines, reason="cancelled")
    assert await stock_of(pool, sku) == (10, 0)


# --- restock -------------------------------------------------------------------------------------


async def test_restock_creates_a_new_sku_and_emits_its_stock_level(pool: asyncpg.Pool) -> None:
    sku = new_sku()

    out = only(await handle(pool, Restock(sku=sku, quantity=7)))

    assert out == StockLevelChanged(sku=sku, on_hand=7, reserved=0, available=7, cause="restock")
    threshold = await pool.fetchval("SELECT low_stock_threshold FROM stock WHERE sku = $1", sku)
    assert threshold == POLICY.low_stock_threshold


async def test_restock_adds_to_the_units_on_hand_and_keeps_reservations(
    pool: asyncpg.Pool,
) -> None:
    sku = await stocked(pool, 5)
    await handle(pool, reserve((sku, 5)))

    out = only(await handle(pool, Restock(sku=sku, quantity=3)))

    assert out == StockLevelChanged(sku=sku, on_hand=8, reserved=5, available=3, cause="restock")


# --- expiry --------------------------------------------------------------------------------------


async def outbox_events(pool: asyncpg.Pool, event_type: str, order_id: uuid.UUID) -> list[dict]:  # type: ignore[type-arg]
    rows = await pool.fetch(
        "SELECT value FROM outbox WHERE event_type = $1 AND correlation_id = $2 ORDER BY id",
        event_type,
        str(order_id),
    )
    return [orjson.loads(r["value"]) for r in rows]


async def test_expiry_releases_the_units_and_publishes_reservation_expired(
    pool: asyncpg.Pool,
) -> None:
    sku = await stocked(pool, 10)
    due, live = reserve((sku, 3)), reserve((sku, 2))
    await handle(pool, due)
    await handle(pool, live)
    await make_due(pool, [due.order_id])

    expired = await handlers.expire_reservations(pool, service=SERVICE)

    assert expired >= 1
    assert await stock_of(pool, sku) == (10, 2)
    assert await status_of(pool, due.order_id) == "EXPIRED"
    assert await status_of(pool, live.order_id) == "RESERVED"
    [envelope] = await outbox_events(pool, "ReservationExpired", due.order_id)
    assert envelope["producer"] == SERVICE
    assert envelope["correlation_id"] == str(due.order_id)
    assert envelope["payload"]["lines"] == [{"sku": sku, "quantity": 3}]


async def test_expiry_works_through_more_due_reservations_than_one_batch(
    pool: asyncpg.Pool,
) -> None:
    sku = await stocked(pool, 30)
    commands = [reserve((sku, 1)) for _ in range(25)]
    for c in commands:
        await handle(pool, c)
    await make_due(pool, [c.order_id for c in commands])

    expired = await handlers.expire_reservations(pool, service=SERVICE, batch=10)

    assert expired >= 25
    assert await stock_of(pool, sku) == (30, 0)


async def test_commit_after_expiry_answers_reservation_expired(pool: asyncpg.Pool) -> None:
    sku = await stocked(pool, 10)
    cmd = reserve((sku, 3))
    await handle(pool, cmd)
    await make_due(pool, [cmd.order_id])
    await handlers.expire_reservations(pool, service=SERVICE)

    out = only(await handle(pool, CommitReservation(order_id=cmd.order_id)))

    assert isinstance(out, ReservationExpired)
    assert out.lines == ()
    assert await stock_of(pool, sku) == (10, 0)


async def test_release_after_expiry_answers_released_without_freeing_twice(
    pool: asyncpg.Pool,
) -> None:
    sku = await stocked(pool, 10)
    cmd = reserve((sku, 3))
    await handle(pool, cmd)
    await make_due(pool, [cmd.order_id])
    await handlers.expire_reservations(pool, service=SERVICE)

    out = only(await handle(pool, ReleaseReservation(order_id=cmd.order_id, reason="deadline")))

    assert out == ReservationReleased(order_id=cmd.order_id, lines=(), reason="already expired")
    assert await stock_of(pool, sku) == (10, 0)


async def test_expiry_racing_commits_settles_each_order_exactly_once(pool: asyncpg.Pool) -> None:
    sku = await stocked(pool, 40)
    commands = [reserve((sku, 1)) for _ in range(40)]
    for c in commands:
        await handle(pool, c)
    await make_due(pool, [c.order_id for c in commands])

    async def commit(c: ReserveStock) -> Message:
        return only(await handle(pool, CommitReservation(order_id=c.order_id)))

    async def sweep() -> None:
        await handlers.expire_reservations(pool, service=SERVICE, batch=5)

    jobs: list[Awaitable[Message | None]] = []
    for i, c in enumerate(commands):
        if i % 10 == 0:  # sweeps among the commits, so each side wins some orders
            jobs.append(sweep())
        jobs.append(commit(c))
    results = await asyncio.gather(*jobs)

    sold = sum(isinstance(r, ReservationCommitted) for r in results)
    statuses = [await status_of(pool, c.order_id) for c in commands]
    assert statuses.count("COMMITTED") == sold
    assert statuses.count("EXPIRED") == len(commands) - sold
    assert sum(isinstance(r, ReservationExpired) for r in results) == len(commands) - sold
    assert await stock_of(pool, sku) == (40 - sold, 0)


# --- HTTP ----------------------------------------------------------------------------------------


@pytest.fixture
async def client(pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(api.router(lambda: pool, POLICY, service=SERVICE))
    auth.install(app, ServiceSettings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://inventory", headers=admin_headers(key=DEV_SIGNING_KEY)
    ) as c:
        yield c


async def test_stock_of_a_sku_shows_on_hand_reserved_and_available(
    pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    sku = await stocked(pool, 10)
    await handle(pool, reserve((sku, 4)))

    response = await client.get(f"/stock/{sku}")

    assert response.status_code == 200
    assert response.json() == {
        "sku": sku,
        "on_hand": 10,
        "reserved": 4,
        "available": 6,
        "low_stock_threshold": 3,
    }


async def test_stock_of_an_unknown_sku_is_404_and_of_a_malformed_sku_422(
    client: httpx.AsyncClient,
) -> None:
    missing = await client.get(f"/stock/{new_sku()}")
    malformed = await client.get("/stock/-bad*sku")

    assert missing.status_code == 404
    assert "unknown SKU" in missing.json()["detail"]
    assert malformed.status_code == 422


async def test_stock_below_threshold_is_listed_in_sku_order_in_bounded_pages(
    pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    low = [await stocked(pool, 2, "low") for _ in range(3)]
    plenty = await stocked(pool, 50, "plenty")

    listed: list[str] = []
    page, total = 1, None
    while total is None or (page - 1) * 2 < total:
        r = await client.get(
            "/stock", params={"below_threshold": "true", "page": page, "page_size": 2}
        )
        assert r.status_code == 200
        body = r.json()
        assert len(body["items"]) <= 2
        assert all(i["available"] < i["low_stock_threshold"] for i in body["items"])
        listed += [i["sku"] for i in body["items"]]
        total, page = body["total"], page + 1
    too_big = await client.get("/stock", params={"page_size": 10_000})

    assert set(low) <= set(listed)
    assert plenty not in listed
    assert listed == sorted(listed)
    assert len(listed) == total
    assert too_big.status_code == 422


async def test_admin_restock_adds_units_and_publishes_stock_level_changed(
    pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    sku = new_sku("admin")

    created = await client.post(f"/admin/stock/{sku}/restock", json={"quantity": 5})
    added = await client.post(f"/admin/stock/{sku}/restock", json={"quantity": 7})

    assert created.status_code == added.status_code == 200
    assert added.json()["on_hand"] == 12
    rows = await pool.fetch(
        "SELECT value FROM outbox WHERE event_type = $1 AND correlation_id = $2 ORDER BY id",
        "StockLevelChanged",
        sku,
    )
    payloads = [orjson.loads(r["value"])["payload"] for r in rows]
    assert [p["on_hand"] for p in payloads] == [5, 12]
    assert {p["cause"] for p in payloads} == {"restock"}


@pytest.mark.parametrize("body", [{"quantity": 0}, {"quantity": 1_000_001}, {"quantity": "5"}, {}])
async def test_admin_restock_refuses_a_quantity_out_of_range_or_not_an_integer(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    response = await client.post(f"/admin/stock/{new_sku()}/restock", json=body)

    assert response.status_code == 422
