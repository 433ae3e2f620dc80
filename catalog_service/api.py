"""The catalog's HTTP API: browse products, and admin routes that change them.

Admin routes need a bearer token with the admin role (401 without a token, 403 without the role).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)

from catalog_service import domain, handlers, repository
from catalog_service.domain import Change, Details, Patch, Product
from events.contracts import Sku
from events.kit.auth import admin_principal
from events.kit.http import UNREADABLE_BODY

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MAX_PRICE = 10**12
MAX_PAGE_SIZE = 200


def _integer_price(value: object) -> object:
    # Strict int would refuse these too, but with a message that does not say why.
    if isinstance(value, float):
        raise ValueError(
            "price must be an integer number of minor units (1999 for 19.99 USD), not a float"
        )
    if isinstance(value, bool | str):
        raise ValueError("price must be a JSON integer of minor units (1999 for 19.99 USD)")
    return value


# PostgreSQL text cannot hold NUL: refused here with 422 rather than failing the INSERT with 500.
NO_NUL = r"^[^\x00]*$"
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_NUL)
]
Category = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=NO_NUL)
]
Description = Annotated[str, Field(max_length=5000, pattern=NO_NUL)]
Price = Annotated[
    int,
    BeforeValidator(_integer_price),
    Field(ge=0, le=MAX_PRICE, strict=True, description="Integer minor units: 1999 is 19.99 USD."),
]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. USD.")]
SkuPath = Annotated[
    str, Path(min_length=1, max_length=64, pattern=SKU_PATTERN, description="Product SKU.")
]


class ProductIn(BaseModel):
    """A product's full details (PUT replaces them all; omitted optional fields reset)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    description: Description = ""
    category: Category
    price: Price
    currency: Currency
    active: StrictBool = True

    def details(self) -> Details:
        return Details(
            name=self.name,
            description=self.description,
            category=self.category,
            price=self.price,
            currency=self.currency,
            active=self.active,
        )


class NewProductIn(ProductIn):
    """A new product: its SKU and full details."""

    sku: Sku


class ProductPatchIn(BaseModel):
    """The fields to change; omitted fields stay as they are."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name | None = None
    description: Description | None = None
    category: Category | None = None
    price: Price | None = None
    currency: Currency | None = None
    active: StrictBool | None = None

    @model_validator(mode="after")
    def no_nulls(self) -> ProductPatchIn:
        nulls = sorted(f for f in self.model_fields_set if getattr(self, f) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null; omit a field to keep it")
        return self

    def patch(self) -> Patch:
        return Patch(
            name=self.name,
            description=self.description,
            category=self.category,
            price=self.price,
            currency=self.currency,
            active=self.active,
        )


class ProductOut(BaseModel):
    sku: str
    name: str
    description: str
    category: str
    price: int = Field(description="Integer minor units of the currency.")
    currency: str
    active: bool
    updated_at: datetime

    @classmethod
    def of(cls, product: Product) -> ProductOut:
        d = product.details
        return cls(
            sku=product.sku,
            name=d.name,
            description=d.description,
            category=d.category,
            price=d.price,
            currency=d.currency,
            active=d.active,
            updated_at=product.updated_at,
        )


class ProductPage(BaseModel):
    items: list[ProductOut]
    total: int = Field(description="How many products match, over all pages.")
    page: int
    page_size: int


def get_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.runtime.pool
    return pool


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No product with this SKU"}}

router = APIRouter(tags=["products"])
admin = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(admin_principal)],
    responses={401: {"description": "No valid token"}, 403: {"description": "Not an admin"}},
)


def _now() -> datetime:
    return datetime.now(UTC)


@router.get("/products", response_model=ProductPage)
async def list_products(
    pool: PoolDep,
    category: Annotated[
        str | None, Query(max_length=100, pattern=NO_NUL, description="Exact category.")
    ] = None,
    search: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=NO_NUL,
            description="Case-insensitive part of the name.",
        ),
    ] = None,
    active: Annotated[bool | None, Query(description="Only active or only inactive.")] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
) -> ProductPage:
    """Products by SKU, filtered by category, name and active flag, one page at a time."""
    where = repository.ProductFilter(category=category, search=search, active=active)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        items = await repository.page(conn, where, page_size, (page - 1) * page_size)
        total = await repository.count(conn, where)
    return ProductPage(
        items=[ProductOut.of(p) for p in items], total=total, page=page, page_size=page_size
    )


@router.get("/products/{sku}", response_model=ProductOut, responses=NOT_FOUND)
async def get_product(sku: SkuPath, pool: PoolDep) -> ProductOut:
    """One product by SKU."""
    async with pool.acquire() as conn:
        product = await repository.get(conn, sku)
    if product is None:
        raise HTTPException(404, str(domain.ProductNotFound(sku)))
    return ProductOut.of(product)


@admin.post(
    "/products",
    status_code=201,
    response_model=ProductOut,
    responses={**UNREADABLE_BODY, 409: {"description": "A product with this SKU exists"}},
)
async def create_product(body: NewProductIn, pool: PoolDep, response: Response) -> ProductOut:
    """Create a product; 409 if its SKU exists."""
    async with pool.acquire() as conn, conn.transaction():
        try:
            product = await handlers.create_product(conn, body.sku, body.details(), _now())
        except domain.ProductExists as exc:
            raise HTTPException(409, str(exc)) from None
    response.headers["Location"] = f"/products/{product.sku}"
    return ProductOut.of(product)


@admin.put(
    "/products/{sku}",
    response_model=ProductOut,
    responses={**UNREADABLE_BODY, 201: {"description": "Created", "model": ProductOut}},
)
async def put_product(
    sku: SkuPath, body: ProductIn, pool: PoolDep, response: Response
) -> ProductOut:
    """Create or replace a product; the same body again changes and publishes nothing."""
    async with pool.acquire() as conn, conn.transaction():
        product, change = await handlers.put_product(conn, sku, body.details(), _now())
    if change is Change.CREATED:
        response.status_code = 201
        response.headers["Location"] = f"/products/{sku}"
    return ProductOut.of(product)


@admin.patch(
    "/products/{sku}", response_model=ProductOut, responses={**NOT_FOUND, **UNREADABLE_BODY}
)
async def patch_product(sku: SkuPath, body: ProductPatchIn, pool: PoolDep) -> ProductOut:
    """Change some fields of a product; a patch that changes nothing publishes nothing."""
    patch = body.patch()
    async with pool.acquire() as conn, conn.transaction():
        try:
            product, _ = await handlers.edit_product(
                conn, sku, lambda d: domain.patched(d, patch), _now()
            )
        except domain.ProductNotFound as exc:
            raise HTTPException(404, str(exc)) from None
    return ProductOut.of(product)


@admin.post("/products/{sku}/deactivate", response_model=ProductOut, responses=NOT_FOUND)
async def deactivate_product(sku: SkuPath, pool: PoolDep) -> ProductOut:
    """Take a product off sale (active=false); it stays in the catalog and can be reactivated."""
    async with pool.acquire() as conn, conn.transaction():
        try:
            product, _ = await handlers.edit_product(conn, sku, domain.deactivated, _now())
        except domain.ProductNotFound as exc:
            raise HTTPException(404, str(exc)) from None
    return ProductOut.of(product)


router.include_router(admin)
