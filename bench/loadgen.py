"""Open-loop order load over HTTP, and the Kafka-side tracker that sees each order end.

Open loop: requests are sent on a schedule whatever the answers, so a slow system shows up as
growing latency instead of a politely slower client (the coordinated-omission trap).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
import httpx
import orjson
from aiokafka import AIOKafkaConsumer

from events.kit.auth import mint_token
from events.kit.settings import DEV_SIGNING_KEY

TERMINAL_TYPES = {
    b"OrderConfirmed": "CONFIRMED",
    b"OrderRejected": "REJECTED",
    b"OrderCancelled": "CANCELLED",
}


@dataclass
class Sent:
    scheduled: float
    accepted_at: float | None = None
    status: int | None = None
    order_id: str | None = None
    outcome: str | None = None
    terminal_at: float | None = None
    error: str | None = None


@dataclass
class StepResult:
    rate: float
    seconds: float
    sent: list[Sent] = field(default_factory=list)


# An order's JSON body and its headers (the customer's bearer token).
OrderRequest = tuple[dict[str, object], dict[str, str]]


class Customers:
    """Bearer tokens of `count` customers, minted once with the platform's signing key (the
    development key unless SHOP_AUTH_SIGNING_KEY is set, as for the services)."""

    def __init__(self, count: int = 2_000, key: str | None = None) -> None:
        key = key or os.environ.get("SHOP_AUTH_SIGNING_KEY", DEV_SIGNING_KEY)
        self.headers = [
            {"Authorization": f"Bearer {mint_token(key, f'bench-{i}', ttl_s=24 * 3600)}"}
            for i in range(count)
        ]

    def pick(self, rnd: random.Random) -> dict[str, str]:
        return rnd.choice(self.headers)


def order_body(
    rnd: random.Random, skus: Sequence[str], weights: Sequence[float], customers: Customers
) -> OrderRequest:
    lines = {rnd.choices(skus, weights)[0]: rnd.randint(1, 3) for _ in range(rnd.randint(1, 3))}
    body: dict[str, object] = {
        "lines": [{"sku": s, "quantity": q} for s, q in lines.items()],
        "currency": "USD",
        "payment_token": "tok_approve",
    }
    return body, customers.pick(rnd)


# POST one order: its body and headers in, the answer's status and body out.
Post = Callable[[dict[str, object], dict[str, str]], Awaitable[tuple[int, bytes]]]


def http_client(in_flight: int = 256, timeout_s: float = 30.0) -> aiohttp.ClientSession:
    """The load generator's HTTP client: aiohttp, whose per-request CPU is a fraction of
    httpx's; past the platform's knee, with every connection busy, httpx's pool (which scans
    its connections on every event) cost the load generator more CPU than some services."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=in_flight, force_close=False),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    )


def poster(session: aiohttp.ClientSession, urls: Sequence[str]) -> Post:
    """POST JSON to each of `urls` in turn (one client over several replicas)."""
    next_url = itertools.cycle(urls).__next__

    async def post(body: dict[str, object], headers: dict[str, str]) -> tuple[int, bytes]:
        async with session.post(
            next_url(),
            data=orjson.dumps(body),
            headers={**headers, "content-type": "application/json"},
        ) as r:
            return r.status, await r.read()

    return post


