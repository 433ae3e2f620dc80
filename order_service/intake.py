"""Group commit for the ingress: concurrent order placements share one transaction.

POST /orders cannot be batched by a consumer, but the requests in flight at the same moment can
be: each request is queued, and up to `concurrency` transactions place whatever is queued when
they start (at most `batch_max` requests each). An idle service places a request at once, alone;
a busy one places many with the same five round trips (BEGIN, the Idempotency-Keys' locks and
answers when any is sent, the customers' locks with the prices, the open-order count, one insert
of the orders, timeline entries, kept answers and outbox rows; COMMIT) that one used to take
seven for itself.

Each request still gets its own answer: a request refused (a reused key, an unknown SKU, a
customer at the cap) is decided in memory and leaves the others of its batch alone. When a
batch's transaction fails, its requests are placed again one by one, so a failure is answered
only to the request it belongs to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from events.contracts import OrderPlaced, PricedLine, ReserveStock, StockLine
from events.envelope import wrap
from events.ids import new_id
from events.kit import outbox
from events.kit.db import Conn
from events.kit.logging import get_logger
from events.messages import Message, Money
from order_service import domain, repository
from order_service.domain import Deadlines, Order

log = get_logger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class PlaceRequest:
    """One POST /orders, validated: who asks, for what, and its Idempotency-Key if any."""

    customer_id: str
    lines: tuple[StockLine, ...]
    currency: str
    payment_token: str
    idempotency_key: str | None = None
    request_hash: str = ""


@dataclass(frozen=True)
class Answer:
    """The HTTP answer to one request; `order` is set when it placed a new order."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    order: Order | None = None


def _problem(status: int, detail: str, **headers: str) -> Answer:
    return Answer(status, {"detail": detail}, headers)


IN_PROGRESS = _problem(409, "a request with this Idempotency-Key is in progress")
KEY_REUSED = _problem(422, "this Idempotency-Key was used with a different request body")


def placed_messages(order: Order, priced: list[dict[str, Any]], now: datetime) -> list[Message]:
    """What placing an order says: OrderPlaced, and the command asking for its stock."""
    placed = OrderPlaced(
        order_id=order.order_id,
        customer_id=order.customer_id,
        lines=tuple(
            PricedLine(
                sku=str(p["sku"]),
                quantity=int(p["quantity"]),
                unit_price=Money(amount=int(p["unit_price"]), currency=order.total.currency),
            )
            for p in priced
        ),
        total=order.total,
        placed_at=now,
    )
    return [placed, ReserveStock(order_id=order.order_id, lines=order.lines)]


def _catalog(rows: dict[str, Any]) -> dict[str, domain.CatalogItem]:
    return {
        sku: domain.CatalogItem(
            sku, Money(amount=r["price_amount"], currency=r["currency"]), r["active"]
        )
        for sku, r in rows.items()
    }


def _replayed(kept: Any, request_hash: str) -> Answer:
    """The answer kept for a key used before: the same, or 422 for a different request."""
    if kept["request_hash"] != request_hash:
        return KEY_REUSED
    stored = orjson.loads(kept["response"])
    headers = {"Location": stored["location"], "Idempotent-Replayed": "true"}
    return Answer(kept["status_code"], stored["body"], headers)


