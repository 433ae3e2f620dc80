"""What the admin routes do to products, inside the caller's transaction.

Each change locks its SKU, decides with the domain, stores the product and appends its
ProductUpserted to the outbox, so state and event commit together. Catalog consumes no topics,
so there is no message-type mapping here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from catalog_service import domain, repository
from catalog_service.domain import Change, Details, Product
from events.envelope import wrap
from events.kit import outbox
from events.kit.db import Conn

SERVICE = "catalog"


async def create_product(conn: Conn, sku: str, details: Details, now: datetime) -> Product:
    """Add a product that does not exist yet; raises ProductExists otherwise."""
    await repository.lock_sku(conn, sku)
    if await repository.get(conn, sku) is not None:
        raise domain.ProductExists(sku)
    product, _ = domain.put(None, sku, details, now)
    await _store(conn, product)
    return product


async def put_product(
    conn: Conn, sku: str, details: Details, now: datetime
) -> tuple[Product, Change]:
    """Create or replace a product; the same details again change and publish nothing."""
    await repository.lock_sku(conn, sku)
    current = await repository.get(conn, sku)
    product, change = domain.put(current, sku, details, now)
    if change is not Change.UNCHANGED:
        await _store(conn, product)
    return product, change


async def edit_product(
    conn: Conn, sku: str, edit: Callable[[Details], Details], now: datetime
) -> tuple[Product, Change]:
    """Apply an edit to an existing product; raises ProductNotFound when there is none."""
    await repository.lock_sku(conn, sku)
    current = await repository.get(conn, sku)
    if current is None:
        raise domain.ProductNotFound(sku)
    product, change = domain.put(current, sku, edit(current.details), now)
    if change is not Change.UNCHANGED:
        await _store(conn, product)
    return product, change


async def _store(conn: Conn, product: Product) -> None:
    await repository.save(conn, product)
    event = domain.upserted(product)
    envelope = wrap(event, producer=SERVICE, occurred_at=product.updated_at)
    await outbox.append(conn, [(event, envelope)], channel=outbox.notify_channel(SERVICE))
