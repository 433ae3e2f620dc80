"""The ingress HTTP API: place, read, list, cancel and follow orders."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.types import ASGIApp, Receive, Scope, Send

from events.contracts import TERMINAL_STATUSES, OrderStatus, StockLine
from events.kit import outbox
from events.kit.auth import CustomerDep, Principal
from events.kit.db import Conn
from events.kit.http import UNREADABLE_BODY, harden, receive_body, replay
from order_service import domain, handlers, intake, repository

TOKEN = re.compile(r"^tok_[A-Za-z0-9_]{1,64}$")
PAN_LIKE = re.compile(r"^[\d\s-]{13,23}$")
SERVICE = "order"
IDEMPOTENCY_KEY_MAX = 200


class LineIn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    quantity: int = Field(ge=1, le=1000, strict=True)


class OrderIn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lines: list[LineIn] = Field(min_length=1, max_length=100)
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. USD")
    payment_token: str = Field(
        description="A payment token such as tok_approve; never a card",
        # Documented, but checked by the validator below so that a card number gets its own answer.
        json_schema_extra={"pattern": TOKEN.pattern},
    )

    @field_validator("payment_token")
    @classmethod
    def token_not_card(cls, value: str) -> str:
        if PAN_LIKE.match(value) and sum(c.isdigit() for c in value) >= 13:
            raise ValueError("raw card numbers are refused; send a payment token (tok_...)")
        if not TOKEN.fullmatch(value):  # match() would let "tok_x\n" through
            raise ValueError("payment_token must be a token like tok_approve")
        return value


class OrderAccepted(BaseModel):
    order_id: uuid.UUID
    status: OrderStatus


class CancelIn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # PostgreSQL text cannot hold NUL: refused with 422 rather than failing the UPDATE with 500.
    reason: str = Field(default="cancelled by customer", max_length=500, pattern=r"^[^\x00]*$")


# async: FastAPI would run a plain `def` dependency in a worker thread, per request.
async def get_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.runtime.pool
    return pool


async def get_intake(request: Request) -> intake.Intake:
    placements: intake.Intake = request.app.state.intake
    return placements


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
IntakeDep = Annotated[intake.Intake, Depends(get_intake)]
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No bearer token, or one that is invalid or expired"},
    429: {"description": "Too many requests from this client; see Retry-After"},
}
NO_ORDER: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    404: {"description": "No such order for this customer"},
}

router = APIRouter(tags=["orders"])


def _problem(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


async def _emit(conn: Conn, messages: list[Any]) -> None:
    await outbox.emit(conn, messages, service=SERVICE)


@router.post(
    "/orders",
    status_code=202,
    response_model=OrderAccepted,
    responses={
        **AUTH_ERRORS,
        **UNREADABLE_BODY,
        409: {"description": "A request with this Idempotency-Key is in progress"},
        413: {"description": "Request body too large"},
        422: {"description": "Invalid order, unknown product, or a reused Idempotency-Key"},
    },
)
async def create_order(
    body: OrderIn,
    principal: CustomerDep,
    placements: IntakeDep,
    idempotency_key: Annotated[str | None, Header(max_length=IDEMPOTENCY_KEY_MAX)] = None,
) -> JSONResponse:
    """Place an order for the caller; it is priced from the catalog and driven to a final status
    by the saga. At most ORDER_MAX_OPEN_ORDERS of a customer's orders may hold stock at once."""
    answer = await _place(placements, body, principal.subject, idempotency_key)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers or None)


async def _place(
    placements: intake.Intake, body: OrderIn, customer_id: str, idempotency_key: str | None
) -> intake.Answer:
    """The intake's answer to one validated POST /orders (the route's, and PlaceOrders')."""
    request = intake.PlaceRequest(
        customer_id=customer_id,
        lines=tuple(StockLine(sku=ln.sku, quantity=ln.quantity) for ln in body.lines),
        currency=body.currency,
        payment_token=body.payment_token,
        idempotency_key=idempotency_key,
        request_hash=hashlib.sha256(body.model_dump_json().encode()).hexdigest(),
    )
    return await placements.submit(request)