async def open_loop(
    post: Post,
    rate: float,
    seconds: float,
    make_body: Callable[[], OrderRequest],
    *,
    on_accept: Callable[[Sent], None] | None = None,
    accepted_status: int = 202,
    in_flight: int = 256,
) -> StepResult:
    """POST at `rate` per second for `seconds`; each request is its own task.

    At most `in_flight` requests are on the wire (the client's connections); the others wait
    their turn here, their time counted from when they were due. A request's task is let go once
    it is done (its `Sent` keeps what the report needs): kept to the end of the step, the done
    tasks were about half of the load generator's memory, some 670 bytes an order.
    """
    result = StepResult(rate, seconds)
    running: set[asyncio.Task[None]] = set()
    failed: list[BaseException] = []

    def finished(task: asyncio.Task[None]) -> None:
        running.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            failed.append(exc)

    start = time.time()
    gate = asyncio.Semaphore(in_flight)

    async def one(sent: Sent, request: OrderRequest) -> None:
        body, headers = request
        try:
            async with gate:
                status, content = await post(body, headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            sent.error = type(exc).__name__
            return
        sent.status = status
        sent.accepted_at = time.time()
        if status == accepted_status or status == 200:
            data = orjson.loads(content)
            sent.order_id = data.get("order_id")
            if data.get("status") in ("CONFIRMED", "REJECTED", "CANCELLED"):
                sent.outcome = data["status"]
                sent.terminal_at = sent.accepted_at
            if on_accept:
                on_accept(sent)

    n = int(rate * seconds)
    for i in range(n):
        at = start + i / rate
        delay = at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = Sent(scheduled=at)
        result.sent.append(sent)
        task = asyncio.create_task(one(sent, make_body()))
        running.add(task)
        task.add_done_callback(finished)
    await asyncio.gather(*running)
    if failed:
        raise failed[0]
    return result


class TerminalTracker:
    """Reads order.events from the end and stamps each order's terminal event time."""

    def __init__(self, bootstrap: str, topic: str = "order.events") -> None:
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="latest",
            group_id=None,
            # Fewer, fuller fetches: the latency is the terminal event's own time, whenever this
            # reads it, so waiting for 64 KiB costs no figure, and at 1 byte and 50 ms the
            # tracker cost the load generator half its CPU at 50 orders/s (docs/performance.md).
            fetch_max_wait_ms=200,
            fetch_min_bytes=64 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.terminal: dict[str, tuple[str, float]] = {}
        # (partition, offset, event time) of each terminal event, in the order read
        self.terminal_records: list[tuple[int, int, float]] = []
        # (event time, when this tracker read it): how far the load generator trails the log
        self.read_at: list[tuple[float, float]] = []
        self._waiting: dict[str, Sent] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        await self._consumer.seek_to_end()
        for tp in self._consumer.assignment():
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    def watch(self, sent: Sent) -> None:
        if sent.order_id is None:
            return
        seen = self.terminal.get(sent.order_id)
        if seen:
            sent.outcome, sent.terminal_at = seen
        else:
            self._waiting[sent.order_id] = sent

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batch.values():
                for rec in records:
                    value = rec.value or b""
                    start = value.find(b'"type":"')
                    kind = value[start + 8 : value.find(b'"', start + 8)] if start >= 0 else b""
                    outcome = TERMINAL_TYPES.get(kind)
                    if outcome is None:
                        continue
                    env = orjson.loads(value)
                    order_id = env["payload"]["order_id"]
                    at = _epoch(env["occurred_at"])
                    self.terminal[order_id] = (outcome, at)
                    self.terminal_records.append((rec.partition, rec.offset, at))
                    self.read_at.append((at, time.time()))
                    sent = self._waiting.pop(order_id, None)
                    if sent is not None:
                        sent.outcome, sent.terminal_at = outcome, at

    async def wait_for(self, sents: Sequence[Sent], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(s.outcome or not s.order_id for s in sents):
                return
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self._consumer.stop()


class FreshnessProbe:
    """How long a terminal event takes to show in the analytics figures.

    Polls the analytics service's /api/positions every `interval_s` and keeps when each
    partition's folded position moved. A terminal event (partition, offset, event time), as the
    tracker read it, became visible at the first poll whose position is past its offset.
    Freshness = that moment - the event's time. Matching after the fact keeps the tracker's own
    delay out of the figure: the event was visible when analytics showed it, whenever the load
    generator got to read it.
    """

    def __init__(
        self,
        analytics_url: str,
        tracker: TerminalTracker,
        topic: str = "order.events",
        interval_s: float = 0.05,
    ) -> None:
        self._url = analytics_url.rstrip("/") + "/api/positions"
        self._tracker = tracker
        self._topic = topic
        self._interval_s = interval_s
        # per partition: the times of the polls that saw its position move, and those positions
        self._moved_at: dict[int, list[float]] = {}
        self._moved_to: dict[int, list[int]] = {}
        self.polls = 0
        self._polled = asyncio.Event()
        self._cursor = 0  # terminal records before it are all visible
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    r = await client.get(self._url)
                    self.record(r.json()["positions"], time.time())
                self._polled.set()
                await asyncio.sleep(self._interval_s)

    def record(self, positions: dict[str, int], now: float) -> None:
        """One poll's answer: `{"<topic>/<partition>": next offset to fold}` seen at `now`."""
        self.polls += 1
        prefix = self._topic + "/"
        for key, position in positions.items():
            if not key.startswith(prefix):
                continue
            partition = int(key[len(prefix) :])
            moved_to = self._moved_to.setdefault(partition, [])
            if not moved_to or position > moved_to[-1]:
                moved_to.append(position)
                self._moved_at.setdefault(partition, []).append(now)

    def visible_at(self, partition: int, offset: int) -> float | None:
        """When the first poll saw the fold past `offset` on `partition` (None: not yet)."""
        moved_to = self._moved_to.get(partition, [])
        i = bisect.bisect_right(moved_to, offset)
        return self._moved_at[partition][i] if i < len(moved_to) else None

    def freshness_ms(self, started: float, ended: float) -> list[float]:
        """Freshness of the visible terminal events whose event time is in [started, ended]."""
        out = []
        for partition, offset, at in self._tracker.terminal_records:
            if started <= at <= ended and (seen := self.visible_at(partition, offset)) is not None:
                out.append((seen - at) * 1000)
        return out

    def tracker_delay_ms(self, started: float, ended: float) -> list[float]:
        """How late the tracker read the terminal events whose event time is in the window."""
        return [(read - at) * 1000 for at, read in self._tracker.read_at if started <= at <= ended]

    def unseen(self) -> int:
        """Terminal events read so far that analytics has not shown yet."""
        records = self._tracker.terminal_records
        while self._cursor < len(records) and self.visible_at(*records[self._cursor][:2]):
            self._cursor += 1
        return sum(1 for p, o, _ in records[self._cursor :] if self.visible_at(p, o) is None)

    async def drained(self, timeout_s: float) -> None:
        """Wait until every terminal event read so far is visible (or the timeout passes)."""
        deadline = time.monotonic() + timeout_s
        while self.unseen() and (left := deadline - time.monotonic()) > 0:
            self._polled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._polled.wait(), left)


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
