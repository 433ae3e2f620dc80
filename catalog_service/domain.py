"""Products as pure decisions: what a change does to a product and which event it publishes.

No I/O. An edit that leaves a product's details as they were is no change at all: nothing is stored
and nothing is published, which is what makes PUT idempotent and re-seeding free.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from events.contracts import ProductUpserted
from events.messages import Money

# Consumers keep a product's newest version by updated_at, so versions must strictly increase
# even when two edits share a clock tick or the clock steps back.
TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class Details:
    """Everything an administrator sets on a product; price in integer minor units."""

    name: str
    category: str
    price: int
    currency: str
    description: str = ""
    active: bool = True


@dataclass(frozen=True)
class Patch:
    """A partial edit: the fields that are not None replace the product's."""

    name: str | None = None
    category: str | None = None
    price: int | None = None
    currency: str | None = None
    description: str | None = None
    active: bool | None = None


@dataclass(frozen=True)
class Product:
    sku: str
    details: Details
    updated_at: datetime


class Change(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


class ProductExists(Exception):
    def __init__(self, sku: str) -> None:
        super().__init__(f"product {sku!r} already exists; PUT /admin/products/{sku} replaces it")
        self.sku = sku


class ProductNotFound(Exception):
    def __init__(self, sku: str) -> None:
        super().__init__(f"no product with SKU {sku!r}")
        self.sku = sku


def next_version_time(current: Product | None, now: datetime) -> datetime:
    if current is None or now > current.updated_at:
        return now
    return current.updated_at + TICK


def put(
    current: Product | None, sku: str, details: Details, now: datetime
) -> tuple[Product, Change]:
    """The product after setting its details, and whether that created, updated or kept it."""
    if current is not None and current.details == details:
        return current, Change.UNCHANGED
    product = Product(sku, details, next_version_time(current, now))
    return product, Change.CREATED if current is None else Change.UPDATED


def patched(details: Details, patch: Patch) -> Details:
    changes = {k: v for k, v in dataclasses.asdict(patch).items() if v is not None}
    return dataclasses.replace(details, **changes)


def deactivated(details: Details) -> Details:
    return dataclasses.replace(details, active=False)


def upserted(product: Product) -> ProductUpserted:
    """The event that carries a product's current version to the compacted catalog topic."""
    d = product.details
    return ProductUpserted(
        sku=product.sku,
        name=d.name,
        description=d.description,
        category=d.category,
        price=Money(amount=d.price, currency=d.currency),
        active=d.active,
        updated_at=product.updated_at,
    )
