"""The chaos run's client: orders posted at a steady rate, each with its own idempotency key, and
every request's fate recorded. An answer that says nothing (a dropped connection, a timeout, a 5xx,
a 409 "in progress") is an unknown outcome: the request is sent again with the same key, as a
real client would, until it gets a definite answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from deploy import tokens

TOKENS = ("tok_approve",) * 17 + ("tok_decline", "tok_insufficient_funds", "tok_timeout")
# 409: the same key is being handled right now; 425/429/5xx: try again.
RETRYABLE = {409, 425, 429, 500, 502, 503, 504}
# Requests on the wire at once. Orders still wait their turn here, not in httpx's pool, whose
# queue costs O(queued x connections) per request and starves the harness when the platform stalls.
CONCURRENCY = 32


@dataclass
class OrderRequest:
    index: int
    key: str
    customer: str
    body: dict[str, Any]
    invoked_at: float
    outcome: str = "invoked"  # invoked -> ok | failed, or unknown while it is being retried
    attempts: int = 0
    order_id: str | None = None
    last: str = ""
    answered_at: float | None = None

    def record(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "key": self.key,
            "customer": self.customer,
            "outcome": self.outcome,
            "attempts": self.attempts,
            "order_id": self.order_id,
            "last": self.last,
            "body": self.body,
        }


def order_headers(request: OrderRequest) -> dict[str, str]:
    """The headers of one order's POST: the one place that knows how a client identifies itself
    (a bearer token for the request's customer, signed as `shop token` signs)."""
    return {"Idempotency-Key": request.key, **tokens.bearer(request.customer)}


def order_body(lines: dict[str, int], token: str) -> dict[str, Any]:
    return {
        "lines": [{"sku": sku, "quantity": q} for sku, q in lines.items()],
        "currency": "USD",
        "payment_token": token,
    }


async def post_order(client: httpx.AsyncClient, base_url: str, request: OrderRequest) -> None:
    """Send the order once and classify the answer; the caller retries `unknown`."""
    request.attempts += 1
    try:
        r = await client.post(
            f"{base_url}/orders", json=request.body, headers=order_headers(request), timeout=10.0
        )
    except httpx.HTTPError as exc:
        request.outcome, request.last = "unknown", type(exc).__name__
        return
    request.last = str(r.status_code)
    if r.status_code in (200, 202):
        request.outcome = "ok"
        request.order_id = r.json()["order_id"]
    elif r.status_code in RETRYABLE:
        request.outcome = "unknown"
    else:
        request.outcome, request.last = "failed", f"{r.status_code} {r.text[:200]}"
    if request.outcome != "unknown":
        request.answered_at = time.monotonic()


@dataclass
class LoadGenerator:
    """Open loop: one new order every 1/rate seconds whatever the answers."""

    order_urls: Sequence[str]
    skus: Sequence[str]
    rng: random.Random
    rate: float
    run_id: str
    requests: list[OrderRequest] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _give_up_at: float = float("inf")
    _sending: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CONCURRENCY))

    def new_request(self) -> OrderRequest:
        i = len(self.requests)
        rng = self.rng
        lines = {rng.choice(self.skus): rng.randint(1, 3) for _ in range(rng.choice((1, 1, 2)))}
        # One customer per request: the harness then finds a request's orders by customer.
        customer = f"chaos-{self.run_id}-{i}"
        request = OrderRequest(
            index=i,
            key=f"{self.run_id}-{i}-{rng.getrandbits(32):08x}",
            customer=customer,
            body=order_body(lines, rng.choice(TOKENS)),
            invoked_at=time.monotonic(),
        )
        self.requests.append(request)
        return request

    async def run(self, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(limits=limits) as client:
            started = time.monotonic()
            n = 0
            while not stop.is_set():
                request = self.new_request()
                task = asyncio.create_task(self._drive(client, request))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                n += 1
                delay = started + n / self.rate - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
            await self.drain()

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def give_up_at(self, deadline: float) -> None:
        self._give_up_at = deadline

    async def _drive(self, client: httpx.AsyncClient, request: OrderRequest) -> None:
        backoff = 0.5
        while True:
            # A load balancer in front of the order replicas: any one may answer a retry.
            async with self._sending:
                await post_order(client, self.rng.choice(self.order_urls), request)
            self.attempts[request.outcome] += 1
            if request.outcome != "unknown" or time.monotonic() > self._give_up_at:
                return
            await asyncio.sleep(backoff * (0.5 + self.rng.random()))
            backoff = min(backoff * 2, 4.0)

    @property
    def outcomes(self) -> Counter[str]:
        return Counter(r.outcome for r in self.requests)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def journal(self) -> bytes:
        return b"".join(orjson.dumps(r.record()) + b"\n" for r in self.requests)