# What PlaceOrders reads as JSON (FastAPI reads more: any +json type; and no type as none).
JSON_TYPES = frozenset({b"application/json", b"application/json; charset=utf-8"})


class PlaceOrders:
    """POST /orders straight to the intake, past FastAPI's routing and dependency solving.

    At 400 orders/s, FastAPI's layers between the kit's middleware and `create_order` (routing,
    dependencies, the body's validation, each a few frames deep) held a quarter of the order
    service's samples; this does that request's work in one frame. It gives the same answers as
    the route, which stays the reference and the documentation: it answers only a request it is
    sure of (a caller the auth middleware let in, a JSON body `OrderIn` accepts, at most one
    Idempotency-Key within its length), and hands anything else to FastAPI with the body it read
    replayed, so every error answer is FastAPI's own. It sits inside the auth middleware and the
    body limit, which apply to it as to the route.
    """

    def __init__(self, app: ASGIApp, placements: intake.Intake) -> None:
        self.app = app
        self.placements = placements

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/orders" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        principal: Principal | None = scope.get("state", {}).get("principal")
        received = await receive_body(receive)
        assert received is not None  # no limit asked: the body limit outside has applied its own
        body = None
        if principal is not None and received[-1]["type"] == "http.request":
            body = _accepted(scope, b"".join(m.get("body", b"") for m in received))
        if body is None:
            await self.app(scope, replay(received, receive), send)
            return
        assert principal is not None
        order, key = body
        answer = await _place(self.placements, order, principal.subject, key)
        # the route's JSONResponse renders with the standard library's json; orjson writes the
        # same bytes for an answer's strings, integers and nulls, in a tenth of the time
        response = Response(
            orjson.dumps(answer.body),
            answer.status,
            headers=answer.headers or None,
            media_type=JSONResponse.media_type,
        )
        await response(scope, receive, send)


def _accepted(scope: Scope, raw: bytes) -> tuple[OrderIn, str | None] | None:
    """The order and its Idempotency-Key, when the route would take them as they are."""
    content_type = None
    keys = []
    for name, value in scope["headers"]:
        if name == b"content-type":
            if content_type is not None:
                return None
            content_type = value.lower()
        elif name == b"idempotency-key":
            keys.append(value)
    if content_type not in JSON_TYPES or len(keys) > 1:
        return None
    key = keys[0].decode("latin-1") if keys else None
    if key is not None and len(key) > IDEMPOTENCY_KEY_MAX:
        return None
    try:
        return OrderIn.model_validate_json(raw), key
    except ValueError:
        return None


def _order_view(row: Any, timeline: list[Any]) -> dict[str, Any]:
    return {
        "order_id": str(row["order_id"]),
        "customer_id": row["customer_id"],
        "status": row["status"],
        "reason": row["reason"],
        "refunded": row["refunded"],
        "lines": orjson.loads(row["lines"]),
        "total": {"amount": row["total_amount"], "currency": row["currency"]},
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "timeline": [
            {"status": t["status"], "note": t["note"], "at": t["at"].isoformat()} for t in timeline
        ],
    }


@router.get(
    "/catalog/{sku}",
    tags=["catalog view"],
    responses={404: {"description": "The order service has not seen this product"}},
)
async def catalog_item(sku: str, pool: PoolDep) -> JSONResponse:
    """This service's own view of a product, as it prices orders from it."""
    async with pool.acquire() as conn:
        rows = await repository.products(conn, [sku])
    row = rows.get(sku)
    if row is None:
        return _problem(404, f"no product {sku} in the order service's catalog view")
    return JSONResponse(
        {
            "sku": sku,
            "name": row["name"],
            "category": row["category"],
            "price": {"amount": row["price_amount"], "currency": row["currency"]},
            "active": row["active"],
        }
    )


def _visible(row: Any, principal: Principal) -> bool:
    """Customers see only their own orders (others answer 404, not 403: no probing ids)."""
    return row is not None and (principal.is_admin or row["customer_id"] == principal.subject)


