"""deploy.seed: the demo catalog and its initial stock are the same on every run."""

from __future__ import annotations

import re

import pytest

from deploy.seed import (
    DEFAULT_PRODUCTS,
    LOW_STOCK,
    SEED_TIME,
    demo_catalog,
    initial_stock,
    restock_command,
)
from events.contracts import REGISTRY, Restock
from events.envelope import decode, encode
from events.topics import INVENTORY_COMMANDS

SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def test_the_demo_catalog_is_the_same_every_time() -> None:
    assert demo_catalog() == demo_catalog()


def test_the_default_demo_catalog_has_at_least_200_products_in_several_categories() -> None:
    catalog = demo_catalog()
    assert len(catalog) == DEFAULT_PRODUCTS >= 200
    categories = {p.category for p in catalog}
    assert len(categories) >= 6
    per_category = [sum(p.category == c for p in catalog) for c in categories]
    assert min(per_category) >= 20


def test_demo_skus_are_unique_and_valid_skus() -> None:
    skus = [p.sku for p in demo_catalog(2000)]
    assert len(set(skus)) == len(skus)
    assert all(SKU.match(s) and len(s) <= 64 for s in skus)


def test_demo_prices_are_positive_integer_minor_units_in_usd() -> None:
    for p in demo_catalog():
        assert type(p.price) is int
        assert p.price > 0
        assert p.currency == "USD"
        assert type(p.put_body()["price"]) is int


def test_a_larger_demo_catalog_extends_a_smaller_one() -> None:
    assert demo_catalog(300)[:DEFAULT_PRODUCTS] == demo_catalog(DEFAULT_PRODUCTS)


def test_demo_names_vary() -> None:
    names = {p.name for p in demo_catalog()}
    assert len(names) > DEFAULT_PRODUCTS * 0.9


def test_a_catalog_larger_than_the_sku_format_allows_is_refused() -> None:
    with pytest.raises(ValueError, match="0 to 9999"):
        demo_catalog(10_000)


def test_every_sku_gets_stock_and_a_handful_start_low() -> None:
    catalog = demo_catalog()
    stock = initial_stock(catalog, 100)
    assert set(stock) == {p.sku for p in catalog}
    low = [sku for sku, units in stock.items() if units == LOW_STOCK]
    assert 3 <= len(low) <= 10
    assert all(units in (100, LOW_STOCK) for units in stock.values())


def test_no_stock_means_no_restock_commands() -> None:
    assert initial_stock(demo_catalog(), 0) == {}


def test_a_restock_envelope_has_the_same_id_and_time_on_every_run() -> None:
    first, again, other = (
        restock_command("SKU-0001", 100),
        restock_command("SKU-0001", 100),
        restock_command("SKU-0002", 100),
    )
    assert first == again
    command, envelope = first
    assert command == Restock(sku="SKU-0001", quantity=100, reason="seed")
    assert command.topic == INVENTORY_COMMANDS
    assert envelope.event_id.version == 5
    assert envelope.event_id != other[1].event_id
    assert envelope.occurred_at == SEED_TIME
    assert envelope.producer == "seed"
    assert encode(envelope) == encode(again[1])
    header, decoded = decode(encode(envelope), REGISTRY)
    assert decoded == command
    assert header.model_dump(exclude={"payload"}) == envelope.model_dump(exclude={"payload"})