async def place(
    conn: Conn,
    requests: Sequence[PlaceRequest],
    *,
    deadlines: Deadlines,
    max_open: int,
    service: str,
    now: datetime,
    channel: str | None = None,
) -> list[Answer]:
    """Place a batch of requests inside the caller's transaction; one answer per request. Its
    outbox rows NOTIFY `channel` (the service's relay channel when None; '' for none)."""
    answers: list[Answer | None] = [None] * len(requests)
    keyed = [(i, r) for i, r in enumerate(requests) if r.idempotency_key is not None]
    if keyed:
        keys = sorted({(r.customer_id, str(r.idempotency_key)) for _, r in keyed})
        locked = await repository.try_lock_idempotency_keys(conn, keys)
        kept = await repository.kept_answers(conn, [k for k in keys if k in locked])
        taken: set[repository.IdempotencyKey] = set()
        for i, r in keyed:
            key = (r.customer_id, str(r.idempotency_key))
            if key not in locked or key in taken:  # in another transaction, or earlier in this one
                answers[i] = IN_PROGRESS
            elif key in kept:
                answers[i] = _replayed(kept[key], r.request_hash)
            taken.add(key)
    live = [(i, r) for i, r in enumerate(requests) if answers[i] is None]
    if not live:
        return [a for a in answers if a is not None]
    customers = sorted({r.customer_id for _, r in live}) if max_open else []
    skus = sorted({ln.sku for _, r in live for ln in r.lines})
    catalog = _catalog(await repository.lock_customers_and_price(conn, customers, skus))
    open_orders = await repository.open_orders(conn, customers) if max_open else {}
    placements: list[repository.Placement] = []
    messages: list[Message] = []
    for i, r in live:
        if max_open and open_orders.get(r.customer_id, 0) >= max_open:
            answers[i] = _problem(
                429,
                f"{max_open} of your orders are still in progress; "
                "retry when one of them is settled",
                **{"Retry-After": "1"},
            )
            continue
        try:
            priced, total = domain.price_lines(list(r.lines), catalog, r.currency)
        except domain.OrderRequestError as exc:
            answers[i] = _problem(422, str(exc))
            continue
        order = domain.new_order(
            new_id(), r.customer_id, list(r.lines), total, r.payment_token, now, deadlines
        )
        open_orders[r.customer_id] = open_orders.get(r.customer_id, 0) + 1
        body = {"order_id": str(order.order_id), "status": order.status.value}
        location = f"/orders/{order.order_id}"
        said = placed_messages(order, priced, now)
        messages += said
        kept_answer = None
        if r.idempotency_key is not None:
            response = orjson.dumps({"body": body, "location": location}).decode()
            kept_answer = ((r.customer_id, r.idempotency_key), r.request_hash, 202, response)
        placements.append(repository.Placement(order, priced, kept_answer))
        answers[i] = Answer(202, body, {"Location": location}, order)
    if placements:
        outgoing = outbox.outbox_columns([(m, wrap(m, producer=service)) for m in messages])
        if channel is None:
            channel = outbox.notify_channel(service)
        await repository.place_orders(conn, placements, outgoing, channel)
    return [a for a in answers if a is not None]


class Intake:
    """Queues placements and runs them in shared transactions (see the module's docstring)."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        *,
        deadlines: Deadlines,
        max_open: int,
        service: str,
        batch_max: int = 100,
        concurrency: int = 2,
        clock: Clock = utcnow,
        wakeup: Callable[[], outbox.RelayWakeup] | None = None,
    ) -> None:
        self._pool = pool
        # the relay's wake-up: NOTIFY, or this process's relay woken after the commit
        notify = outbox.RelayWakeup(service)
        self._wakeup = wakeup or (lambda: notify)
        self._deadlines = deadlines
        self._max_open = max_open
        self._service = service
        self._batch_max = batch_max
        self._concurrency = concurrency
        self._clock = clock
        self._queue: list[tuple[PlaceRequest, asyncio.Future[Answer]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0  # transactions that placed requests (for tests and metrics)
        self.largest = 0

    async def submit(self, request: PlaceRequest) -> Answer:
        """Place one request; its answer once the transaction it joined has committed."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        self._start()
        return await future

    def _start(self) -> None:
        while self._queue and len(self._running) < self._concurrency:
            batch = self._queue[: self._batch_max]
            del self._queue[: self._batch_max]
            task = asyncio.create_task(self._run(batch), name="order-intake")
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start()

    async def _run(self, batch: list[tuple[PlaceRequest, asyncio.Future[Answer]]]) -> None:
        try:
            answers = await self._transaction([r for r, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            log.warning("placement batch failed; placing its requests one by one", error=repr(exc))
            for request, future in batch:
                try:
                    _settle(future, (await self._transaction([request]))[0])
                except Exception as one:
                    _settle(future, one)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            _settle(future, answer)

    async def _transaction(self, requests: list[PlaceRequest]) -> list[Answer]:
        wakeup = self._wakeup()
        async with self._pool().acquire() as conn, conn.transaction():
            answers = await place(
                conn,
                requests,
                deadlines=self._deadlines,
                max_open=self._max_open,
                service=self._service,
                now=self._clock(),
                channel=wakeup.channel,
            )
        if any(a.order is not None for a in answers):
            wakeup.committed()
        self.batches += 1
        self.largest = max(self.largest, len(requests))
        return answers


def _settle(future: asyncio.Future[Answer], outcome: Answer | Exception) -> None:
    if future.done():  # the request was cancelled (its client went away) while it was placed
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
