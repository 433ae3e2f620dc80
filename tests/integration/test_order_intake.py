"""The ingress's group commit against the real database: requests placed together in one
transaction get the answers each would get alone, and a failed batch is answered request by
request."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest

from events.contracts import StockLine
from events.kit import db, outbox
from order_service import intake
from order_service.domain import Deadlines
from order_service.intake import Intake, PlaceRequest
from tests.integration.kit_support import eventually

pytestmark = pytest.mark.integration

DEADLINES = Deadlines()


@pytest.fixture(scope="module")
async def pool(order_pool: asyncpg.Pool) -> asyncpg.Pool:
    await order_pool.execute(
        "INSERT INTO catalog_view VALUES"
        " ('INTAKE-1', 'Intake', 'test', 500, 'USD', true, now()),"
        " ('INTAKE-OFF', 'Retired', 'test', 700, 'USD', false, now())"
        " ON CONFLICT DO NOTHING"
    )
    return order_pool


def request(
    customer: str, sku: str = "INTAKE-1", key: str | None = None, qty: int = 1
) -> PlaceRequest:
    return PlaceRequest(
        customer_id=customer,
        lines=(StockLine(sku=sku, quantity=qty),),
        currency="USD",
        payment_token="tok_approve",
        idempotency_key=key,
        request_hash=f"{sku}x{qty}",
    )


async def place_batch(
    pool: asyncpg.Pool, requests: list[PlaceRequest], max_open: int = 3
) -> list[intake.Answer]:
    async with pool.acquire() as conn, conn.transaction():
        return await intake.place(
            conn,
            requests,
            deadlines=DEADLINES,
            max_open=max_open,
            service="order",
            now=datetime.now(UTC),
        )


async def place_alone(
    pool: asyncpg.Pool, requests: list[PlaceRequest], max_open: int = 3
) -> list[intake.Answer]:
    return [(await place_batch(pool, [r], max_open))[0] for r in requests]


def shape(answers: list[intake.Answer]) -> list[tuple[int, str]]:
    """Status and what kind of answer, without the order ids (new in each run)."""
    return [
        (
            a.status,
            a.body.get("detail") or a.body["status"] + a.headers.get("Idempotent-Replayed", ""),
        )
        for a in answers
    ]


async def test_a_batch_answers_each_request_as_it_would_be_answered_alone(
    pool: asyncpg.Pool,
) -> None:
    def scenario(run: str) -> list[PlaceRequest]:
        capped, keyed = f"capped-{run}", f"keyed-{run}"
        return [
            request(capped),
            request(f"other-{run}", sku="NOPE-404"),  # unknown SKU: 422
            request(capped),
            request(f"other-{run}", sku="INTAKE-OFF"),  # not for sale: 422
            request(capped),
            request(capped),  # the fourth open order of a customer capped at three: 429
            request(keyed, key="k1"),
            request(keyed, key="k1"),  # the same key again, while the first holds it: 409
            request(f"other-{run}", qty=2),
        ]

    together = await place_batch(pool, scenario("batch"))
    alone = await place_alone(pool, scenario("alone"))
    assert shape(together)[:7] == shape(alone)[:7]
    assert [a.status for a in together] == [202, 422, 202, 422, 202, 429, 202, 409, 202]
    # alone, the second use of k1 comes after the first committed: the kept answer, replayed
    assert shape(alone)[7] == (202, "PENDINGtrue")
    assert alone[7].body == alone[6].body
    assert together[1].body["detail"] == "unknown SKU NOPE-404"
    assert together[5].headers == {"Retry-After": "1"}

    # what the batch saved: its five orders, each with its first timeline entry and its two
    # events in the outbox in order, and the answer kept for its key
    placed = [a.order.order_id for a in together if a.order is not None]
    assert len(placed) == 5
    rows = await pool.fetch(
        "SELECT o.order_id, o.total_amount, t.note FROM orders o"
        " JOIN order_timeline t USING (order_id) WHERE o.order_id = ANY($1::uuid[])",
        placed,
    )
    assert sorted(r["order_id"] for r in rows) == sorted(placed)
    assert {r["note"] for r in rows} == {"order placed"}
    assert {r["order_id"]: r["total_amount"] for r in rows}[placed[-1]] == 1000
    events = await pool.fetch(
        "SELECT convert_from(key, 'UTF8') AS key, event_type FROM outbox"
        " WHERE convert_from(key, 'UTF8') = ANY($1::text[]) ORDER BY id",
        [str(o) for o in placed],
    )
    types = [(e["key"], e["event_type"]) for e in events]
    for order_id in placed:
        mine = [t for k, t in types if k == str(order_id)]
        assert mine == ["OrderPlaced", "ReserveStock"], mine
    kept = await pool.fetchrow(
        "SELECT status_code, response FROM idempotency_keys WHERE customer_id = $1 AND key = 'k1'",
        "keyed-batch",
    )
    assert kept is not None
    assert kept["status_code"] == 202
    assert orjson.loads(kept["response"])["body"] == together[6].body
    # the key used again later: the kept answer; with another body: refused
    again, other = await place_alone(
        pool, [request("keyed-batch", key="k1"), request("keyed-batch", key="k1", qty=5)]
    )
    assert (again.status, again.body, again.headers["Idempotent-Replayed"]) == (
        202,
        together[6].body,
        "true",
    )
    assert (other.status, other.order) == (422, None)


async def test_concurrent_requests_share_transactions_and_each_gets_its_own_order(
    pool: asyncpg.Pool,
) -> None:
    placements = Intake(
        lambda: pool, deadlines=DEADLINES, max_open=0, service="order", concurrency=1
    )
    customers = [f"crowd-{uuid.uuid4().hex[:8]}" for _ in range(60)]
    answers = await asyncio.gather(*(placements.submit(request(c)) for c in customers))
    assert [a.status for a in answers] == [202] * 60
    assert len({a.body["order_id"] for a in answers}) == 60
    assert placements.batches < 60
    assert placements.largest > 1
    rows = await pool.fetch(
        "SELECT order_id::text, customer_id FROM orders WHERE customer_id = ANY($1::text[])",
        customers,
    )
    owners = {r["order_id"]: r["customer_id"] for r in rows}
    assert {a.body["order_id"]: c for a, c in zip(answers, customers, strict=True)} == owners


async def test_the_cap_holds_across_concurrent_transactions(pool: asyncpg.Pool) -> None:
    placements = Intake(
        lambda: pool, deadlines=DEADLINES, max_open=3, service="order", batch_max=2, concurrency=2
    )
    customer = f"greedy-{uuid.uuid4().hex[:8]}"
    answers = await asyncio.gather(*(placements.submit(request(customer)) for _ in range(10)))
    assert sorted(a.status for a in answers) == [202] * 3 + [429] * 7
    open_now = await pool.fetchval("SELECT count(*) FROM orders WHERE customer_id = $1", customer)
    assert open_now == 3


async def test_a_failed_batch_is_placed_again_request_by_request(pool: asyncpg.Pool) -> None:
    placements = Intake(
        lambda: pool, deadlines=DEADLINES, max_open=0, service="order", concurrency=1
    )
    run = uuid.uuid4().hex[:8]
    # PostgreSQL text cannot hold NUL: this request fails the statement of any batch it is in
    broken = request(f"nul\x00-{run}")
    good = [request(f"fine-{run}-{n}") for n in range(4)]
    outcomes = await asyncio.gather(
        *(placements.submit(r) for r in [good[0], good[1], broken, good[2], good[3]]),
        return_exceptions=True,
    )
    failed = outcomes[2]
    assert isinstance(failed, asyncpg.PostgresError | ValueError), failed
    for outcome in [outcomes[0], outcomes[1], outcomes[3], outcomes[4]]:
        assert isinstance(outcome, intake.Answer), outcome
        assert outcome.status == 202
    saved = await pool.fetchval(
        "SELECT count(*) FROM orders WHERE customer_id LIKE $1", f"fine-{run}-%"
    )
    assert saved == 4


class _Relay:
    """Stands in for the process's outbox relay: whether it leads, and how often it was woken."""

    def __init__(self, is_leader: bool) -> None:
        self.is_leader = is_leader
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


