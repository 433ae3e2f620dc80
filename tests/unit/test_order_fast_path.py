"""POST /orders past FastAPI (order_service.api.PlaceOrders) answers exactly as the route does.

Every request here goes to two copies of the order service's HTTP app, one with the fast path and
one without, each with an intake that answers deterministically from what it is asked; the two
answers (status, headers, body bytes) and the placements the intakes were asked for must be equal.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import MutableMapping
from typing import Any

import pytest

from bench.ingress import bearer, call, order_app
from events.kit.auth import Principal
from order_service import intake
from order_service.api import PlaceOrders

JSON = (b"content-type", b"application/json")
ALICE = bearer("alice")
BUSY = bearer("busy")


def order(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "lines": [{"sku": "SKU-1", "quantity": 2}, {"sku": "SKU-2", "quantity": 1}],
        "currency": "USD",
        "payment_token": "tok_approve",
    }
    body.update(changes)
    return body


def js(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class ScriptedIntake:
    """Answers as the real intake may, chosen by the request: its Idempotency-Key or customer."""

    def __init__(self) -> None:
        self.requests: list[intake.PlaceRequest] = []

    async def submit(self, request: intake.PlaceRequest) -> intake.Answer:
        self.requests.append(request)
        if request.idempotency_key == "in-progress":
            return intake.IN_PROGRESS
        if request.idempotency_key == "reused":
            return intake.KEY_REUSED
        if request.customer_id == "busy":
            return intake.Answer(
                429, {"detail": "10 of your orders are still in progress"}, {"Retry-After": "1"}
            )
        if request.lines[0].sku == "UNKNOWN":
            return intake.Answer(422, {"detail": "unknown product UNKNOWN («inconnu»)"})
        order_id = uuid.uuid5(uuid.NAMESPACE_URL, request.request_hash + request.customer_id)
        headers = {"Location": f"/orders/{order_id}"}
        if request.idempotency_key == "replayed":
            headers["Idempotent-Replayed"] = "true"
        return intake.Answer(202, {"order_id": str(order_id), "status": "PENDING"}, headers)


CASES: dict[str, tuple[bytes | list[bytes], list[tuple[bytes, bytes]]]] = {
    "an order": (js(order()), [ALICE, JSON]),
    "with an idempotency key": (js(order()), [ALICE, JSON, (b"idempotency-key", b"k-1")]),
    "a replayed key": (js(order()), [ALICE, JSON, (b"idempotency-key", b"replayed")]),
    "a key in progress": (js(order()), [ALICE, JSON, (b"idempotency-key", b"in-progress")]),
    "a reused key": (js(order()), [ALICE, JSON, (b"idempotency-key", b"reused")]),
    "a key of 200 characters": (js(order()), [ALICE, JSON, (b"idempotency-key", b"k" * 200)]),
    "a key of 201 characters": (js(order()), [ALICE, JSON, (b"idempotency-key", b"k" * 201)]),
    "two keys": (
        js(order()),
        [ALICE, JSON, (b"idempotency-key", b"a"), (b"idempotency-key", b"b")],
    ),
    "too many open orders": (js(order()), [BUSY, JSON]),
    "an unknown product": (js(order(lines=[{"sku": "UNKNOWN", "quantity": 1}])), [ALICE, JSON]),
    "no content type": (js(order()), [ALICE]),
    "json with a charset": (
        js(order()),
        [ALICE, (b"content-type", b"application/json; charset=utf-8")],
    ),
    "json in capitals": (js(order()), [ALICE, (b"content-type", b"Application/JSON")]),
    "a +json type": (js(order()), [ALICE, (b"content-type", b"application/merge-patch+json")]),
    "plain text": (js(order()), [ALICE, (b"content-type", b"text/plain")]),
    "a form": (b"lines=1", [ALICE, (b"content-type", b"application/x-www-form-urlencoded")]),
    "the body in chunks": ([js(order())[:10], js(order())[10:30], js(order())[30:]], [ALICE, JSON]),
    "no token": (js(order()), [JSON]),
    "a bad token": (js(order()), [(b"authorization", b"Bearer nope"), JSON]),
    "an empty body": (b"", [ALICE, JSON]),
    "not json": (b"{lines: 1}", [ALICE, JSON]),
    "not utf-8": (b'{"currency": "\xff"}', [ALICE, JSON]),
    "a utf-8 bom": (b"\xef\xbb\xbf" + js(order()), [ALICE, JSON]),
    "a json array": (js([order()]), [ALICE, JSON]),
    "deeply nested": (b'{"lines": ' + b"[" * 5000 + b"]" * 5000 + b"}", [ALICE, JSON]),
    "over the body limit": (js(order(pad="x" * 70_000)), [ALICE, JSON]),
    "an unknown field": (js(order(customer_id="mallory")), [ALICE, JSON]),
    "a quantity as text": (js(order(lines=[{"sku": "SKU-1", "quantity": "2"}])), [ALICE, JSON]),
    "a quantity as a float": (
        b'{"lines":[{"sku":"SKU-1","quantity":2.0}],"currency":"USD",'
        b'"payment_token":"tok_approve"}',
        [ALICE, JSON],
    ),
    "a huge quantity": (js(order(lines=[{"sku": "SKU-1", "quantity": 10**30}])), [ALICE, JSON]),
    "no lines": (js(order(lines=[])), [ALICE, JSON]),
    "a bad sku": (js(order(lines=[{"sku": "-x y", "quantity": 1}])), [ALICE, JSON]),
    "a lower-case currency": (js(order(currency="usd")), [ALICE, JSON]),
    "a card number": (js(order(payment_token="4242 4242 4242 4242")), [ALICE, JSON]),
    "a token and a newline": (js(order(payment_token="tok_x\n")), [ALICE, JSON]),
    "a duplicated field": (
        b'{"lines":[{"sku":"SKU-1","quantity":1}],"currency":"EUR","currency":"USD",'
        b'"payment_token":"tok_approve"}',
        [ALICE, JSON],
    ),
    "escaped characters": (
        b'{"lines":[{"sku":"SKU\\u002d1","quantity":1}],"currency":"USD",'
        b'"payment_token":"tok_\\u0061pprove"}',
        [ALICE, JSON],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_the_fast_path_answers_as_the_route_does(case: str) -> None:
    body, headers = CASES[case]
    answers = {}
    asked = {}
    for fast in (False, True):
        placements = ScriptedIntake()
        app = order_app(placements, fast_path=fast)
        answers[fast] = await call(app, "POST", "/orders", body, headers)
        asked[fast] = placements.requests
    assert answers[True] == answers[False]
    assert asked[True] == asked[False]


async def test_the_cases_cover_acceptance_and_each_kind_of_refusal() -> None:
    """The comparison above is worth something only if both paths answer a variety of ways."""
    statuses = set()
    for body, headers in CASES.values():
        status, _, _ = await call(
            order_app(ScriptedIntake(), fast_path=True), "POST", "/orders", body, headers
        )
        statuses.add(status)
    assert {202, 400, 401, 409, 413, 422, 429} <= statuses


def scope(principal: Principal | None, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/orders",
        "headers": headers,
        "state": {"principal": principal},
    }


async def test_it_answers_a_request_it_accepts_itself_and_hands_on_the_rest_whole() -> None:
    handed: list[bytes] = []

    async def route(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        handed.append(message["body"])
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    placements = ScriptedIntake()
    fast = PlaceOrders(route, placements)  # type: ignore[arg-type]
    alice = Principal("alice", frozenset())
    sent: list[dict[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    def receiving(body: bytes) -> Any:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        return receive

    await fast(scope(alice, [JSON]), receiving(js(order())), send)
    assert handed == []
    assert sent[0]["status"] == 202
    assert [r.customer_id for r in placements.requests] == ["alice"]

    bad = js(order(currency="usd"))
    await fast(scope(alice, [JSON]), receiving(bad), send)
    await fast(scope(None, [JSON]), receiving(js(order())), send)
    assert handed == [bad, js(order())]
    assert len(placements.requests) == 1


@pytest.mark.parametrize("fast", [False, True])
async def test_a_body_over_the_limit_without_a_length_is_refused_with_413(fast: bool) -> None:
    """The body limit reads the body before the app: FastAPI, meeting the limit while reading
    it itself, answered 400 ("There was an error parsing the body")."""
    chunk = js(order())
    chunks = [chunk] * (64 * 1024 // len(chunk) + 1)
    status, _, body = await call(
        order_app(ScriptedIntake(), fast_path=fast), "POST", "/orders", chunks, [ALICE, JSON]
    )
    assert status == 413
    assert b"larger than 65536 bytes" in body
