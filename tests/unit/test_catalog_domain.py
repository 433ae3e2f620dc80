"""catalog_service.domain: what a change does to a product and what it publishes, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from catalog_service import domain
from catalog_service.domain import Change, Details, Patch, Product
from events.contracts import ProductUpserted
from events.messages import Money
from events.topics import CATALOG_PRODUCTS

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KETTLE = Details(name="Kettle", category="kitchen", price=2999, currency="USD")


def stored(details: Details = KETTLE, at: datetime = NOW) -> Product:
    return Product("KET-1", details, at)


def test_putting_a_new_product_creates_it_at_the_current_time() -> None:
    product, change = domain.put(None, "KET-1", KETTLE, NOW)
    assert change is Change.CREATED
    assert product == Product("KET-1", KETTLE, NOW)


def test_putting_the_same_details_again_changes_nothing_not_even_the_time() -> None:
    current = stored()
    product, change = domain.put(current, "KET-1", KETTLE, NOW + timedelta(hours=1))
    assert change is Change.UNCHANGED
    assert product is current


def test_putting_a_new_price_updates_the_product_and_its_time() -> None:
    later = NOW + timedelta(seconds=5)
    cheaper = Details(name="Kettle", category="kitchen", price=2499, currency="USD")
    product, change = domain.put(stored(), "KET-1", cheaper, later)
    assert change is Change.UPDATED
    assert product.details.price == 2499
    assert product.updated_at == later


def test_a_new_version_is_later_than_the_last_even_when_the_clock_is_not() -> None:
    current = stored(at=NOW)
    for now in (NOW, NOW - timedelta(minutes=3)):
        product, _ = domain.put(current, "KET-1", domain.deactivated(KETTLE), now)
        assert product.updated_at == NOW + domain.TICK


def test_a_patch_changes_only_the_fields_it_names() -> None:
    described = Details(
        name="Kettle", category="kitchen", price=2999, currency="USD", description="Whistles."
    )
    result = domain.patched(described, Patch(price=3499, active=False))
    assert result == Details(
        name="Kettle",
        category="kitchen",
        price=3499,
        currency="USD",
        description="Whistles.",
        active=False,
    )


def test_an_empty_patch_leaves_the_details_as_they_were() -> None:
    assert domain.patched(KETTLE, Patch()) == KETTLE


def test_a_patch_can_set_a_field_to_a_falsy_value() -> None:
    described = domain.patched(KETTLE, Patch(description="Whistles."))
    cleared = domain.patched(described, Patch(price=0, description="", active=False))
    assert (cleared.price, cleared.description, cleared.active) == (0, "", False)


def test_deactivating_an_inactive_product_is_no_change() -> None:
    current = stored(domain.deactivated(KETTLE))
    _, change = domain.put(current, "KET-1", domain.deactivated(current.details), NOW)
    assert change is Change.UNCHANGED


def test_the_event_carries_the_product_with_its_price_as_money_keyed_by_sku() -> None:
    event = domain.upserted(stored(domain.deactivated(KETTLE)))
    assert event == ProductUpserted(
        sku="KET-1",
        name="Kettle",
        description="",
        category="kitchen",
        price=Money(amount=2999, currency="USD"),
        active=False,
        updated_at=NOW,
    )
    assert event.partition_key() == "KET-1"
    assert event.topic == CATALOG_PRODUCTS