@pytest.mark.parametrize("leads", [True, False], ids=["own relay leads", "no lead here"])
async def test_placements_wake_a_leading_relay_of_their_own_and_notify_otherwise(
    pool: asyncpg.Pool, leads: bool
) -> None:
    relay = _Relay(leads)
    wakeup = outbox.RelayWakeup("order", relay)  # type: ignore[arg-type]
    placements = Intake(
        lambda: pool, deadlines=DEADLINES, max_open=0, service="order", wakeup=lambda: wakeup
    )
    channel = outbox.notify_channel("order")
    heard: list[str] = []  # the payloads, in commit order
    async with pool.acquire() as pooled, db.session_state(pooled) as listener:
        await listener.add_listener(channel, lambda *args: heard.append(args[3]))
        answer = await placements.submit(request(f"wake-{uuid.uuid4().hex[:8]}"))
        assert answer.status == 202
        assert relay.woken == 1  # after the commit, whoever leads
        # a marker notified after the placement committed: it arrives after the placement's own
        # NOTIFY, if there was one (a lock for the whole server at commit)
        await pool.execute("SELECT pg_notify($1, 'marker')", channel)

        async def marker_heard() -> bool:
            await listener.fetchval("SELECT 1")
            return "marker" in heard

        await eventually(marker_heard)
        assert heard == (["marker"] if leads else ["", "marker"])
