"""SQL of the catalog: products, one row per SKU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from catalog_service.domain import Details, Product
from events.kit.db import Conn

# Serialises every change of one SKU, creation included (there is no row to lock yet), so its
# outbox rows are written in the order the changes commit.
LOCK_SKU = "SELECT pg_advisory_xact_lock(hashtextextended($1, 7340101))"
SELECT_PRODUCT = """
SELECT sku, name, description, category, price_amount, currency, active, updated_at
FROM products WHERE sku = $1
"""
UPSERT_PRODUCT = """
INSERT INTO products (sku, name, description, category, price_amount, currency, active, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (sku) DO UPDATE SET
    name = EXCLUDED.name, description = EXCLUDED.description, category = EXCLUDED.category,
    price_amount = EXCLUDED.price_amount, currency = EXCLUDED.currency,
    active = EXCLUDED.active, updated_at = EXCLUDED.updated_at
"""
# $1 category, $2 name substring (matched case-insensitively, no wildcards), $3 active; NULL: any.
FILTER = """
FROM products
WHERE ($1::text IS NULL OR category = $1)
  AND ($2::text IS NULL OR strpos(lower(name), lower($2)) > 0)
  AND ($3::boolean IS NULL OR active = $3)
"""
SELECT_PAGE = f"""
SELECT sku, name, description, category, price_amount, currency, active, updated_at
{FILTER}
ORDER BY sku LIMIT $4 OFFSET $5
"""
COUNT_MATCHING = f"SELECT count(*) {FILTER}"


@dataclass(frozen=True)
class ProductFilter:
    category: str | None = None
    search: str | None = None
    active: bool | None = None


def _product(row: Any) -> Product:
    return Product(
        sku=row["sku"],
        details=Details(
            name=row["name"],
            description=row["description"],
            category=row["category"],
            price=row["price_amount"],
            currency=row["currency"],
            active=row["active"],
        ),
        updated_at=row["updated_at"],
    )


async def lock_sku(conn: Conn, sku: str) -> None:
    await conn.execute(LOCK_SKU, sku)


async def get(conn: Conn, sku: str) -> Product | None:
    row = await conn.fetchrow(SELECT_PRODUCT, sku)
    return None if row is None else _product(row)


async def save(conn: Conn, product: Product) -> None:
    d = product.details
    await conn.execute(
        UPSERT_PRODUCT,
        product.sku,
        d.name,
        d.description,
        d.category,
        d.price,
        d.currency,
        d.active,
        product.updated_at,
    )


async def page(conn: Conn, where: ProductFilter, limit: int, offset: int) -> list[Product]:
    rows = await conn.fetch(SELECT_PAGE, where.category, where.search, where.active, limit, offset)
    return [_product(r) for r in rows]


async def count(conn: Conn, where: ProductFilter) -> int:
    n: int = await conn.fetchval(COUNT_MATCHING, where.category, where.search, where.active)
    return n
