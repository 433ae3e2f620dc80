"""The order service's POST /orders in process, through its whole ASGI stack, with and without
the fast path (`order_service.api.PlaceOrders`), side by side.

    python -m bench.ingress --requests 20000 --rounds 4

The app is the service's own (its routes, the kit's auth middleware and rate limit, the body
limit) with an intake that answers at once, so what is measured is the HTTP side of placing an
order: from the ASGI call to the answer's last byte, not the transaction. No server and no
sockets either: uvicorn's parsing is the same in both. The variants run in turns (ABAB...) in one
process; the report gives each one's CPU per request and its ratio to the first.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI

from events.kit import auth
from events.kit.auth import TokenPolicy
from events.kit.http import NO_TELEMETRY
from events.kit.settings import DEV_SIGNING_KEY
from order_service import api, intake
from order_service.settings import Settings as OrderSettings

ACCEPTED = {"status": "PENDING"}


class InstantIntake:
    """Answers every placement at once, as a committed transaction would: 202 and a new id."""

    def __init__(self) -> None:
        self.requests: list[intake.PlaceRequest] = []

    async def submit(self, request: intake.PlaceRequest) -> intake.Answer:
        self.requests.append(request)
        return intake.Answer(202, {"order_id": str(uuid.uuid4()), **ACCEPTED})


def order_app(placements: Any, *, fast_path: bool) -> FastAPI:
    """The order service's HTTP app as its runtime builds it (the kit's auth and rate limit at
    their defaults, the service's body limit) around `placements`."""
    app = FastAPI(telemetry=NO_TELEMETRY)
    api.install(app, placements, OrderSettings().max_body_bytes, fast_path=fast_path)
    auth.install(app, OrderSettings())
    return app


async def call(
    app: Any,
    method: str,
    path: str,
    body: bytes | Sequence[bytes],
    headers: Sequence[tuple[bytes, bytes]],
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One request through the ASGI app (its body in one message, or in these chunks): the
    answer's status, headers and body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower(), v) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    chunks = [body] if isinstance(body, bytes) else list(body)
    answer: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}
        await asyncio.Event().wait()  # the client stays until the answer
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"], answer["headers"] = message["status"], message["headers"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return answer["status"], answer["headers"], answer["body"]


def bearer(customer: str) -> tuple[bytes, bytes]:
    policy = TokenPolicy(DEV_SIGNING_KEY, "shop", "shop-api")
    return b"authorization", f"Bearer {policy.mint(customer, ttl_s=3600)}".encode()


async def measure(requests: int, rounds: int, customers: int) -> str:
    variants = {"FastAPI route": False, "fast path": True}
    apps = {name: order_app(InstantIntake(), fast_path=fast) for name, fast in variants.items()}
    tokens = [bearer(f"bench-{i}") for i in range(customers)]
    body = orjson.dumps(
        {
            "lines": [{"sku": "SKU-00001", "quantity": 2}, {"sku": "SKU-00002", "quantity": 1}],
            "currency": "USD",
            "payment_token": "tok_approve",
        }
    )
    content_type = (b"content-type", b"application/json")
    cpu = dict.fromkeys(variants, 0.0)
    for app in apps.values():  # warm both up
        for i in range(200):
            await call(app, "POST", "/orders", body, [tokens[i % customers], content_type])
    for _ in range(rounds):
        for name, app in apps.items():
            started = time.process_time()
            for i in range(requests):
                status, _, _ = await call(
                    app, "POST", "/orders", body, [tokens[i % customers], content_type]
                )
                assert status == 202, status
            cpu[name] += time.process_time() - started
    first = next(iter(cpu.values()))
    lines = [f"{requests} requests x {rounds} rounds, in turns; CPU per request:"]
    for name, seconds in cpu.items():
        per = seconds / (requests * rounds) * 1e6
        lines.append(f"  {name:<14} {per:7.1f} us   {seconds / first:5.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--customers", type=int, default=2_000)
    args = parser.parse_args()
    import uvloop

    print(uvloop.run(measure(args.requests, args.rounds, args.customers)))


if __name__ == "__main__":
    main()