@router.get("/orders/{order_id}", responses=NO_ORDER)
async def get_order(order_id: uuid.UUID, principal: CustomerDep, pool: PoolDep) -> JSONResponse:
    """One of the caller's orders: status, lines, total and the timeline of its saga steps."""
    async with pool.acquire() as conn:
        row = await repository.get_order_row(conn, order_id)
        if not _visible(row, principal):
            return _problem(404, f"no order {order_id}")
        steps = await repository.timeline(conn, order_id)
    return JSONResponse(_order_view(row, steps))


@router.get("/orders", responses={**AUTH_ERRORS, 403: {"description": "Not an admin"}})
async def list_orders(
    pool: PoolDep,
    principal: CustomerDep,
    customer_id: Annotated[
        str | None,
        Query(min_length=1, max_length=100, description="Admins only: whose orders to list."),
    ] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Any:
    """The caller's orders, newest first, paginated."""
    if customer_id is None or customer_id == principal.subject:
        customer_id = principal.subject
    elif not principal.is_admin:
        return _problem(403, "only admins list other customers' orders")
    async with pool.acquire() as conn:
        rows = await repository.customer_orders(
            conn, customer_id, page_size, (page - 1) * page_size
        )
    return {
        "page": page,
        "page_size": page_size,
        "total": rows[0]["total"] if rows else 0,
        "items": [
            {
                "order_id": str(r["order_id"]),
                "status": r["status"],
                "reason": r["reason"],
                "total": {"amount": r["total_amount"], "currency": r["currency"]},
                "created_at": r["created_at"].isoformat(),
            }
            for r in rows
        ],
    }


@router.post(
    "/orders/{order_id}/cancel",
    status_code=202,
    response_model=OrderAccepted,
    responses={
        **NO_ORDER,
        **UNREADABLE_BODY,
        409: {"description": "The order can no longer be cancelled"},
    },
)
async def cancel(
    order_id: uuid.UUID, principal: CustomerDep, pool: PoolDep, body: CancelIn | None = None
) -> JSONResponse:
    """Cancel an order: before confirmation stock is released, after it the payment is refunded."""
    reason = body.reason if body else "cancelled by customer"
    async with pool.acquire() as conn, conn.transaction():
        if not _visible(await repository.get_order_row(conn, order_id), principal):
            return _problem(404, f"no order {order_id}")
        try:
            result = await handlers.cancel_order(conn, order_id, reason, datetime.now(UTC))
        except domain.CannotCancel as exc:
            return _problem(409, str(exc))
        if result is None:
            return _problem(404, f"no order {order_id}")
        order, messages = result
        await _emit(conn, messages)
    return JSONResponse({"order_id": str(order.order_id), "status": order.status.value}, 202)


@router.get("/orders/{order_id}/events", responses=NO_ORDER)
async def order_events(
    order_id: uuid.UUID,
    principal: CustomerDep,
    pool: PoolDep,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
) -> Any:
    """Server-sent events of the order's status changes; resumable with Last-Event-ID."""
    async with pool.acquire() as conn:
        if not _visible(await repository.get_order_row(conn, order_id), principal):
            return _problem(404, f"no order {order_id}")

    async def stream() -> AsyncIterator[bytes]:
        after = last_event_id or 0
        idle = 0
        while True:
            async with pool.acquire() as conn:
                steps = await repository.timeline(conn, order_id, after)
            for step in steps:
                after = step["id"]
                data = {
                    "status": step["status"],
                    "note": step["note"],
                    "at": step["at"].isoformat(),
                }
                payload = orjson.dumps(data).decode()
                yield f"id: {after}\nevent: status\ndata: {payload}\n\n".encode()
                if step["status"] in TERMINAL_STATUSES and step is steps[-1]:
                    return
            idle = 0 if steps else idle + 1
            if idle and idle % 50 == 0:
                yield b": keep-alive\n\n"
            await asyncio.sleep(0.2)

    return StreamingResponse(stream(), media_type="text/event-stream")


def install(
    app: FastAPI, placements: intake.Intake, max_body_bytes: int, *, fast_path: bool = True
) -> None:
    app.state.intake = placements
    app.include_router(router)
    if fast_path:
        # added before harden's body limit (and the runtime's auth): inside both
        app.add_middleware(PlaceOrders, placements=placements)
    harden(app, max_body_bytes)
