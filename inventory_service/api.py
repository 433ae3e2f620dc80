"""HTTP routes of inventory_service: stock levels, and the admin restock (admin role only).

No `from __future__ import annotations` here: FastAPI must see the route signatures' real types,
and the connection dependency is local to `router`, out of reach of string-annotation lookup.
"""

from collections.abc import AsyncIterator, Callable
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from events.kit.auth import admin_principal
from events.kit.db import Conn
from events.kit.http import UNREADABLE_BODY
from inventory_service import handlers, repository
from inventory_service.domain import Policy, StockLevel

MAX_PAGE_SIZE = 200

SkuPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class StockView(BaseModel):
    sku: str
    on_hand: int
    reserved: int
    available: int
    low_stock_threshold: int

    @classmethod
    def of(cls, level: StockLevel) -> "StockView":
        return cls(
            sku=level.sku,
            on_hand=level.on_hand,
            reserved=level.reserved,
            available=level.available,
            low_stock_threshold=level.low_stock_threshold,
        )


class StockPage(BaseModel):
    items: list[StockView]
    page: int
    page_size: int
    total: int


class RestockRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: int = Field(ge=1, le=1_000_000, strict=True)


def router(pool: Callable[[], asyncpg.Pool], policy: Policy, *, service: str) -> APIRouter:
    """The stock routes, on connections from the pool the callable returns once running."""
    api = APIRouter(tags=["stock"])

    async def connection() -> AsyncIterator[Conn]:
        async with pool().acquire() as conn:
            yield conn

    Connection = Annotated[Conn, Depends(connection)]

    @api.get("/stock/{sku}")
    async def get_stock(sku: SkuPath, conn: Connection) -> StockView:
        """Units on hand, reserved and available for one SKU."""
        level = await repository.get_stock(conn, sku)
        if level is None:
            raise HTTPException(status_code=404, detail=f"unknown SKU {sku!r}")
        return StockView.of(level)

    @api.get("/stock")
    async def list_stock(
        conn: Connection,
        below_threshold: bool = False,
        page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
        page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    ) -> StockPage:
        """Stock levels in SKU order, a page at a time; below_threshold keeps only low stock."""
        items = await repository.list_stock(
            conn, below_threshold=below_threshold, limit=page_size, offset=(page - 1) * page_size
        )
        total = await repository.count_stock(conn, below_threshold=below_threshold)
        return StockPage(
            items=[StockView.of(x) for x in items], page=page, page_size=page_size, total=total
        )

    @api.post(
        "/admin/stock/{sku}/restock",
        dependencies=[Depends(admin_principal)],
        responses={
            **UNREADABLE_BODY,
            401: {"description": "No valid token"},
            403: {"description": "Not an admin"},
        },
    )
    async def restock(sku: SkuPath, body: RestockRequest, conn: Connection) -> StockView:
        """Add units of a SKU (creating it if new) and publish StockLevelChanged."""
        async with conn.transaction():
            level, changed = await handlers.apply_restock(conn, sku, body.quantity, policy)
            await handlers.publish(conn, [changed], service=service)
        return StockView.of(level)

    return api
